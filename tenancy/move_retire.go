package tenancy

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

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
