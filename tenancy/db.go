package tenancy

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// DB is the only way application code reaches tenant data. It routes each
// transaction to the shared pool or the tenant's silo pool and scopes it to
// the tenant, so that row level security admits that tenant's rows only.
type DB struct {
	shared *pgxpool.Pool
	silos  *SiloPools
}

// NewDB returns a DB over the shared pool (connected as gatehouse_app) and
// the silo pools. silos may be nil when no tenant is placed in a silo.
func NewDB(shared *pgxpool.Pool, silos *SiloPools) *DB {
	return &DB{shared: shared, silos: silos}
}

// Tx runs fn in one transaction scoped to tenant t and commits if fn returns
// nil. Any error, or a panic, rolls it back.
func (db *DB) Tx(ctx context.Context, t *Tenant, fn func(q *queries.Queries) error) error {
	return db.RawTx(ctx, t, func(tx queries.DBTX) error { return fn(queries.New(tx)) })
}

// RawTx is Tx for the few statements sqlc cannot express (catalog-driven
// statements such as deleting a tenant's rows from every table). The same
// tenant scoping applies.
func (db *DB) RawTx(ctx context.Context, t *Tenant, fn func(tx queries.DBTX) error) error {
	if t == nil {
		return errors.New("tenant transaction: no tenant")
	}
	pool := db.shared
	if t.Placement == Silo {
		if db.silos == nil {
			return fmt.Errorf("tenant %s: silo placement but no silo pools configured", t.ID)
		}
		var err error
		if pool, err = db.silos.Pool(ctx, t); err != nil {
			return err
		}
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return unavailable(err)
	}
	// A connection left inside a transaction (rollback failed, panic) is
	// destroyed by pgxpool on release rather than reused.
	defer conn.Release()
	return scopedTx(ctx, conn, t.ID, fn)
}

// scopedTx begins a transaction on conn and sets the tenant for it alone.
//
// BEGIN and set_config travel in one pipelined batch: one round trip instead
// of two, which keeps a tenant transaction as cheap as a plain one (see
// BenchmarkTx). set_config(..., true) is transaction-local, so the tenant
// cannot leak to the next user of the pooled connection.
func scopedTx(ctx context.Context, conn *pgxpool.Conn, id ID, fn func(tx queries.DBTX) error) (err error) {
	b := &pgx.Batch{}
	b.Queue("begin")
	b.Queue("select set_config('gatehouse.tenant_id', $1, true)", id.String())
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return unavailable(err)
	}
	defer func() {
		if p := recover(); p != nil {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
			panic(p)
		}
		if err != nil {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
		}
	}()
	if err = fn(conn); err != nil {
		return err
	}
	tag, err := conn.Exec(ctx, "commit")
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	// COMMIT of a transaction in which a statement failed answers ROLLBACK
	// without an error; fn swallowed that failure, the work is lost.
	if tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// unavailable marks a failure to reach a database as a 503 for the caller.
func unavailable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return problem.Wrap(problem.Unavailable, err, "database unavailable, try again later")
}
