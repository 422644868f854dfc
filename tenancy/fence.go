// The fence's statements are in queries/fence.sql; the few written here
// are session settings (lock_timeout, synchronous_commit), which SET
// takes as literals, not parameters, so sqlc cannot express them.

package tenancy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/queries"
)

// SQLSTATEs the fence raises in a tenant transaction (fence.enter, in
// migrations/tenant 00011 and 00012), both answered with 503 and
// Retry-After (fenceError).
const (
	// codeFenced: a move held the tenant's fence for longer than the
	// transaction may wait (fence.holds, else fenceWait). Retrying in a
	// moment finds the fence lifted.
	codeFenced = "GH001"
	// codeMovedAway: the tenant's data lives in another database now
	// (fence.moved_away). The retry, once the tenant's new placement is
	// known (DB.Relocated), goes there.
	codeMovedAway = "GH002"
)

// Fence holds one tenant's writes on one database still: while it stands,
// the tenant's new transactions there wait (up to the wait given to
// RaiseFence, then 503 with Retry-After), and it is raised only once every
// transaction already running has finished. Other tenants do not notice.
// A placement move raises it around its flip, for as short a time as it
// can.
type Fence struct {
	conn   *pgxpool.Conn
	tenant ID
	// Since is when the fence began to hold new transactions back: from
	// then on they wait, while those in flight drain.
	Since time.Time
}

// RaiseFence raises tenant id's fence on the database of admin (an
// administrator pool), waiting up to wait for the transactions in flight
// to finish. When they do not, it gives up, and the tenant's transactions
// go on as before. While it stands, the tenant's new transactions wait up
// to wait too.
func RaiseFence(ctx context.Context, admin *pgxpool.Pool, id ID, wait time.Duration) (*Fence, error) {
	conn, err := admin.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("fence: %w", err)
	}
	// How long writers wait is read by those that find the fence up, so it
	// is in place before the fence is.
	q := queries.New(conn)
	err = q.SetFenceWait(ctx, queries.SetFenceWaitParams{TenantID: id.UUID(), MaxWaitSecs: wait.Seconds()})
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("fence: %w", err)
	}
	// A session lock, on a connection of its own, held until Lift; the
	// wait for it is bounded by lock_timeout, on this session only.
	since := time.Now()
	_, err = conn.Exec(ctx, fmt.Sprintf("set lock_timeout = %d", max(wait.Milliseconds(), 1)))
	if err == nil {
		err = q.LockFence(ctx, id.UUID())
	}
	if err != nil {
		conn.Conn().Close(context.WithoutCancel(ctx)) // the lock, if any, goes with the session
		conn.Release()
		return nil, fmt.Errorf("fence: raise for tenant %s: %w", id, err)
	}
	return &Fence{conn: conn, tenant: id, Since: since}, nil
}

// MarkMovedAway records, behind the fence, that the tenant's data now lives
// elsewhere: its transactions on this database fail from now on (503, and
// the next request resolves the new placement).
func (f *Fence) MarkMovedAway(ctx context.Context, move uuid.UUID) error {
	err := queries.New(f.conn).MarkMovedAway(ctx, queries.MarkMovedAwayParams{TenantID: f.tenant.UUID(), MoveID: move})
	if err != nil {
		return fmt.Errorf("fence: mark tenant %s moved away: %w", f.tenant, err)
	}
	return nil
}

// Mark writes move's mark number n into the tenant's data, behind the
// fence: the tenant's last change before a flip (see Replication.Arrived).
func (f *Fence) Mark(ctx context.Context, move uuid.UUID, n int) error {
	return writeMark(ctx, f.conn, f.tenant, move, n)
}

// writeMark writes move's mark number n into tenant's data in db, and
// commits synchronously, so that it is on its way to a target at once.
func writeMark(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}, tenant ID, move uuid.UUID, n int) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "set local synchronous_commit = on"); err != nil {
			return err
		}
		return queries.New(tx).AddMoveMark(ctx, queries.AddMoveMarkParams{TenantID: tenant.UUID(), MoveID: move, N: int32(n)})
	})
	if err != nil {
		return fmt.Errorf("mark tenant %s: %w", tenant, err)
	}
	return nil
}

// Lift lets the tenant's waiting and new transactions through, and returns
// how long the fence held them: the longest any of them can have waited.
func (f *Fence) Lift(ctx context.Context) (time.Duration, error) {
	defer f.conn.Release()
	held := time.Since(f.Since)
	if unlocked, err := queries.New(f.conn).UnlockFence(ctx, f.tenant.UUID()); err != nil || !unlocked {
		// Closing the session releases the lock all the same.
		f.conn.Conn().Close(context.WithoutCancel(ctx))
		return held, errors.Join(fmt.Errorf("fence: lift for tenant %s", f.tenant), err)
	}
	_, err := f.conn.Exec(ctx, "reset lock_timeout")
	return held, err
}

// Welcome undoes MarkMovedAway: tenant id's transactions run on admin's
// database again (a demotion brings a tenant back to where it once was).
func Welcome(ctx context.Context, admin *pgxpool.Pool, id ID) error {
	if err := queries.New(admin).WelcomeBack(ctx, id.UUID()); err != nil {
		return fmt.Errorf("fence: welcome tenant %s: %w", id, err)
	}
	return nil
}
