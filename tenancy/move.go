package tenancy

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// Direction says which way a placement move goes.
type Direction string

// Directions.
const (
	Promote Direction = "promote" // from the shared database to a silo of its own
	Demote  Direction = "demote"  // from its silo back to the shared database
)

// Phase is how far a move has come. A move works through the phases in
// this order; the one it records is the one it is working on, and every
// phase may be run again from its start (Mover.Run resumes there).
type Phase string

// Phases.
const (
	PhaseStart   Phase = "start"    // recorded, nothing made yet
	PhaseTarget  Phase = "target"   // making the target ready: a new silo, or the shared database cleared of stale rows
	PhaseCopy    Phase = "copy"     // the target copies the tenant's rows while traffic goes on
	PhaseCatchUp Phase = "catch_up" // the target applies the changes made meanwhile
	PhaseVerify  Phase = "verify"   // both sides compared table by table at one moment
	PhaseSwitch  Phase = "switch"   // fenced, last changes applied, counted, flipped
	PhaseCleanup Phase = "cleanup"  // flipped: the replication is removed
	PhaseRetire  Phase = "retire"   // the old copy is kept until the grace period ends
	PhaseDone    Phase = "done"
)

var phaseOrder = []Phase{PhaseStart, PhaseTarget, PhaseCopy, PhaseCatchUp, PhaseVerify, PhaseSwitch, PhaseCleanup, PhaseRetire, PhaseDone}

// Flipped reports whether a move in phase p has flipped the tenant's
// placement: from then on it cannot be aborted, only undone by a move the
// other way.
func (p Phase) Flipped() bool { return p == PhaseCleanup || p == PhaseRetire || p == PhaseDone }

// MoveState is where a move stands.
type MoveState string

// Move states.
const (
	MoveRunning  MoveState = "running"  // being driven, or interrupted: resume or abort it
	MoveFailed   MoveState = "failed"   // stopped on an error: resume or abort it
	MoveAborting MoveState = "aborting" // being rolled back: only abort may go on
	MoveRetiring MoveState = "retiring" // flipped; the old copy is kept until RetireAfter
	MoveDone     MoveState = "done"
	MoveAborted  MoveState = "aborted" // rolled back; the tenant is where it was
)

// TableProgress is one table of a moving tenant.
type TableProgress struct {
	// Rows is the tenant's row count on the source when the copy began,
	// and after verification the count both sides agreed on.
	Rows int64 `json:"rows"`
	// Copied is how many rows the target has copied so far.
	Copied int64 `json:"copied"`
	// State is waiting, copying, copied or verified.
	State string `json:"state"`
}

// Move is one placement move as the control plane records it.
type Move struct {
	ID     uuid.UUID `json:"id"`
	Tenant ID        `json:"tenant_id"`
	// Slug is the tenant's slug.
	Slug      string    `json:"tenant"`
	Direction Direction `json:"direction"`
	StartedBy string    `json:"started_by"`
	State     MoveState `json:"state"`
	Phase     Phase     `json:"phase"`
	// Tables are the tenant's tables with their copy progress.
	Tables map[string]TableProgress `json:"tables"`
	// LagBytes is how much of the source's WAL the target had yet to
	// confirm when last measured; -1 when unknown.
	LagBytes int64 `json:"lag_bytes"`
	// Pause is the longest any write of the tenant waited at the fence (or
	// was refused past MaxPause), as far as the move has come.
	Pause         time.Duration `json:"pause_ns"`
	FenceAttempts int           `json:"fence_attempts"`
	// Marks counts the marks the move wrote into the tenant's data.
	Marks       int           `json:"marks"`
	MaxPause    time.Duration `json:"max_pause_ns"`
	KeepOldFor  time.Duration `json:"keep_old_for_ns"`
	Error       string        `json:"error,omitempty"`
	StartedAt   time.Time     `json:"started_at"`
	CopiedAt    *time.Time    `json:"copied_at,omitempty"`
	VerifiedAt  *time.Time    `json:"verified_at,omitempty"`
	FlippedAt   *time.Time    `json:"flipped_at,omitempty"`
	RetireAfter *time.Time    `json:"retire_after,omitempty"`
	FinishedAt  *time.Time    `json:"finished_at,omitempty"`
	UpdatedAt   time.Time     `json:"updated_at"`

	sourceRef, targetRef string
	subscription         uint32
}

func moveFromRow(r queries.ControlPlacementMove) (*Move, error) {
	m := &Move{
		ID: r.ID, Tenant: ID(r.TenantID), Direction: Direction(r.Direction), StartedBy: r.StartedBy, State: MoveState(r.State), Phase: Phase(r.Phase),
		LagBytes: -1, FenceAttempts: int(r.FenceAttempts), Marks: int(r.Marks), MaxPause: time.Duration(r.MaxPauseMs) * time.Millisecond,
		KeepOldFor: time.Duration(r.KeepOldFor.Microseconds)*time.Microsecond + time.Duration(r.KeepOldFor.Days)*24*time.Hour,
		StartedAt:  r.StartedAt, CopiedAt: r.CopiedAt, VerifiedAt: r.VerifiedAt, FlippedAt: r.FlippedAt,
		RetireAfter: r.RetireAfter, FinishedAt: r.FinishedAt, UpdatedAt: r.UpdatedAt,
	}
	if err := json.Unmarshal(r.Tables, &m.Tables); err != nil {
		return nil, fmt.Errorf("move %s: tables: %w", r.ID, err)
	}
	if r.LagBytes != nil {
		m.LagBytes = *r.LagBytes
	}
	if r.PauseMs != nil {
		m.Pause = time.Duration(*r.PauseMs * float64(time.Millisecond))
	}
	if r.Error != nil {
		m.Error = *r.Error
	}
	if r.SourceRef != nil {
		m.sourceRef = *r.SourceRef
	}
	if r.TargetRef != nil {
		m.targetRef = *r.TargetRef
	}
	if r.SubscriptionOid != nil {
		m.subscription = uint32(*r.SubscriptionOid)
	}
	return m, nil
}

// Running reports whether the move is unfinished and not yet flipped: the
// tenant is moving.
func (m *Move) Running() bool {
	return m.State == MoveRunning || m.State == MoveFailed || m.State == MoveAborting
}

// MoveOptions are an operator's choices for a move.
type MoveOptions struct {
	// SiloCluster is the administrator URL of the cluster a promoted
	// tenant's silo is made on; empty means the primary's.
	SiloCluster string
	// MaxPause bounds the write pause: the tenant's writes wait at most
	// this long at the fence, then get 503 with Retry-After; a fence that
	// would stand longer is lifted and raised again later. Default 2s.
	MaxPause time.Duration
	// KeepOldFor is how long the tenant's old copy (its rows in the shared
	// database, or its old silo) is kept after the flip; 0 deletes it at
	// once. Operators' commands default to DefaultKeepOldFor.
	KeepOldFor time.Duration
	// By names who starts the move (an operator, a system user), for the
	// record.
	By string
}

// Move defaults and limits.
const (
	DefaultMaxPause   = 2 * time.Second
	DefaultKeepOldFor = 24 * time.Hour
	// fenceTries is how often a move raises its fence before it gives up
	// (each try that would outlast MaxPause is lifted and tried again).
	fenceTries = 10
	pollEvery  = 200 * time.Millisecond
)

// Mover promotes tenants to silos and demotes them back, online: see
// DESIGN.md, "Promotion to a silo and back". It works as an administrator
// on the primary database and the silo clusters, as the Registry does.
type Mover struct {
	reg *Registry
	// Interrupt, if set, is called at every phase a run enters and at the
	// points inside the switch where a crash matters most ("switch:fenced",
	// "switch:moved-away", "switch:flipped"). An error stops the run there as if its process
	// had died: nothing more is recorded and its connections are closed.
	// For tests, and for operators who want to step through a move.
	Interrupt func(at string) error
}

// NewMover returns a Mover over the registry's databases and secrets.
func NewMover(reg *Registry) *Mover { return &Mover{reg: reg} }

// Begin records a new move of tenant slug, after checking it can be made:
// the tenant is active and placed where the direction starts, the source
// writes logical WAL, the roles may replicate, the target cluster is
// reachable and has room. A flipped move of the tenant still keeping its
// old copy has that copy removed first. Run drives the move.
//
// Returns NotFound for an unknown slug, Invalid for bad options, Conflict
// if the tenant is moving, suspended or already placed there, or a
// precondition fails, Unavailable if a database or the secret store cannot
// be reached.
func (m *Mover) Begin(ctx context.Context, slug string, dir Direction, o MoveOptions) (*Move, error) {
	if o.MaxPause == 0 {
		o.MaxPause = DefaultMaxPause
	}
	if o.MaxPause < 10*time.Millisecond || o.MaxPause > time.Minute {
		return nil, problem.InvalidField("max_pause", "must be from 10ms to 1m")
	}
	if o.KeepOldFor < 0 {
		return nil, problem.InvalidField("keep_old_for", "must not be negative")
	}
	if o.By == "" {
		o.By = "gatehouse"
	}
	if len(o.By) > 100 {
		return nil, problem.InvalidField("by", "must be at most 100 characters")
	}
	if dir != Promote && dir != Demote {
		return nil, problem.InvalidField("direction", "must be promote or demote")
	}
	if o.SiloCluster != "" && dir != Promote {
		return nil, problem.InvalidField("silo_cluster", "only applies to a promotion")
	}
	t, err := m.reg.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	switch {
	case t.Status == Moving:
		return nil, problem.Errorf(problem.Conflict, "tenant %q is already moving", slug)
	case t.Status != Active:
		return nil, problem.Errorf(problem.Conflict, "tenant %q is %s; resume it before moving it", slug, t.Status)
	case dir == Promote && t.Placement == Silo:
		return nil, problem.Errorf(problem.Conflict, "tenant %q already has a silo of its own", slug)
	case dir == Demote && t.Placement == Shared:
		return nil, problem.Errorf(problem.Conflict, "tenant %q is already in the shared database", slug)
	}
	// The previous move's old copy goes first: its rows would clash with
	// the copy coming back, and its secrets share the silo's paths.
	if err := m.retireTenant(ctx, t.ID, false); err != nil {
		return nil, err
	}

	id := uuid.New()
	var sourceRef, targetRef *string
	var cluster string
	if dir == Promote {
		if cluster, err = m.clusterURL(o.SiloCluster); err != nil {
			return nil, err
		}
	} else {
		sourceRef = &t.SiloRef
	}
	s, err := m.open(ctx, t.ID, dir, deref(sourceRef), "", cluster)
	if err != nil {
		return nil, err
	}
	err = s.rep.Check(ctx)
	s.close()
	if err != nil {
		return nil, err
	}
	if dir == Promote {
		// The silo's connection strings are in the secret store before
		// the silo is made, so that a resumed move finds it.
		dsns, err := siloDSNs(cluster, siloMoveDatabaseName(t.ID, id), m.reg.migrator.AppPassword)
		if err != nil {
			return nil, err
		}
		ref, err := m.reg.secrets.StoreSilo(ctx, t.ID, dsns)
		if err != nil {
			return nil, err
		}
		targetRef = &ref
	}

	var row queries.ControlPlacementMove
	err = pgx.BeginFunc(ctx, m.reg.admin, func(tx pgx.Tx) error {
		q := queries.New(tx)
		if _, err := q.SetTenantStatus(ctx, queries.SetTenantStatusParams{ID: t.ID.UUID(), Status: string(Moving), FromStatuses: []string{string(Active)}}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return problem.Errorf(problem.Conflict, "tenant %q is no longer active", slug)
			}
			return err
		}
		row, err = q.CreateMove(ctx, queries.CreateMoveParams{
			ID: id, TenantID: t.ID.UUID(), Direction: string(dir), StartedBy: o.By, SourceRef: sourceRef,
			MaxPauseMs: int32(o.MaxPause / time.Millisecond), KeepOldFor: pgtype.Interval{Microseconds: o.KeepOldFor.Microseconds(), Valid: true},
		})
		if isUniqueViolation(err) {
			return problem.Errorf(problem.Conflict, "tenant %q is already moving", slug)
		}
		if err != nil {
			return err
		}
		if targetRef != nil {
			row, err = q.SaveMove(ctx, saveParams(row, func(p *queries.SaveMoveParams) { p.TargetRef = targetRef }))
		}
		return err
	})
	if err != nil {
		if targetRef != nil {
			_ = m.reg.secrets.ForgetSilo(context.WithoutCancel(ctx), t.ID, *targetRef)
		}
		if problem.CodeOf(err) != problem.Internal {
			return nil, err
		}
		return nil, fmt.Errorf("begin move of %s: %w", slug, err)
	}
	mv, err := moveFromRow(row)
	if err != nil {
		return nil, err
	}
	mv.Slug = t.Slug
	return mv, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// clusterURL checks a silo cluster's administrator URL; empty means the
// primary's cluster.
func (m *Mover) clusterURL(cluster string) (string, error) {
	if cluster == "" {
		cluster = m.reg.primaryDSN
	}
	u, err := url.Parse(cluster)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		return "", problem.InvalidField("silo_cluster", "must be a postgres:// URL with a host")
	}
	if _, err := pgconn.ParseConfig(cluster); err != nil {
		// The parse error would quote the URL, password and all.
		return "", problem.InvalidField("silo_cluster", "is not a valid connection URL (host, port and parameters)")
	}
	return cluster, nil
}

// siloMoveDatabaseName names the silo a move makes: the tenant's and the
// move's, so that a tenant promoted again never meets an old silo of its
// own that is still waiting to be dropped.
func siloMoveDatabaseName(t ID, move uuid.UUID) string {
	return siloDatabaseName(t) + "_" + hex.EncodeToString(move[:4])
}

// Get returns move id. Returns NotFound if there is none.
func (m *Mover) Get(ctx context.Context, id uuid.UUID) (*Move, error) {
	row, err := queries.New(m.reg.admin).GetMove(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, problem.Errorf(problem.NotFound, "no move %s", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get move %s: %w", id, err)
	}
	mv, err := moveFromRow(row)
	if err != nil {
		return nil, err
	}
	return mv, m.named(ctx, mv)
}

// named fills in the slug of the move's tenant.
func (m *Mover) named(ctx context.Context, mv *Move) error {
	t, err := queries.New(m.reg.admin).GetTenantByID(ctx, mv.Tenant.UUID())
	if err != nil {
		return fmt.Errorf("move %s: tenant: %w", mv.ID, err)
	}
	mv.Slug = t.Slug
	return nil
}

// List returns the latest moves (at most limit), of tenant slug or, for
// "", of every tenant. Returns NotFound for an unknown slug.
func (m *Mover) List(ctx context.Context, slug string, limit int) ([]*Move, error) {
	var tenant *uuid.UUID
	if slug != "" {
		t, err := m.reg.Get(ctx, slug)
		if err != nil {
			return nil, err
		}
		u := t.ID.UUID()
		tenant = &u
	}
	rows, err := queries.New(m.reg.admin).ListMoves(ctx, queries.ListMovesParams{TenantID: tenant, MaxRows: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list moves: %w", err)
	}
	moves := make([]*Move, 0, len(rows))
	for _, r := range rows {
		mv, err := moveFromRow(r)
		if err == nil {
			err = m.named(ctx, mv)
		}
		if err != nil {
			return nil, err
		}
		moves = append(moves, mv)
	}
	return moves, nil
}

// run is one process's hold on a move: the move's lock, on a connection
// of its own, held until the run ends or the process dies.
type run struct {
	m        *Mover
	mv       *Move
	lock     *pgx.Conn // a session of its own, not a pooled one
	progress func(*Move)
	s        *sides
	errBase  *int64 // the target's replication errors when this run first looked
}

// errBusy says another process holds a move.
func errBusy(id uuid.UUID) error {
	return problem.Errorf(problem.Conflict, "move %s is being run by another process", id)
}

// moveLockKey is the advisory lock of move id, in the primary database.
func moveLockKey(id uuid.UUID) string { return "gatehouse.move." + id.String() }

// claim takes move id for this process. Returns NotFound, or Conflict if
// another process runs it.
func (m *Mover) claim(ctx context.Context, id uuid.UUID, progress func(*Move)) (*run, error) {
	mv, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, m.reg.primaryDSN)
	if err != nil {
		return nil, unavailable(err)
	}
	// A process that just died may hold the lock a moment longer, until
	// its server notices: wait that long, no longer.
	var ok bool
	for try := 0; !ok; try++ {
		if err := conn.QueryRow(ctx, "select pg_try_advisory_lock(hashtextextended($1, 0))", moveLockKey(id)).Scan(&ok); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("claim move %s: %w", id, err)
		}
		if !ok && try == 20 {
			conn.Close(context.WithoutCancel(ctx))
			return nil, errBusy(id)
		}
		if !ok {
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				conn.Close(context.WithoutCancel(ctx))
				return nil, err
			}
		}
	}
	// Read again under the lock: the last holder may have moved it on.
	if mv, err = m.Get(ctx, id); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	if progress == nil {
		progress = func(*Move) {}
	}
	return &run{m: m, mv: mv, lock: conn, progress: progress}, nil
}

// release lets the move go by closing the lock's session, as a process
// that dies does.
func (r *run) release() {
	if r.s != nil {
		r.s.close()
	}
	r.lock.Close(context.Background())
}

// errInterrupted wraps what Interrupt returned.
type errInterrupted struct{ err error }

func (e errInterrupted) Error() string { return e.err.Error() }
func (e errInterrupted) Unwrap() error { return e.err }

func (r *run) interrupt(at string) error {
	if r.m.Interrupt == nil {
		return nil
	}
	if err := r.m.Interrupt(at); err != nil {
		return errInterrupted{err}
	}
	return nil
}

// save records the move as it now stands.
func (r *run) save(ctx context.Context, change func(p *queries.SaveMoveParams)) error {
	row, err := queries.New(r.m.reg.admin).SaveMove(ctx, saveParams(r.mv.row(), change))
	if err != nil {
		return fmt.Errorf("record move %s: %w", r.mv.ID, err)
	}
	mv, err := moveFromRow(row)
	if err != nil {
		return err
	}
	mv.Slug = r.mv.Slug
	r.mv = mv
	r.progress(mv)
	return nil
}

// row is the move as its table row, for saveParams.
func (m *Move) row() queries.ControlPlacementMove {
	tables, _ := json.Marshal(m.Tables)
	r := queries.ControlPlacementMove{
		ID: m.ID, State: string(m.State), Phase: string(m.Phase), Tables: tables,
		FenceAttempts: int32(m.FenceAttempts), Marks: int32(m.Marks), CopiedAt: m.CopiedAt, VerifiedAt: m.VerifiedAt, FlippedAt: m.FlippedAt,
		RetireAfter: m.RetireAfter, FinishedAt: m.FinishedAt,
	}
	if m.targetRef != "" {
		r.TargetRef = &m.targetRef
	}
	if m.subscription != 0 {
		oid := int64(m.subscription)
		r.SubscriptionOid = &oid
	}
	if m.LagBytes >= 0 {
		r.LagBytes = &m.LagBytes
	}
	if m.Pause > 0 {
		ms := float64(m.Pause) / float64(time.Millisecond)
		r.PauseMs = &ms
	}
	if m.Error != "" {
		r.Error = &m.Error
	}
	return r
}

// saveParams are row's mutable columns, changed by change.
func saveParams(r queries.ControlPlacementMove, change func(p *queries.SaveMoveParams)) queries.SaveMoveParams {
	p := queries.SaveMoveParams{
		ID: r.ID, State: r.State, Phase: r.Phase, TargetRef: r.TargetRef, SubscriptionOid: r.SubscriptionOid,
		Tables: r.Tables, LagBytes: r.LagBytes, PauseMs: r.PauseMs, FenceAttempts: r.FenceAttempts, Marks: r.Marks, Error: r.Error,
		CopiedAt: r.CopiedAt, VerifiedAt: r.VerifiedAt, FlippedAt: r.FlippedAt, RetireAfter: r.RetireAfter, FinishedAt: r.FinishedAt,
	}
	if change != nil {
		change(&p)
	}
	if p.Tables == nil {
		p.Tables = []byte("{}")
	}
	return p
}

func tablesJSON(t map[string]TableProgress) []byte {
	b, _ := json.Marshal(t)
	return b
}

func ptr[T any](v T) *T { return &v }

// Run drives move id from wherever it stands to its end: the flip, the
// removal of the replication, and, once KeepOldFor has passed, of the old
// copy (if it has not passed yet, Run returns with the move retiring; see
// Retire). Resuming an interrupted or failed move is running it again.
// progress, if set, is called each time the move changes.
//
// Returns NotFound for an unknown move, Conflict if another process runs
// it or it is finished, or the error that stopped it, which is recorded.
func (m *Mover) Run(ctx context.Context, id uuid.UUID, progress func(*Move)) (*Move, error) {
	r, err := m.claim(ctx, id, progress)
	if err != nil {
		return nil, err
	}
	err = r.drive(ctx)
	var died errInterrupted
	if errors.As(err, &died) {
		r.release()
		return r.mv, err
	}
	if err != nil && ctx.Err() == nil && (r.mv.State == MoveRunning || r.mv.State == MoveFailed) {
		msg := problem.MessageOf(err)
		if problem.CodeOf(err) == problem.Internal {
			msg = err.Error()
		}
		if len(msg) > 2000 {
			msg = msg[:2000]
		}
		// Recorded with a context of its own: the run's may be the one
		// that failed.
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = r.save(saveCtx, func(p *queries.SaveMoveParams) { p.State = string(MoveFailed); p.Error = &msg })
		cancel()
	}
	r.release()
	return r.mv, err
}

func (r *run) drive(ctx context.Context) error {
	switch r.mv.State {
	case MoveDone, MoveAborted:
		return problem.Errorf(problem.Conflict, "move %s is %s", r.mv.ID, r.mv.State)
	case MoveAborting:
		return problem.Errorf(problem.Conflict, "move %s was being aborted; finish that with abort", r.mv.ID)
	case MoveFailed:
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.State = string(MoveRunning); p.Error = nil }); err != nil {
			return err
		}
	}
	steps := map[Phase]func(context.Context) error{
		PhaseStart: r.start, PhaseTarget: r.target, PhaseCopy: r.copy, PhaseCatchUp: r.catchUp,
		PhaseVerify: r.verify, PhaseSwitch: r.switchOver, PhaseCleanup: r.cleanup,
		PhaseRetire: func(ctx context.Context) error { return r.retire(ctx, false) },
	}
	for r.mv.Phase != PhaseDone {
		if err := r.interrupt(string(r.mv.Phase)); err != nil {
			return err
		}
		at := r.mv.Phase
		if err := steps[at](ctx); err != nil {
			return err
		}
		if r.mv.Phase == at { // retiring, not yet due
			break
		}
	}
	if table, state, ok := r.mv.unsettled(); ok && r.mv.State == MoveRetiring {
		return errUnsettled(r.mv, table, state)
	}
	return nil
}

// next records that the move goes on to the phase after its current one.
func (r *run) next(ctx context.Context, change func(p *queries.SaveMoveParams)) error {
	i := slices.Index(phaseOrder, r.mv.Phase)
	return r.save(ctx, func(p *queries.SaveMoveParams) {
		p.Phase = string(phaseOrder[i+1])
		if change != nil {
			change(p)
		}
	})
}

// sides are the two databases of a move, as an administrator, and the
// replication between them. Each run has pools of its own for them, so
// that moves running at once never wait on each other's connections.
type sides struct {
	rep            *Replication
	source, target *pgxpool.Pool
	close          func()
}

// open connects to both sides of a move of tenant t. sourceRef is the
// silo a demotion leaves; targetRef the silo a promotion goes to, or ""
// with cluster naming where it will be made (its database need not
// exist: the target is then the cluster's postgres database, enough to
// check it).
func (m *Mover) open(ctx context.Context, t ID, dir Direction, sourceRef, targetRef, cluster string) (*sides, error) {
	s := &sides{close: func() {}}
	var closers []func()
	s.close = func() {
		for _, c := range closers {
			c()
		}
	}
	pool := func(dsn string) (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, errors.New("a silo's connection settings are malformed") // the parse error would quote them
		}
		cfg.MaxConns = 6
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		closers = append(closers, p.Close)
		return p, nil
	}
	var sourceDSN string
	var err error
	switch dir {
	case Promote:
		sourceDSN = m.reg.primaryDSN
		targetDSN := cluster
		if targetRef != "" {
			if targetDSN, err = m.reg.secrets.SiloDSN(ctx, t, targetRef, AdminRole); err != nil {
				return nil, err
			}
		}
		if s.source, err = pool(sourceDSN); err == nil {
			s.target, err = pool(targetDSN)
		}
	case Demote:
		if sourceDSN, err = m.reg.secrets.SiloDSN(ctx, t, sourceRef, AdminRole); err != nil {
			return nil, err
		}
		if s.source, err = pool(sourceDSN); err == nil {
			s.target, err = pool(m.reg.primaryDSN)
		}
	}
	if err != nil {
		s.close()
		return nil, err
	}
	conn, err := withoutPassword(sourceDSN)
	if err != nil {
		s.close()
		return nil, err
	}
	for _, p := range []*pgxpool.Pool{s.source, s.target} {
		if err := p.Ping(ctx); err != nil {
			s.close()
			return nil, problem.Wrap(problem.Unavailable, err, "a database of the move is unreachable: "+errText(err))
		}
	}
	s.rep = &Replication{Tenant: t, Source: s.source, Target: s.target, SourceConn: conn}
	return s, nil
}

// errText is err's message without connection details a driver may add.
func errText(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return "cannot connect"
	}
	return "cannot connect"
}

// withoutPassword is dsn as a subscription may keep it: Postgres stores a
// subscription's connection string in its catalog in plain text, so the
// target's server must find the password elsewhere (.pgpass, a client
// certificate, or trust on a private network).
func withoutPassword(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("a database's connection settings are malformed")
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	if q.Has("password") || q.Has("sslpassword") {
		q.Del("password")
		q.Del("sslpassword")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// sides opens the move's two databases once per run.
func (r *run) sides(ctx context.Context) (*sides, error) {
	if r.s != nil {
		return r.s, nil
	}
	s, err := r.m.open(ctx, r.mv.Tenant, r.mv.Direction, r.mv.sourceRef, r.mv.targetRef, "")
	if err != nil {
		return nil, err
	}
	s.rep.SubscriptionOID = r.mv.subscription
	r.s = s
	return s, nil
}

func (r *run) start(ctx context.Context) error { return r.next(ctx, nil) }

// target makes the target ready for the tenant's rows: a promotion's silo
// is made and migrated; a demotion clears the shared database of any rows
// the tenant left there (an aborted move's).
func (r *run) target(ctx context.Context) error {
	switch r.mv.Direction {
	case Promote:
		dsn, err := r.m.reg.secrets.SiloDSN(ctx, r.mv.Tenant, r.mv.targetRef, AdminRole)
		if err != nil {
			return err
		}
		if err := r.m.reg.ensureSiloDatabase(ctx, dsn, "silo "+r.mv.Slug); err != nil {
			return err
		}
	case Demote:
		s, err := r.sides(ctx)
		if err != nil {
			return err
		}
		if err := adminTenantTx(ctx, s.target, r.mv.Tenant, func(tx pgx.Tx) error { return deleteTenantRows(ctx, tx, r.mv.Tenant) }); err != nil {
			return err
		}
	}
	return r.next(ctx, nil)
}

// copy starts the replication and waits for the copy of existing rows.
func (r *run) copy(ctx context.Context) error {
	s, err := r.sides(ctx)
	if err != nil {
		return err
	}
	if err := s.rep.Start(ctx); err != nil {
		return err
	}
	tables := r.mv.Tables
	if len(tables) == 0 {
		names, err := AppTables(ctx, s.source)
		if err != nil {
			return err
		}
		counts, err := CountRows(ctx, s.source, r.mv.Tenant, names)
		if err != nil {
			return err
		}
		tables = make(map[string]TableProgress, len(names))
		for n, c := range counts {
			tables[n] = TableProgress{Rows: c, State: "waiting"}
		}
	}
	oid := int64(s.rep.SubscriptionOID)
	if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.SubscriptionOid = &oid; p.Tables = tablesJSON(tables) }); err != nil {
		return err
	}
	for {
		copies, err := s.rep.CopyProgress(ctx)
		if err != nil {
			return err
		}
		if err := r.checkErrors(ctx, s); err != nil {
			return err
		}
		done := len(copies) > 0
		for name, c := range copies {
			tp := tables[name]
			tp.State, tp.Copied = c.State, c.Rows
			if c.State == "copied" {
				tp.Copied = max(tp.Rows, c.Rows)
			}
			done = done && c.Ready
			tables[name] = tp
		}
		if done {
			return r.next(ctx, func(p *queries.SaveMoveParams) { p.Tables = tablesJSON(tables); p.CopiedAt = ptr(time.Now()) })
		}
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.Tables = tablesJSON(tables) }); err != nil {
			return err
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return err
		}
	}
}

// maxReplicationErrors is how many failures of the target's replication
// workers (they retry) a move takes before it stops and says so, rather
// than wait forever for a copy that cannot succeed.
const maxReplicationErrors = 5

// checkErrors fails the move once the target's replication has failed
// maxReplicationErrors times during this run (the counts are the
// subscription's whole life's: a resumed run starts from zero).
func (r *run) checkErrors(ctx context.Context, s *sides) error {
	n, err := s.rep.Errors(ctx)
	if err != nil {
		return err
	}
	if r.errBase == nil {
		r.errBase = &n
	}
	if n -= *r.errBase; n >= maxReplicationErrors {
		return problem.Errorf(problem.Conflict, "the target failed %d times to copy or apply the tenant's rows; see its server's log, then resume or abort the move", n)
	}
	return nil
}

// catchUp waits until the target has nearly caught up with the source:
// until a mark written on the source shows on the target within a
// quarter of MaxPause, so that the fence, which waits for the same, is
// short. (The slot's byte lag is shown, but counts other tenants' and
// other databases' WAL the target never needs.)
func (r *run) catchUp(ctx context.Context) error {
	s, err := r.sides(ctx)
	if err != nil {
		return err
	}
	for {
		n, err := r.nextMark(ctx)
		if err != nil {
			return err
		}
		if err := s.rep.Mark(ctx, r.mv.ID, n); err != nil {
			return err
		}
		written, shown := time.Now(), time.Now()
		for {
			ok, err := s.rep.Arrived(ctx, r.mv.ID, n)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			if err := sleep(ctx, 2*time.Millisecond); err != nil {
				return err
			}
			if time.Since(shown) > pollEvery {
				// Still behind: show how far, and keep waiting.
				if err := r.checkErrors(ctx, s); err != nil {
					return err
				}
				lag, err := s.rep.Lag(ctx)
				if err != nil {
					return err
				}
				if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.LagBytes = &lag }); err != nil {
					return err
				}
				shown = time.Now()
			}
		}
		took := time.Since(written)
		lag, err := s.rep.Lag(ctx)
		if err != nil {
			return err
		}
		if took < r.mv.MaxPause/4 {
			return r.next(ctx, func(p *queries.SaveMoveParams) { p.LagBytes = &lag })
		}
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.LagBytes = &lag }); err != nil {
			return err
		}
	}
}

// nextMark records and returns the number of the move's next mark.
func (r *run) nextMark(ctx context.Context) (int, error) {
	n := r.mv.Marks + 1
	err := r.save(ctx, func(p *queries.SaveMoveParams) { p.Marks = int32(n) })
	return n, err
}

// errFenceTooLong says a fence would have stood past MaxPause; it is
// lifted and raised again.
var errFenceTooLong = errors.New("the fence would stand longer than the maximum pause")

// fenced raises the tenant's fence on the source, marks the tenant's last
// change, waits until the target shows it, and runs inside while the
// fence stands; then lifts it. A fence that cannot be raised in MaxPause
// (transactions do not drain) or whose mark does not arrive in time is
// lifted and tried again later, up to fenceTries times; so is one whose
// inside returns errFenceTooLong. The longest pause is recorded.
func (r *run) fenced(ctx context.Context, inside func(f *Fence, s *sides, deadline time.Time) error) error {
	s, err := r.sides(ctx)
	if err != nil {
		return err
	}
	for try := 1; ; try++ {
		n := r.mv.Marks + 1
		if err := r.save(ctx, func(p *queries.SaveMoveParams) {
			p.FenceAttempts = int32(r.mv.FenceAttempts + 1)
			p.Marks = int32(n)
		}); err != nil {
			return err
		}
		err := r.fenceOnce(ctx, s, n, inside)
		if !errors.Is(err, errFenceTooLong) {
			return err
		}
		if try == fenceTries {
			return problem.Errorf(problem.Conflict, "the fence could not be held under %v in %d tries: transactions that do not finish, a target that applies too slowly, or tables still being copied; resume later, or with a larger --max-pause", r.mv.MaxPause, fenceTries)
		}
		// Let the writes that waited through before trying again.
		if err := sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

func (r *run) fenceOnce(ctx context.Context, s *sides, mark int, inside func(f *Fence, s *sides, deadline time.Time) error) (err error) {
	f, err := RaiseFence(ctx, s.source, r.mv.Tenant, r.mv.MaxPause)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available: in-flight transactions did not drain
			return errFenceTooLong
		}
		return err
	}
	deadline := f.Since.Add(r.mv.MaxPause)
	defer func() {
		held, lerr := f.Lift(context.WithoutCancel(ctx))
		if held > r.mv.Pause {
			// Saved with the next save; the flip saves it too.
			r.mv.Pause = held
		}
		err = errors.Join(err, lerr)
	}()
	if err := f.Mark(ctx, r.mv.ID, mark); err != nil {
		return err
	}
	for {
		ok, err := s.rep.Arrived(ctx, r.mv.ID, mark)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return errFenceTooLong
		}
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
	// The mark vouches for the tables the one stream applies; one still
	// caught up by a copy worker of its own may lag behind it.
	if ready, err := s.rep.Ready(ctx); err != nil || !ready {
		if err != nil {
			return err
		}
		return errFenceTooLong
	}
	return inside(f, s, deadline)
}

// verify compares both sides table by table (row counts and checksums) at
// one moment: snapshots taken behind a brief fence, once the target shows
// the tenant's last change; the comparison runs after the fence is
// lifted, so its length, which grows with the tenant, is no pause.
func (r *run) verify(ctx context.Context) error {
	var snaps snapshots
	defer snaps.close(ctx)
	err := r.fenced(ctx, func(_ *Fence, s *sides, _ time.Time) error { return snaps.open(ctx, s) })
	if err != nil {
		return err
	}
	progress, err := r.compare(ctx, &snaps, "")
	snaps.close(ctx)
	if err != nil {
		return err
	}
	return r.next(ctx, func(p *queries.SaveMoveParams) {
		p.Tables = tablesJSON(progress)
		p.VerifiedAt = ptr(time.Now())
		p.PauseMs = pauseMs(r.mv.Pause)
	})
}

// snapshots are one moment of both sides of a move.
type snapshots struct{ src, dst *Snapshot }

// open takes both snapshots (again, if open already).
func (sn *snapshots) open(ctx context.Context, s *sides) error {
	sn.close(ctx)
	var err error
	if sn.src, err = OpenSnapshot(ctx, s.source); err != nil {
		return err
	}
	sn.dst, err = OpenSnapshot(ctx, s.target)
	return err
}

func (sn *snapshots) close(ctx context.Context) {
	for _, snap := range []**Snapshot{&sn.src, &sn.dst} {
		if *snap != nil {
			(*snap).Close(ctx)
			*snap = nil
		}
	}
}

// compare checksums tables on both snapshots at once and returns their
// progress, every table verified; or Conflict naming the first table that
// differs, marked as a mismatch in the move's record (and its error).
// With a mismatch it returns the progress too.
func (r *run) compare(ctx context.Context, sn *snapshots, when string) (map[string]TableProgress, error) {
	tables, err := AppTables(ctx, sn.src.tx)
	if err != nil {
		return nil, err
	}
	var a, b map[string]TableSum
	var g errgroup.Group
	g.Go(func() (err error) { a, err = sn.src.Checksums(ctx, r.mv.Tenant, tables); return })
	g.Go(func() (err error) { b, err = sn.dst.Checksums(ctx, r.mv.Tenant, tables); return })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	progress := maps.Clone(r.mv.Tables)
	if progress == nil {
		progress = map[string]TableProgress{}
	}
	var mismatch error
	for _, t := range tables {
		progress[t] = TableProgress{Rows: a[t].Rows, Copied: b[t].Rows, State: "verified"}
		if a[t] != b[t] && mismatch == nil {
			progress[t] = TableProgress{Rows: a[t].Rows, Copied: b[t].Rows, State: "mismatch"}
			mismatch = problem.Errorf(problem.Conflict, "verification%s failed: table %s has %d rows (checksum %s) on the source and %d (checksum %s) on the target",
				when, t, a[t].Rows, a[t].Sum, b[t].Rows, b[t].Sum)
		}
	}
	if mismatch != nil {
		msg := problem.MessageOf(mismatch)
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.Tables = tablesJSON(progress); p.Error = &msg }); err != nil {
			return nil, err
		}
		return progress, mismatch
	}
	return progress, nil
}

// unsettled names a table the move found different on its two sides at
// the flip ("mismatch"), or could not compare there because its run
// stopped ("unverified").
func (m *Move) unsettled() (table, state string, ok bool) {
	for name, t := range m.Tables {
		if t.State == "mismatch" || t.State == "unverified" {
			return name, t.State, true
		}
	}
	return "", "", false
}

// errUnsettled says why a flipped move keeps the tenant's old copy.
func errUnsettled(mv *Move, table, state string) error {
	why := fmt.Sprintf("found table %s different on its two sides at the flip", table)
	if state == "unverified" {
		why = "stopped before it compared the two sides as they stood at the flip"
	}
	return problem.Errorf(problem.Conflict, "move %s %s, so the tenant's old copy is kept; compare the copies, then remove the old one with `gatehouse tenant move retire %s --force`",
		mv.ID, why, mv.ID)
}

func pauseMs(d time.Duration) *float64 {
	if d <= 0 {
		return nil
	}
	return ptr(float64(d) / float64(time.Millisecond))
}

// switchOver is the flip, behind the fence: once the target shows the
// tenant's last change (applied in commit order, so everything before it
// is applied too), a snapshot of each side is taken, the target's
// sequences are set past the source's, and the control plane places the
// tenant on the target, with the source marked as moved away so that a
// server that has not yet heard of the flip cannot write there. The fence
// is lifted only after the flip has committed: nothing in it grows with
// the tenant. Then both sides are compared as they stood at the flip; a
// difference is recorded, and the old copy is kept until an operator
// retires it by force (see retire).
func (r *run) switchOver(ctx context.Context) error {
	var snaps snapshots
	defer snaps.close(ctx)
	err := r.fenced(ctx, func(f *Fence, s *sides, deadline time.Time) error {
		if err := r.interrupt("switch:fenced"); err != nil {
			return err
		}
		if err := snaps.open(ctx, s); err != nil {
			return err
		}
		if err := advanceSequences(ctx, s.source, s.target); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errFenceTooLong
		}
		return r.flip(ctx, f)
	})
	if err != nil {
		return err
	}
	if err := r.interrupt("switch:flipped"); err != nil {
		return err
	}
	progress, err := r.compare(ctx, &snaps, " at the flip")
	snaps.close(ctx)
	if problem.CodeOf(err) == problem.Conflict && progress != nil {
		return nil // recorded; the move goes on, keeping the old copy
	}
	if err != nil {
		return err
	}
	return r.save(ctx, func(p *queries.SaveMoveParams) { p.Tables = tablesJSON(progress) })
}

// flip places the tenant on the target, in the control plane, and makes
// the source refuse the tenant's transactions. For a promotion both are
// one transaction in the primary database, on the fence's own connection.
// A demotion marks the silo first: between the two commits the tenant is
// refused everywhere (503), and a resumed move finishes the flip.
func (r *run) flip(ctx context.Context, f *Fence) error {
	// Once begun, the flip is not given up halfway because its caller
	// stops (an operator server shutting down).
	ctx = context.WithoutCancel(ctx)
	now := time.Now()
	placement, ref := Silo, &r.mv.targetRef
	db := f.conn.Conn() // the flip commits before the fence is lifted
	if r.mv.Direction == Demote {
		placement, ref = Shared, nil
		if err := f.MarkMovedAway(ctx, r.mv.ID); err != nil {
			return err
		}
		if err := r.interrupt("switch:moved-away"); err != nil {
			return err
		}
		conn, err := r.m.reg.admin.Acquire(ctx)
		if err != nil {
			return unavailable(err)
		}
		defer conn.Release()
		db = conn.Conn()
	}
	var row queries.ControlPlacementMove
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var err error
		if r.mv.Direction == Promote {
			_, err = tx.Exec(ctx, `insert into fence.moved_away (tenant_id, move_id) values ($1, $2)
				on conflict (tenant_id) do update set move_id = excluded.move_id, moved_at = now()`, r.mv.Tenant.UUID(), r.mv.ID)
		} else {
			_, err = tx.Exec(ctx, "delete from fence.moved_away where tenant_id = $1", r.mv.Tenant.UUID())
		}
		if err != nil {
			return err
		}
		q := queries.New(tx)
		if _, err := q.PlaceTenant(ctx, queries.PlaceTenantParams{ID: r.mv.Tenant.UUID(), Placement: string(placement), SiloRef: ref}); err != nil {
			return fmt.Errorf("flip: %w", err)
		}
		held := time.Since(f.Since)
		unverified := maps.Clone(r.mv.Tables)
		for name, t := range unverified {
			t.State = "unverified" // until the comparison at the flip says otherwise
			unverified[name] = t
		}
		row, err = q.SaveMove(ctx, saveParams(r.mv.row(), func(p *queries.SaveMoveParams) {
			p.Phase = string(PhaseCleanup)
			p.Tables = tablesJSON(unverified)
			p.FlippedAt = &now
			p.PauseMs = pauseMs(max(r.mv.Pause, held))
		}))
		return err
	})
	if err != nil {
		return fmt.Errorf("flip: %w", err)
	}
	mv, err := moveFromRow(row)
	if err != nil {
		return err
	}
	mv.Slug = r.mv.Slug
	r.mv = mv
	r.progress(mv)
	return nil
}

// advanceSequences sets every sequence of schema app on target past its
// value on source (and never back), so that identity columns do not hand
// out, after the flip, values the tenant's copied rows already hold.
func advanceSequences(ctx context.Context, source, target *pgxpool.Pool) error {
	rows, err := source.Query(ctx, "select schemaname || '.' || sequencename, last_value from pg_sequences where schemaname = 'app' and last_value is not null")
	if err != nil {
		return fmt.Errorf("read sequences: %w", err)
	}
	last, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (struct {
		Name  string
		Value int64
	}, error) {
		var v struct {
			Name  string
			Value int64
		}
		err := row.Scan(&v.Name, &v.Value)
		return v, err
	})
	if err != nil {
		return fmt.Errorf("read sequences: %w", err)
	}
	for _, s := range last {
		_, err := target.Exec(ctx, `select setval($1::text::regclass, greatest($2::bigint, coalesce(
			(select last_value from pg_sequences where schemaname || '.' || sequencename = $1::text), 0)))`, s.Name, s.Value)
		if err != nil {
			return fmt.Errorf("advance sequence %s: %w", s.Name, err)
		}
	}
	return nil
}

// cleanup removes the replication, now that the tenant lives on the
// target, and starts the grace period of the old copy.
func (r *run) cleanup(ctx context.Context) error {
	s, err := r.sides(ctx)
	if err != nil {
		return err
	}
	if err := s.rep.Stop(ctx); err != nil {
		return err
	}
	after := r.mv.FlippedAt.Add(r.mv.KeepOldFor)
	return r.next(ctx, func(p *queries.SaveMoveParams) {
		p.State = string(MoveRetiring)
		p.RetireAfter = &after
		p.LagBytes = nil
	})
}

// retire removes the tenant's old copy once its grace period is over;
// never, unless forced, when the two copies differed at the flip.
func (r *run) retire(ctx context.Context, force bool) error {
	if r.mv.RetireAfter != nil && time.Now().Before(*r.mv.RetireAfter) {
		return nil
	}
	if table, state, ok := r.mv.unsettled(); ok && !force {
		return errUnsettled(r.mv, table, state)
	}
	if err := r.m.removeOldCopy(ctx, r.mv); err != nil {
		return err
	}
	return r.next(ctx, func(p *queries.SaveMoveParams) {
		p.State = string(MoveDone)
		p.FinishedAt = ptr(time.Now())
	})
}

// removeOldCopy deletes what a flipped move left behind: the tenant's rows
// in the shared database after a promotion (the database keeps refusing
// the tenant's transactions), or its old silo database and the secrets
// that reach it after a demotion.
func (m *Mover) removeOldCopy(ctx context.Context, mv *Move) error {
	switch mv.Direction {
	case Promote:
		return adminTenantTx(ctx, m.reg.admin, mv.Tenant, func(tx pgx.Tx) error { return deleteTenantRows(ctx, tx, mv.Tenant) })
	case Demote:
		if err := m.reg.dropSiloDatabase(ctx, mv.Tenant, mv.sourceRef); err != nil {
			return err
		}
		return m.reg.secrets.ForgetSilo(ctx, mv.Tenant, mv.sourceRef)
	}
	return nil
}

// Retire removes the old copy of flipped move id now, grace period or
// not; force, even if the two copies differed at the flip. Returns
// NotFound, or Conflict if the move has not flipped, is done, differed
// (without force), or another process runs it.
func (m *Mover) Retire(ctx context.Context, id uuid.UUID, force bool) (*Move, error) {
	r, err := m.claim(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	defer r.release()
	if r.mv.State != MoveRetiring {
		return r.mv, problem.Errorf(problem.Conflict, "move %s is %s, not keeping an old copy", id, r.mv.State)
	}
	r.mv.RetireAfter = nil
	err = r.retire(ctx, force)
	return r.mv, err
}

// RetireDue removes the old copies whose grace period is over, and
// returns the moves it finished. A move another process holds is skipped.
func (m *Mover) RetireDue(ctx context.Context) ([]*Move, error) {
	return m.retireAll(ctx, nil, false)
}

// retireTenant removes the old copies tenant t's flipped moves still keep,
// grace period or not, before a new move or (force: even copies that
// differed) the tenant's deletion.
func (m *Mover) retireTenant(ctx context.Context, t ID, force bool) error {
	u := t.UUID()
	_, err := m.retireAll(ctx, &u, force)
	return err
}

// retireAll retires tenant's retiring moves now, or (tenant nil) every
// move whose grace period is over, skipping those another process holds.
func (m *Mover) retireAll(ctx context.Context, tenant *uuid.UUID, force bool) ([]*Move, error) {
	rows, err := queries.New(m.reg.admin).RetiringMoves(ctx, tenant)
	if err != nil {
		return nil, fmt.Errorf("retiring moves: %w", err)
	}
	var done []*Move
	for _, row := range rows {
		r, err := m.claim(ctx, row.ID, nil)
		if tenant == nil && problem.CodeOf(err) == problem.Conflict {
			continue
		}
		if err != nil {
			return done, err
		}
		if r.mv.State != MoveRetiring { // another process got there first
			r.release()
			continue
		}
		if _, _, ok := r.mv.unsettled(); ok && tenant == nil {
			r.release() // kept until an operator decides
			continue
		}
		r.mv.RetireAfter = nil // due, or wanted now
		err = r.retire(ctx, force)
		r.release()
		if err != nil {
			return done, err
		}
		done = append(done, r.mv)
	}
	return done, nil
}

// Abort rolls move id back: before the flip, the tenant is left exactly as
// it was where it started, with no replication slot, publication or
// subscription left on either side, and the target's copy removed (a
// promotion's silo dropped). After the flip there is nothing to abort:
// move the tenant back instead.
//
// Returns NotFound, or Conflict if the move has flipped, is finished, or
// another process runs it (stop that one first).
func (m *Mover) Abort(ctx context.Context, id uuid.UUID) (*Move, error) {
	r, err := m.claim(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	defer r.release()
	mv := r.mv
	switch {
	case mv.State == MoveAborted:
		return mv, nil
	case mv.Phase.Flipped():
		return mv, problem.Errorf(problem.Conflict, "move %s has flipped: the tenant now lives in its %s placement; %s it to move it back",
			id, map[Direction]string{Promote: "silo", Demote: "shared"}[mv.Direction], map[Direction]string{Promote: "demote", Demote: "promote"}[mv.Direction])
	}
	// From here the move can only be rolled back: a resume would build on
	// what the rollback has half undone.
	if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.State = string(MoveAborting) }); err != nil {
		return mv, err
	}
	if err := m.rollBack(ctx, r); err != nil {
		return r.mv, err
	}
	mv = r.mv
	err = pgx.BeginFunc(ctx, m.reg.admin, func(tx pgx.Tx) error {
		q := queries.New(tx)
		if _, err := q.SetTenantStatus(ctx, queries.SetTenantStatusParams{ID: mv.Tenant.UUID(), Status: string(Active), FromStatuses: []string{string(Moving)}}); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		row, err := q.SaveMove(ctx, saveParams(mv.row(), func(p *queries.SaveMoveParams) {
			p.State = string(MoveAborted)
			p.FinishedAt = ptr(time.Now())
		}))
		if err == nil {
			slug := mv.Slug
			if r.mv, err = moveFromRow(row); err == nil {
				r.mv.Slug = slug
			}
		}
		return err
	})
	if err != nil {
		return mv, fmt.Errorf("abort move %s: %w", id, err)
	}
	return r.mv, nil
}

// rollBack undoes what a move made before its flip, whatever phase it
// reached.
func (m *Mover) rollBack(ctx context.Context, r *run) error {
	mv := r.mv
	switch mv.Direction {
	case Promote:
		exists, err := m.reg.siloDatabaseExists(ctx, mv.Tenant, mv.targetRef)
		if err != nil {
			return err
		}
		if exists {
			s, err := r.sides(ctx)
			if err != nil {
				return err
			}
			if err := s.rep.Stop(ctx); err != nil {
				return err
			}
			if _, err := s.source.Exec(ctx, "delete from app.move_marks where tenant_id = $1 and move_id = $2", mv.Tenant.UUID(), mv.ID); err != nil {
				return fmt.Errorf("abort: remove marks: %w", err)
			}
			r.s.close()
			r.s = nil
		} else if err := m.dropSourceSlots(ctx, m.reg.admin, mv); err != nil {
			return err
		}
		if err := m.reg.dropSiloDatabase(ctx, mv.Tenant, mv.targetRef); err != nil {
			return err
		}
		return m.reg.secrets.ForgetSilo(ctx, mv.Tenant, mv.targetRef)
	case Demote:
		s, err := r.sides(ctx)
		if err != nil {
			return err
		}
		if err := s.rep.Stop(ctx); err != nil {
			return err
		}
		if _, err := s.source.Exec(ctx, "delete from app.move_marks where tenant_id = $1 and move_id = $2", mv.Tenant.UUID(), mv.ID); err != nil {
			return fmt.Errorf("abort: remove marks: %w", err)
		}
		// A demotion interrupted between marking the silo and the flip
		// left the silo refusing the tenant.
		if err := Welcome(ctx, s.source, mv.Tenant); err != nil {
			return err
		}
		// The copy in the shared database goes; the shared database keeps
		// refusing the tenant's transactions, as before the move.
		return adminTenantTx(ctx, s.target, mv.Tenant, func(tx pgx.Tx) error { return deleteTenantRows(ctx, tx, mv.Tenant) })
	}
	return nil
}

// dropSourceSlots removes a promotion's publication and slots from the
// primary when its silo is already gone (so no subscription is left).
func (m *Mover) dropSourceSlots(ctx context.Context, source *pgxpool.Pool, mv *Move) error {
	rep := &Replication{Tenant: mv.Tenant, Source: source, SubscriptionOID: mv.subscription}
	return rep.dropSource(ctx)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
