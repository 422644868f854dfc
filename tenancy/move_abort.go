package tenancy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

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
			if err := queries.New(s.source).DeleteMoveMarks(ctx, queries.DeleteMoveMarksParams{TenantID: mv.Tenant.UUID(), MoveID: mv.ID}); err != nil {
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
		if err := queries.New(s.source).DeleteMoveMarks(ctx, queries.DeleteMoveMarksParams{TenantID: mv.Tenant.UUID(), MoveID: mv.ID}); err != nil {
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
