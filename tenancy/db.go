// The SQL written here is the tenant transaction's own plumbing, not
// queries: BEGIN, the tenant setting with the fence's entry (enterTenant)
// and a transaction's first statement travel in one pipelined batch, and
// COMMIT and ROLLBACK follow by hand. sqlc, one statement a call, cannot
// express that.

package tenancy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// DB is the only way application code reaches tenant data. It routes each
// transaction to the shared pool or the tenant's silo pool and scopes it to
// the tenant, so that row level security admits that tenant's rows only.
//
// Which method, when:
//
//	Tx     a tenant's work: sqlc queries in one transaction, committed if fn returns nil
//	RawTx  as Tx, for the statements sqlc cannot express (built from the catalog)
//	Once   one hot read in one round trip, with no BEGIN or COMMIT; a second statement fails
//	Which  background sweeps: which of many tenants a one-boolean probe holds for, batched
type DB struct {
	shared *pgxpool.Pool
	silos  *SiloPools
	shares *shares // of the shared pool, per tenant

	mu     sync.Mutex
	probes map[string]*siloProbes // by query (see Which)

	// Relocated, if set, tells where the control plane places a tenant
	// now. A transaction refused because its tenant has moved away (a
	// placement flip this instance has not heard of yet) is then run
	// again, once, at the tenant's new place: the refusal comes before fn's
	// first statement runs, so fn must only not act outside the database
	// before its first statement. Servers set it to Resolver.ByID.
	Relocated func(ctx context.Context, id ID) (*Tenant, error)
}

// NewDB returns a DB over the shared pool (connected as gatehouse_app) and
// the silo pools. silos may be nil when no tenant is placed in a silo.
func NewDB(shared *pgxpool.Pool, silos *SiloPools) *DB {
	return &DB{shared: shared, silos: silos, shares: newShares(max(1, int(shared.Config().MaxConns)/2), shareWait),
		probes: map[string]*siloProbes{}}
}

// NotifyChange tells every server that tenant id changed (its keys, say),
// as a change of its control-plane row does: they drop what they keep of
// it in memory (Resolver.OnChange).
func (db *DB) NotifyChange(ctx context.Context, id ID) error {
	return queries.New(db.shared).NotifyTenantChange(ctx, queries.NotifyTenantChangeParams{Channel: notifyChannel, TenantID: id.String()})
}

// shareWait is how long a transaction waits for its tenant's share of the
// shared pool before it is refused with 503 and Retry-After: longer than
// the fence holds a tenant's transactions (fenceWait), so that a move's
// pause alone never refuses anyone here.
const shareWait = 5 * time.Second

// Tx runs fn in one transaction scoped to tenant t and commits if fn returns
// nil. Any error, or a panic, rolls it back.
func (db *DB) Tx(ctx context.Context, t *Tenant, fn func(q *queries.Queries) error) error {
	return db.RawTx(ctx, t, func(tx queries.DBTX) error { return fn(queries.New(tx)) })
}

// RawTx is Tx for the few statements sqlc cannot express (catalog-driven
// statements such as deleting a tenant's rows from every table). The same
// tenant scoping applies.
func (db *DB) RawTx(ctx context.Context, t *Tenant, fn func(tx queries.DBTX) error) error {
	err := db.rawTx(ctx, t, fn)
	if nt := db.relocated(ctx, t, err); nt != nil {
		err = db.rawTx(ctx, nt, fn)
	}
	return asUnavailable(err)
}

// relocated returns where tenant t lives now if err says t has moved away
// from where it was (its old database refused it, or, for a silo, could
// not be reached: a demotion drops the silo it leaves), and the control
// plane places it elsewhere; else nil. Both errors come before fn's
// first statement has run, or with its transaction rolled back.
func (db *DB) relocated(ctx context.Context, t *Tenant, err error) *Tenant {
	var pgErr *pgconn.PgError
	movedAway := errors.As(err, &pgErr) && pgErr.Code == codeMovedAway
	siloGone := t != nil && t.Placement == Silo && problem.CodeOf(err) == problem.Unavailable
	if t == nil || db.Relocated == nil || !(movedAway || siloGone) {
		return nil
	}
	nt, err := db.Relocated(ctx, t.ID)
	if err != nil || (nt.Placement == t.Placement && nt.SiloRef == t.SiloRef) {
		return nil
	}
	return nt
}

func (db *DB) rawTx(ctx context.Context, t *Tenant, fn func(tx queries.DBTX) error) error {
	conn, release, err := db.acquire(ctx, t)
	if err != nil {
		return err
	}
	// A connection left inside a transaction (rollback failed, panic) is
	// destroyed by pgxpool on release rather than reused.
	defer release()
	return scopedTx(ctx, conn, t.ID, fn)
}

// Once runs fn's single statement for tenant t in one round trip: the
// tenant setting and the statement travel in one pipeline, which Postgres
// runs as one implicit transaction, so no BEGIN and no COMMIT are needed.
// For hot reads; a second statement in fn fails (use Tx).
func (db *DB) Once(ctx context.Context, t *Tenant, fn func(q *queries.Queries) error) error {
	err := db.once(ctx, t, fn)
	if nt := db.relocated(ctx, t, err); nt != nil {
		err = db.once(ctx, nt, fn)
	}
	return asUnavailable(err)
}

func (db *DB) once(ctx context.Context, t *Tenant, fn func(q *queries.Queries) error) error {
	conn, release, err := db.acquire(ctx, t)
	if err != nil {
		return err
	}
	defer release()
	return fn(queries.New(&lazyTx{conn: conn, tenant: t.ID.String(), implicit: true}))
}

// acquire takes a connection to tenant t's database, and returns it with
// the function that gives it back. In the shared pool, a tenant first
// takes one of its share of the connections: a tenant whose transactions
// wait (at a move's fence, on a lock, behind a slow query) waits with
// its own share only, never with the connections other tenants need.
func (db *DB) acquire(ctx context.Context, t *Tenant) (*pgxpool.Conn, func(), error) {
	if t == nil {
		return nil, nil, errors.New("tenant transaction: no tenant")
	}
	if t.Placement == Silo {
		if db.silos == nil {
			return nil, nil, fmt.Errorf("tenant %s: silo placement but no silo pools configured", t.ID)
		}
		conn, err := db.silos.Acquire(ctx, t)
		if err != nil {
			return nil, nil, err
		}
		return conn, conn.Release, nil
	}
	done, err := db.shares.take(ctx, t.ID)
	if err != nil {
		return nil, nil, err
	}
	conn, err := db.shared.Acquire(ctx)
	if err != nil {
		done()
		return nil, nil, unavailable(err)
	}
	return conn, func() { conn.Release(); done() }, nil
}

// scopedTx runs fn in a transaction on conn scoped to tenant id.
//
// BEGIN and set_config travel in one pipelined batch with fn's first
// statement: a tenant transaction with one statement costs two round trips
// (that batch, then COMMIT), one fewer than a plain BEGIN, statement,
// COMMIT (see BenchmarkTx). set_config(..., true) is transaction-local, so
// the tenant cannot leak to the next user of the pooled connection. A fn
// that runs no statement opens no transaction at all.
func scopedTx(ctx context.Context, conn *pgxpool.Conn, id ID, fn func(tx queries.DBTX) error) (err error) {
	tx := &lazyTx{conn: conn, tenant: id.String()}
	defer func() {
		if !tx.started {
			return
		}
		if p := recover(); p != nil {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
			panic(p)
		}
		if err != nil {
			_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
		}
	}()
	if err = fn(tx); err != nil || !tx.started {
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

// lazyTx is the queries.DBTX a scoped transaction's fn works with. Its
// first statement is sent in one batch after BEGIN and the tenant setting;
// the rest go straight to the connection, inside that transaction.
type lazyTx struct {
	conn    *pgxpool.Conn
	tenant  string
	started bool
	// implicit: one statement, in the pipeline's implicit transaction
	// (DB.Once).
	implicit bool
}

var errOnce = errors.New("tenant statement: DB.Once runs one statement; use DB.Tx for more")

// setTenant scopes a read-only batch to a tenant (Probe), without the
// fence: a read cannot lose a write.
const setTenant = "select set_config('gatehouse.tenant_id', $1, true)"

// enterTenant scopes a transaction to a tenant and enters the tenant's
// move fence (migration 00011): it waits up to fenceWait while a move
// flips the tenant's placement, and fails if the tenant has moved away.
const enterTenant = "select set_config('gatehouse.tenant_id', $1, true), fence.enter($1::uuid, $2::interval)"

// fenceWait is how long a transaction waits at a tenant's fence before it
// is refused with 503 and Retry-After.
const fenceWait = "2 s"

// fenceError maps the fence's refusals to problems; nil for other errors.
func fenceError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return nil
	}
	switch pgErr.Code {
	case codeFenced:
		e := problem.Wrap(problem.Unavailable, err, "this organisation is moving to a new home; try again in a moment")
		e.RetryAfter = time.Second
		return e
	case codeMovedAway:
		e := problem.Wrap(problem.Unavailable, err, "this organisation has just moved; try again")
		e.RetryAfter = time.Second
		return e
	}
	return nil
}

// begin sends BEGIN, the tenant setting and the first statement in one
// batch, and returns the batch positioned at that statement's result.
func (t *lazyTx) begin(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	t.started = true
	b := &pgx.Batch{}
	if !t.implicit {
		b.Queue("begin")
	}
	b.Queue(enterTenant, t.tenant, fenceWait)
	b.Queue(sql, args...)
	br := t.conn.SendBatch(ctx, b)
	for range len(b.QueuedQueries) - 1 {
		if _, err := br.Exec(); err != nil {
			br.Close()
			if ferr := fenceError(err); ferr != nil {
				return nil, ferr
			}
			return nil, unavailable(err)
		}
	}
	return br, nil
}

func (t *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.started && t.implicit {
		return pgconn.CommandTag{}, errOnce
	}
	if t.started {
		return t.conn.Exec(ctx, sql, args...)
	}
	br, err := t.begin(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (t *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.started && t.implicit {
		return nil, errOnce
	}
	if t.started {
		return t.conn.Query(ctx, sql, args...)
	}
	br, err := t.begin(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (t *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.started && !t.implicit {
		return t.conn.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &firstRow{rows: rows, err: err}
}

// batchRows are a batched statement's rows; closing them closes the batch.
type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *batchRows) Close() {
	r.Rows.Close()
	r.br.Close()
}

// firstRow is pgx.Row over rows: the first row, or pgx.ErrNoRows.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r *firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// asUnavailable is err, or a 503 if err is the database going away under
// a transaction (the connection broke, the server shut down or refused
// connections): the caller's request was fine, the database was not there.
func asUnavailable(err error) error {
	if err == nil || problem.CodeOf(err) != problem.Internal || !unreachable(err) {
		return err
	}
	return unavailable(err)
}

// unreachable reports whether err says the database could not be reached
// or went away, rather than refused a statement.
func unreachable(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", "53300": // shutting down, crashed, starting, too many clients
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection exception
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err)
}

// unavailable marks a failure to reach a database as a 503 for the caller,
// keeping a 503 the failure already is (a spent budget, say).
func unavailable(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if e, ok := errors.AsType[*problem.Error](err); ok && e.Code == problem.Unavailable {
		return e
	}
	e := problem.Wrap(problem.Unavailable, err, "database unavailable, try again later")
	e.RetryAfter = time.Second
	return e
}
