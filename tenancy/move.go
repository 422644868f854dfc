package tenancy

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

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
	// KeepOldForSet says KeepOldFor is the operator's own choice (given
	// as keep-shared-for or keep-silo-for), not a command's default.
	KeepOldForSet bool
	// Purge deletes the old copy right after the flip, as a KeepOldFor of
	// 0 does. It is refused with KeepOldForSet: the operator said two
	// things.
	Purge bool
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
	// Log receives what background runs (Start) and retirements
	// (RetireDueEvery) report; nil discards it.
	Log *slog.Logger

	background background
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
	if err := o.check(dir); err != nil {
		return nil, err
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
		if queries.IsUniqueViolation(err) {
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

// check checks an operator's options for a move in direction dir, and
// fills in their defaults. Every front end's options pass here (Begin
// calls it), so that the CLI and the operator API refuse the same things
// in the same words. Returns Invalid naming the option.
func (o *MoveOptions) check(dir Direction) error {
	if o.MaxPause == 0 {
		o.MaxPause = DefaultMaxPause
	}
	if o.MaxPause < 10*time.Millisecond || o.MaxPause > time.Minute {
		return problem.InvalidField("max_pause", "must be from 10ms to 1m")
	}
	if o.KeepOldFor < 0 {
		return problem.InvalidField("keep_old_for", "must not be negative")
	}
	if o.By == "" {
		o.By = "gatehouse"
	}
	if len(o.By) > 100 {
		return problem.InvalidField("by", "must be at most 100 characters")
	}
	if dir != Promote && dir != Demote {
		return problem.InvalidField("direction", "must be promote or demote")
	}
	if o.SiloCluster != "" && dir != Promote {
		return problem.InvalidField("silo_cluster", "only applies to a promotion")
	}
	if o.Purge {
		if o.KeepOldForSet {
			return problem.InvalidField("purge", "give either purge or "+keepOldForField(dir))
		}
		o.KeepOldFor = 0
	}
	return nil
}

// keepOldForField names the option that keeps the old copy of a move in
// direction dir, as the operator API spells it.
func keepOldForField(dir Direction) string {
	if dir == Demote {
		return "keep_silo_for"
	}
	return "keep_shared_for"
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

func pauseMs(d time.Duration) *float64 {
	if d <= 0 {
		return nil
	}
	return ptr(float64(d) / float64(time.Millisecond))
}
