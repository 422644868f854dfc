package tenancy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

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
		q := queries.New(tx)
		var err error
		if r.mv.Direction == Promote {
			err = q.MarkMovedAway(ctx, queries.MarkMovedAwayParams{TenantID: r.mv.Tenant.UUID(), MoveID: r.mv.ID})
		} else {
			err = q.WelcomeBack(ctx, r.mv.Tenant.UUID())
		}
		if err != nil {
			return err
		}
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
