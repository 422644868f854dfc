package server

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Operator is the operator API: platform operators move tenants between
// the shared database and silos of their own, and follow the moves. Each
// caller presents an operator token (Registry.CreateOperatorToken) as a
// bearer token, whose scopes say what it may do: read to follow moves,
// move to promote, demote, resume and abort them, retire to remove a
// moved tenant's old copy. Every action on a move is recorded with the
// token's name before it is carried out. Moves run in the background of
// the process that serves the API; a move interrupted by its end is
// resumed through the API or the CLI.
type Operator struct {
	reg   *tenancy.Registry
	mover *tenancy.Mover
	log   *slog.Logger
	// clusters are the silo clusters a promotion may name, by host:port,
	// with their administrator URLs: a token holder must not send a
	// tenant's data to a server of their choosing.
	clusters map[string]string

	ctx    context.Context // the runs'; cancelled by Close
	cancel context.CancelFunc
	mu     sync.Mutex
	runs   map[uuid.UUID]context.CancelFunc
	wg     sync.WaitGroup
}

// NewOperator returns the operator API over the registry and mover.
// clusters are the administrator URLs of the silo clusters promotions may
// name (by host:port); with none, silos go to the primary's cluster only.
func NewOperator(reg *tenancy.Registry, mover *tenancy.Mover, clusters []string, log *slog.Logger) (*Operator, error) {
	known := map[string]string{}
	for _, c := range clusters {
		u, err := url.Parse(c)
		if err != nil || u.Host == "" {
			return nil, problem.Errorf(problem.Invalid, "a silo cluster is not a postgres:// URL with a host")
		}
		known[clusterKey(u.Host)] = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Operator{reg: reg, mover: mover, log: log, clusters: known, ctx: ctx, cancel: cancel, runs: map[uuid.UUID]context.CancelFunc{}}, nil
}

// Close stops the moves this process runs (they stay resumable) and waits
// for them to let go.
func (o *Operator) Close() {
	o.cancel()
	o.wg.Wait()
}

// RetireDue removes, every interval until ctx ends, the old copies of
// moved tenants whose grace period is over.
func (o *Operator) RetireDue(ctx context.Context, interval time.Duration) {
	for {
		done, err := o.mover.RetireDue(ctx)
		for _, mv := range done {
			o.log.Info("retired a moved tenant's old copy", "move", mv.ID, "tenant_id", mv.Tenant.String())
		}
		if err != nil && ctx.Err() == nil {
			o.log.Warn("retiring moved tenants' old copies", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Routes registers the operator endpoints.
func (o *Operator) Routes(r fiber.Router) {
	g := r.Group("/v1/operator", o.authenticate)
	read, move, retire := need(tenancy.ScopeRead), need(tenancy.ScopeMove), need(tenancy.ScopeRetire)
	g.Post("/tenants/:slug/promote", move, o.handleMove(tenancy.Promote))
	g.Post("/tenants/:slug/demote", move, o.handleMove(tenancy.Demote))
	g.Get("/tenants/:slug/moves", read, o.handleListMoves)
	g.Get("/tenants/:slug/moves/:id", read, o.handleGetMove)
	g.Post("/tenants/:slug/moves/:id/resume", move, o.handleResume)
	g.Post("/tenants/:slug/moves/:id/abort", move, o.handleAbort)
	// Forced or not: a forced retirement removes a copy that differed at
	// the flip, which only an operator trusted with retiring may judge.
	g.Post("/tenants/:slug/moves/:id/retire", retire, o.handleRetire)
}

const operatorLocal = "operator"

func (o *Operator) authenticate(c *fiber.Ctx) error {
	token, ok := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	var op *tenancy.Operator
	var err error = problem.Errorf(problem.Unauthorized, "an operator token is required")
	if ok {
		op, err = o.reg.Operator(c.UserContext(), strings.TrimSpace(token))
	}
	if err != nil {
		if problem.CodeOf(err) == problem.Unauthorized {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gatehouse-operator"`)
		}
		return err
	}
	c.Locals(operatorLocal, op)
	return c.Next()
}

// need admits requests whose operator token has scope s, and answers
// others 403 naming the scope that is missing.
func need(s tenancy.Scope) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !operator(c).Can(s) {
			// RFC 6750's challenge for a token that is valid but not enough.
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gatehouse-operator", error="insufficient_scope", scope="`+string(s)+`"`)
			return problem.Errorf(problem.Forbidden, "the operator token lacks the %q scope", s)
		}
		return c.Next()
	}
}

// operator is the holder of the request's operator token.
func operator(c *fiber.Ctx) *tenancy.Operator { return c.Locals(operatorLocal).(*tenancy.Operator) }

// record records that the request's operator does action to mv. An
// action that cannot be recorded must not be carried out.
func (o *Operator) record(c *fiber.Ctx, action string, mv *tenancy.Move) error {
	return o.reg.RecordOperatorAction(c.UserContext(), operator(c).Name, action, mv)
}

// clusterKey is a cluster's host:port as the operator API matches it: in
// lower case, with Postgres's default port if none is given.
func clusterKey(host string) string {
	host = strings.ToLower(host)
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(strings.Trim(host, "[]"), "5432")
	}
	return host
}

// moveRequest is the body of a promotion or demotion. Durations are Go
// durations ("2s", "24h"); silo_cluster is the host:port of one of the
// server's silo clusters.
type moveRequest struct {
	SiloCluster   string `json:"silo_cluster"`
	MaxPause      string `json:"max_pause"`
	KeepSharedFor string `json:"keep_shared_for"`
	KeepSiloFor   string `json:"keep_silo_for"`
	Purge         bool   `json:"purge"`
}

func duration(field, v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, problem.InvalidField(field, "must be a duration such as 2s or 24h")
	}
	return d, nil
}

func (o *Operator) handleMove(dir tenancy.Direction) fiber.Handler {
	return func(c *fiber.Ctx) error {
		var req moveRequest
		if len(c.Body()) > 0 {
			if err := httpapi.DecodeJSON(c, &req); err != nil {
				return err
			}
		}
		keepField, keep, other := "keep_shared_for", req.KeepSharedFor, req.KeepSiloFor
		if dir == tenancy.Demote {
			keepField, keep, other = "keep_silo_for", req.KeepSiloFor, req.KeepSharedFor
			if req.SiloCluster != "" {
				return problem.InvalidField("silo_cluster", "only applies to a promotion")
			}
		}
		if other != "" {
			return problem.InvalidField(map[string]string{"keep_shared_for": "keep_silo_for", "keep_silo_for": "keep_shared_for"}[keepField],
				"does not apply to a "+map[tenancy.Direction]string{tenancy.Promote: "promotion", tenancy.Demote: "demotion"}[dir])
		}
		opts := tenancy.MoveOptions{By: "operator " + operator(c).Name}
		if req.SiloCluster != "" {
			host := req.SiloCluster
			if u, err := url.Parse(req.SiloCluster); err == nil && u.Host != "" {
				host = u.Host
			}
			cluster, ok := o.clusters[clusterKey(host)]
			if !ok {
				return problem.InvalidField("silo_cluster", "is not one of this server's silo clusters (GATEHOUSE_SILO_CLUSTERS)")
			}
			opts.SiloCluster = cluster
		}
		var err error
		if opts.MaxPause, err = duration("max_pause", req.MaxPause, tenancy.DefaultMaxPause); err != nil {
			return err
		}
		if opts.KeepOldFor, err = duration(keepField, keep, tenancy.DefaultKeepOldFor); err != nil {
			return err
		}
		if opts.KeepOldFor < 0 {
			return problem.InvalidField(keepField, "must not be negative")
		}
		// Begin checks the options, purge against keep among them, as it
		// does for the command line.
		opts.Purge, opts.KeepOldForSet = req.Purge, keep != ""
		mv, err := o.mover.Begin(c.UserContext(), c.Params("slug"), dir, opts)
		if err != nil {
			return err
		}
		// The move is recorded but nothing has run: unrecorded, it is
		// rolled back rather than run.
		if err := o.record(c, string(dir), mv); err != nil {
			if _, abortErr := o.mover.Abort(context.WithoutCancel(c.UserContext()), mv.ID); abortErr != nil {
				o.log.Error("aborting an unrecorded move", "move", mv.ID, "err", abortErr)
			}
			return err
		}
		if err := o.start(mv.ID); err != nil {
			return err
		}
		return accepted(c, mv)
	}
}

// accepted answers 202 with where to follow the move.
func accepted(c *fiber.Ctx, mv *tenancy.Move) error {
	c.Location("/v1/operator/tenants/" + c.Params("slug") + "/moves/" + mv.ID.String())
	return c.Status(fiber.StatusAccepted).JSON(mv)
}

// start runs move id in the background. Returns Conflict if this process
// runs it already.
func (o *Operator) start(id uuid.UUID) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.runs[id]; ok {
		return problem.Errorf(problem.Conflict, "move %s is running", id)
	}
	ctx, cancel := context.WithCancel(o.ctx)
	o.runs[id] = cancel
	o.wg.Go(func() {
		defer func() {
			o.mu.Lock()
			delete(o.runs, id)
			o.mu.Unlock()
			cancel()
		}()
		mv, err := o.mover.Run(ctx, id, nil)
		switch {
		case err != nil && ctx.Err() == nil:
			o.log.Error("move stopped", "move", id, "err", err)
		case mv != nil:
			o.log.Info("move ran", "move", id, "state", mv.State, "phase", mv.Phase, "pause_ms", mv.Pause.Seconds()*1000)
		}
	})
	return nil
}

// stop cancels this process's run of move id, if any, and waits until it
// has let go of the move.
func (o *Operator) stop(ctx context.Context, id uuid.UUID) {
	o.mu.Lock()
	cancel, ok := o.runs[id]
	o.mu.Unlock()
	if !ok {
		return
	}
	cancel()
	for ctx.Err() == nil {
		o.mu.Lock()
		_, ok = o.runs[id]
		o.mu.Unlock()
		if !ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tenantMove returns the move in the path, of the tenant in the path:
// another tenant's move is not found.
func (o *Operator) tenantMove(c *fiber.Ctx) (*tenancy.Move, error) {
	id, err := httpapi.PathID(c, "id", "no such move")
	if err != nil {
		return nil, err
	}
	t, err := o.reg.Get(c.UserContext(), c.Params("slug"))
	if err != nil {
		return nil, err
	}
	mv, err := o.mover.Get(c.UserContext(), id)
	if err != nil {
		return nil, err
	}
	if mv.Tenant != t.ID {
		return nil, problem.Errorf(problem.NotFound, "no such move")
	}
	return mv, nil
}

func (o *Operator) handleListMoves(c *fiber.Ctx) error {
	limit, err := httpapi.IntQuery(c, "limit", 20)
	if err != nil {
		return err
	}
	moves, err := o.mover.List(c.UserContext(), c.Params("slug"), min(max(limit, 1), 100))
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"moves": moves})
}

// moveView is a move with what operators did to it through the API.
type moveView struct {
	*tenancy.Move
	Actions []tenancy.OperatorAction `json:"operator_actions"`
}

func (o *Operator) handleGetMove(c *fiber.Ctx) error {
	mv, err := o.tenantMove(c)
	if err != nil {
		return err
	}
	actions, err := o.reg.OperatorActions(c.UserContext(), mv.ID)
	if err != nil {
		return err
	}
	return c.JSON(moveView{Move: mv, Actions: actions})
}

func (o *Operator) handleResume(c *fiber.Ctx) error {
	mv, err := o.tenantMove(c)
	if err != nil {
		return err
	}
	switch mv.State {
	case tenancy.MoveRunning, tenancy.MoveFailed, tenancy.MoveRetiring:
	default:
		return problem.Errorf(problem.Conflict, "move %s is %s", mv.ID, mv.State)
	}
	if err := o.record(c, "resume", mv); err != nil {
		return err
	}
	if err := o.start(mv.ID); err != nil {
		return err
	}
	return accepted(c, mv)
}

func (o *Operator) handleAbort(c *fiber.Ctx) error {
	mv, err := o.tenantMove(c)
	if err != nil {
		return err
	}
	if err := o.record(c, "abort", mv); err != nil {
		return err
	}
	o.stop(c.UserContext(), mv.ID)
	if mv, err = o.mover.Abort(c.UserContext(), mv.ID); err != nil {
		return err
	}
	return c.JSON(mv)
}

func (o *Operator) handleRetire(c *fiber.Ctx) error {
	mv, err := o.tenantMove(c)
	if err != nil {
		return err
	}
	force := false
	if v := c.Query("force"); v != "" {
		if force, err = strconv.ParseBool(v); err != nil {
			return problem.InvalidField("force", "must be true or false")
		}
	}
	action := "retire"
	if force {
		action = "force_retire"
	}
	if err := o.record(c, action, mv); err != nil {
		return err
	}
	if mv, err = o.mover.Retire(c.UserContext(), mv.ID, force); err != nil {
		return err
	}
	return c.JSON(mv)
}
