package tenancy

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
)

// OperatorHTTP is the operator API: platform operators move tenants between
// the shared database and silos of their own, and follow the moves. Each
// caller presents an operator token (Registry.CreateOperatorToken) as a
// bearer token, whose scopes say what it may do: read to follow moves,
// move to promote, demote, resume and abort them, retire to remove a
// moved tenant's old copy. Every action on a move is recorded with the
// token's name before it is carried out. Moves run in the background of
// the process that serves the API; a move interrupted by its end is
// resumed through the API or the CLI.
type OperatorHTTP struct {
	reg   *Registry
	mover *Mover
	log   *slog.Logger
	// clusters are the silo clusters a promotion may name, by host:port,
	// with their administrator URLs: a token holder must not send a
	// tenant's data to a server of their choosing.
	clusters map[string]string
}

// NewOperatorHTTP returns the operator API over the registry and mover,
// whose background runs carry the moves it starts. clusters are the
// administrator URLs of the silo clusters promotions may name (by
// host:port); with none, silos go to the primary's cluster only.
func NewOperatorHTTP(reg *Registry, mover *Mover, clusters []string, log *slog.Logger) (*OperatorHTTP, error) {
	known := map[string]string{}
	for _, c := range clusters {
		u, err := url.Parse(c)
		if err != nil || u.Host == "" {
			return nil, problem.Errorf(problem.Invalid, "a silo cluster is not a postgres:// URL with a host")
		}
		known[operatorClusterKey(u.Host)] = c
	}
	return &OperatorHTTP{reg: reg, mover: mover, log: log, clusters: known}, nil
}

// Routes registers the operator endpoints.
func (o *OperatorHTTP) Routes(r fiber.Router) {
	g := r.Group("/v1/operator", o.authenticate)
	read, move, retire := need(ScopeRead), need(ScopeMove), need(ScopeRetire)
	g.Post("/tenants/:slug/promote", move, o.handleMove(Promote))
	g.Post("/tenants/:slug/demote", move, o.handleMove(Demote))
	g.Get("/tenants/:slug/moves", read, o.handleListMoves)
	g.Get("/tenants/:slug/moves/:id", read, o.handleGetMove)
	g.Post("/tenants/:slug/moves/:id/resume", move, o.handleResume)
	g.Post("/tenants/:slug/moves/:id/abort", move, o.handleAbort)
	// Forced or not: a forced retirement removes a copy that differed at
	// the flip, which only an operator trusted with retiring may judge.
	g.Post("/tenants/:slug/moves/:id/retire", retire, o.handleRetire)
}

const operatorLocal = "operator"

func (o *OperatorHTTP) authenticate(c *fiber.Ctx) error {
	token, ok := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	var op *Operator
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
func need(s Scope) fiber.Handler {
	return func(c *fiber.Ctx) error {
		if !operatorOf(c).Can(s) {
			// RFC 6750's challenge for a token that is valid but not enough.
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gatehouse-operator", error="insufficient_scope", scope="`+string(s)+`"`)
			return problem.Errorf(problem.Forbidden, "the operator token lacks the %q scope", s)
		}
		return c.Next()
	}
}

// operator is the holder of the request's operator token.
func operatorOf(c *fiber.Ctx) *Operator { return c.Locals(operatorLocal).(*Operator) }

// record records that the request's operator does action to mv. An
// action that cannot be recorded must not be carried out.
func (o *OperatorHTTP) record(c *fiber.Ctx, action string, mv *Move) error {
	return o.reg.RecordOperatorAction(c.UserContext(), operatorOf(c).Name, action, mv)
}

// operatorClusterKey is a cluster's host:port as the operator API matches it: in
// lower case, with Postgres's default port if none is given.
func operatorClusterKey(host string) string {
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

func (o *OperatorHTTP) handleMove(dir Direction) fiber.Handler {
	return func(c *fiber.Ctx) error {
		var req moveRequest
		if len(c.Body()) > 0 {
			if err := httpapi.DecodeJSON(c, &req); err != nil {
				return err
			}
		}
		keepField, keep, other := "keep_shared_for", req.KeepSharedFor, req.KeepSiloFor
		if dir == Demote {
			keepField, keep, other = "keep_silo_for", req.KeepSiloFor, req.KeepSharedFor
			if req.SiloCluster != "" {
				return problem.InvalidField("silo_cluster", "only applies to a promotion")
			}
		}
		if other != "" {
			return problem.InvalidField(map[string]string{"keep_shared_for": "keep_silo_for", "keep_silo_for": "keep_shared_for"}[keepField],
				"does not apply to a "+map[Direction]string{Promote: "promotion", Demote: "demotion"}[dir])
		}
		opts := MoveOptions{By: "operator " + operatorOf(c).Name}
		if req.SiloCluster != "" {
			host := req.SiloCluster
			if u, err := url.Parse(req.SiloCluster); err == nil && u.Host != "" {
				host = u.Host
			}
			cluster, ok := o.clusters[operatorClusterKey(host)]
			if !ok {
				return problem.InvalidField("silo_cluster", "is not one of this server's silo clusters (GATEHOUSE_SILO_CLUSTERS)")
			}
			opts.SiloCluster = cluster
		}
		var err error
		if opts.MaxPause, err = duration("max_pause", req.MaxPause, DefaultMaxPause); err != nil {
			return err
		}
		if opts.KeepOldFor, err = duration(keepField, keep, DefaultKeepOldFor); err != nil {
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
		if err := o.mover.Start(mv.ID); err != nil {
			return err
		}
		return accepted(c, mv)
	}
}

// accepted answers 202 with where to follow the move.
func accepted(c *fiber.Ctx, mv *Move) error {
	c.Location("/v1/operator/tenants/" + c.Params("slug") + "/moves/" + mv.ID.String())
	return c.Status(fiber.StatusAccepted).JSON(mv)
}

// tenantMove returns the move in the path, of the tenant in the path:
// another tenant's move is not found.
func (o *OperatorHTTP) tenantMove(c *fiber.Ctx) (*Move, error) {
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

func (o *OperatorHTTP) handleListMoves(c *fiber.Ctx) error {
	limit, err := httpapi.IntQuery(c, "limit", 20)
	if err != nil {
		return err
	}
	moves, err := o.mover.List(c.UserContext(), c.Params("slug"), min(max(limit, 1), 100))
	if err != nil {
		return err
	}
	return c.JSON(moveList{Moves: moves})
}

// moveList is a tenant's moves, newest first.
type moveList struct {
	Moves []*Move `json:"moves"`
}

// moveView is a move with what operators did to it through the API.
type moveView struct {
	*Move
	Actions []OperatorAction `json:"operator_actions"`
}

func (o *OperatorHTTP) handleGetMove(c *fiber.Ctx) error {
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

func (o *OperatorHTTP) handleResume(c *fiber.Ctx) error {
	mv, err := o.tenantMove(c)
	if err != nil {
		return err
	}
	switch mv.State {
	case MoveRunning, MoveFailed, MoveRetiring:
	default:
		return problem.Errorf(problem.Conflict, "move %s is %s", mv.ID, mv.State)
	}
	if err := o.record(c, "resume", mv); err != nil {
		return err
	}
	if err := o.mover.Start(mv.ID); err != nil {
		return err
	}
	return accepted(c, mv)
}

func (o *OperatorHTTP) handleAbort(c *fiber.Ctx) error {
	mv, err := o.tenantMove(c)
	if err != nil {
		return err
	}
	if err := o.record(c, "abort", mv); err != nil {
		return err
	}
	o.mover.Stop(c.UserContext(), mv.ID)
	if mv, err = o.mover.Abort(c.UserContext(), mv.ID); err != nil {
		return err
	}
	return c.JSON(mv)
}

func (o *OperatorHTTP) handleRetire(c *fiber.Ctx) error {
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
