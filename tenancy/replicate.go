// The SQL written here is what sqlc cannot express: replication's DDL
// (publications, subscriptions) and slot functions, reads of the
// replication catalogs and statistics views, and statements built from
// the catalog's list of app tables (row filters, checksums, counts,
// sequences). A move's plain statements are in queries/fence.sql.

package tenancy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// Replication streams one tenant's rows from a source database to a target
// database with Postgres logical replication, while the tenant keeps
// serving from the source: a publication of every table of schema app
// filtered on the tenant's id, a slot on the source, and a subscription on
// the target that copies the rows there and then applies every change.
// It is the data path of a placement move (promotion to a silo, demotion
// back). Every step is idempotent, so a move interrupted at any point can
// run it again, or Stop it and leave neither side with a trace.
type Replication struct {
	Tenant ID
	// Source and Target are administrator pools on the two databases
	// (superusers: the copy reads past row-level security, and only
	// superusers create subscriptions in Postgres 15).
	Source, Target *pgxpool.Pool
	// SourceConn is how the target's subscription reaches the source: a
	// postgres:// URL without a password (Postgres would keep it in its
	// catalog in plain text; give the target's server a .pgpass or a
	// client certificate instead).
	SourceConn string
	// SubscriptionOID is the target's subscription, once Start made it
	// (0 before). Record it: Stop needs it to find the table-copy slots an
	// interrupted copy leaves on the source after the subscription itself
	// is gone.
	SubscriptionOID uint32
}

// name is the publication's, slot's and subscription's name.
func (r *Replication) name() string {
	return "gatehouse_move_" + strings.ReplaceAll(r.Tenant.String(), "-", "")
}

// Start creates what is missing of the publication, the slot and the
// subscription. The subscription's first act is the copy of the tenant's
// existing rows; Ready tells when it is done and streaming.
func (r *Replication) Start(ctx context.Context) error {
	if u, err := url.Parse(r.SourceConn); err != nil || u.User != nil && hasPassword(u) {
		return errors.New("replication: the source's connection string must not hold a password")
	}
	name := r.name()
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := r.Source.QueryRow(ctx, "select exists (select 1 from pg_publication where pubname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	if !exists {
		tables, err := AppTables(ctx, r.Source)
		if err != nil {
			return err
		}
		// Postgres 15 takes row filters on listed tables only (not with
		// FOR TABLES IN SCHEMA). Every primary key holds tenant_id, so
		// updates and deletes may be filtered on it.
		filter := fmt.Sprintf(" where (tenant_id = '%s')", r.Tenant)
		list := make([]string, len(tables))
		for i, t := range tables {
			list[i] = pgx.Identifier{"app", t}.Sanitize() + filter
		}
		// Without truncate: TRUNCATE ignores row filters, and would empty
		// the target's table of every tenant's rows.
		if _, err := r.Source.Exec(ctx, "create publication "+ident+" for table "+strings.Join(list, ", ")+
			" with (publish = 'insert, update, delete')"); err != nil {
			return fmt.Errorf("replication: create publication: %w", err)
		}
	}
	if err := r.Source.QueryRow(ctx, "select exists (select 1 from pg_replication_slots where slot_name = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	if !exists {
		// Made apart from the subscription, so that whoever cleans up
		// finds it by name even if the subscription was never made.
		if _, err := r.Source.Exec(ctx, "select pg_create_logical_replication_slot($1, 'pgoutput')", name); err != nil {
			return fmt.Errorf("replication: create slot: %w", err)
		}
	}
	if err := r.Target.QueryRow(ctx, "select exists (select 1 from pg_subscription where subname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	if !exists {
		// synchronous_commit on: a change the target shows is on its disk,
		// so a move may flip as soon as the target shows the tenant's last
		// change (see Arrived).
		sql := fmt.Sprintf("create subscription %s connection %s publication %s with (create_slot = false, slot_name = %s, copy_data = true, synchronous_commit = 'on')",
			ident, quoteLiteral(r.SourceConn), ident, quoteLiteral(name))
		if _, err := r.Target.Exec(ctx, sql); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "08006" { // connection_failure
				return problem.Wrap(problem.Unavailable, err, "the target's server cannot reach the source database: "+pgErr.Message)
			}
			return fmt.Errorf("replication: create subscription: %w", err)
		}
	}
	if err := r.Target.QueryRow(ctx, "select oid from pg_subscription where subname = $1", name).Scan(&r.SubscriptionOID); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	return nil
}

// Check makes sure both sides can carry the replication, before anything
// is made: the source writes logical WAL, the role the target connects as
// may read every row, and both servers have the slots, senders, workers
// and connections a subscription with its table copies takes. Returns
// Conflict naming the setting to change.
func (r *Replication) Check(ctx context.Context) error {
	u, err := url.Parse(r.SourceConn)
	if err != nil || u.User == nil || u.User.Username() == "" {
		return problem.Errorf(problem.Invalid, "replication: the source's connection string must name its user")
	}
	var c struct {
		walLevel                string
		super, repl, bypass, ok bool
		freeSlots, freeSenders  int
		freeSourceConns         int
	}
	err = r.Source.QueryRow(ctx, `
		select current_setting('wal_level'),
		       coalesce(r.rolsuper, false), coalesce(r.rolreplication, false), coalesce(r.rolbypassrls, false), r.oid is not null,
		       current_setting('max_replication_slots')::int - (select count(*) from pg_replication_slots),
		       current_setting('max_wal_senders')::int - (select count(*) from pg_stat_replication),
		       current_setting('max_connections')::int - (select count(*) from pg_stat_activity)
		from (select 1) one left join pg_roles r on r.rolname = $1`, u.User.Username()).Scan(
		&c.walLevel, &c.super, &c.repl, &c.bypass, &c.ok, &c.freeSlots, &c.freeSenders, &c.freeSourceConns)
	if err != nil {
		return fmt.Errorf("replication: check the source: %w", err)
	}
	var syncWorkers, freeWorkers, freeTargetConns int
	err = r.Target.QueryRow(ctx, `
		select current_setting('max_sync_workers_per_subscription')::int,
		       current_setting('max_logical_replication_workers')::int - (select count(*) from pg_stat_subscription where pid is not null),
		       current_setting('max_connections')::int - (select count(*) from pg_stat_activity)`).Scan(&syncWorkers, &freeWorkers, &freeTargetConns)
	if err != nil {
		return fmt.Errorf("replication: check the target: %w", err)
	}
	need := 1 + syncWorkers // the stream, and the table copies beside it
	switch {
	case c.walLevel != "logical":
		return problem.Errorf(problem.Conflict, "the source database has wal_level=%s; set wal_level=logical and restart it", c.walLevel)
	case !c.ok:
		return problem.Errorf(problem.Conflict, "the source has no role %q to replicate as", u.User.Username())
	case !c.super && !(c.repl && c.bypass):
		// Row-level security would let the copy read nothing, and every
		// table would still count as copied.
		return problem.Errorf(problem.Conflict, "role %q may not replicate every row: it needs to be a superuser, or to have REPLICATION and BYPASSRLS", u.User.Username())
	case c.freeSlots < need:
		return problem.Errorf(problem.Conflict, "the source has %d free replication slots and a move takes %d: raise max_replication_slots", c.freeSlots, need)
	case c.freeSenders < need:
		return problem.Errorf(problem.Conflict, "the source has %d free WAL senders and a move takes %d: raise max_wal_senders", c.freeSenders, need)
	case c.freeSourceConns < need+2:
		return problem.Errorf(problem.Conflict, "the source has %d free connections and a move takes %d: raise max_connections", c.freeSourceConns, need+2)
	case freeWorkers < need:
		return problem.Errorf(problem.Conflict, "the target has %d free logical replication workers and a move takes %d: raise max_logical_replication_workers (and max_worker_processes)", freeWorkers, need)
	case freeTargetConns < 4:
		return problem.Errorf(problem.Conflict, "the target has %d free connections: raise max_connections", freeTargetConns)
	}
	return nil
}

func hasPassword(u *url.URL) bool {
	_, ok := u.User.Password()
	return ok || u.Query().Get("password") != ""
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// TableCopy is how far the copy of one table has come.
type TableCopy struct {
	State string // waiting, copying or copied
	Rows  int64  // rows copied so far, while copying
	// Ready: the table's changes are applied by the subscription's one
	// stream, in commit order with every other table's. Until then a
	// table-copy worker of its own catches it up, and a change to it may
	// lag behind later changes to other tables.
	Ready bool
}

// CopyProgress reports the copy of each table, by name.
func (r *Replication) CopyProgress(ctx context.Context) (map[string]TableCopy, error) {
	rows, err := r.Target.Query(ctx, `
		select c.relname::text, sr.srsubstate::text, coalesce(p.tuples_processed, 0)
		from pg_subscription_rel sr
		join pg_subscription s on s.oid = sr.srsubid
		join pg_class c on c.oid = sr.srrelid
		left join pg_stat_progress_copy p on p.relid = sr.srrelid and p.datid = s.subdbid
		where s.subname = $1`, r.name())
	if err != nil {
		return nil, fmt.Errorf("replication: copy state: %w", err)
	}
	out := map[string]TableCopy{}
	for rows.Next() {
		var name, state string
		var n int64
		if err := rows.Scan(&name, &state, &n); err != nil {
			return nil, fmt.Errorf("replication: copy state: %w", err)
		}
		c := TableCopy{Rows: n, Ready: state == "r"}
		switch state {
		case "i":
			c.State = "waiting"
		case "d":
			c.State = "copying"
		default: // f, s, r: copied, then catching up or streaming
			c.State = "copied"
		}
		out[name] = c
	}
	return out, rows.Err()
}

// Ready reports whether every table's changes are applied by the
// subscription's one stream (TableCopy.Ready): only then does a mark that
// has arrived vouch for every change made before it.
func (r *Replication) Ready(ctx context.Context) (bool, error) {
	var total, ready int
	err := r.Target.QueryRow(ctx, `
		select count(*), count(*) filter (where srsubstate = 'r')
		from pg_subscription_rel sr join pg_subscription s on s.oid = sr.srsubid
		where s.subname = $1`, r.name()).Scan(&total, &ready)
	if err != nil {
		return false, fmt.Errorf("replication: table states: %w", err)
	}
	return total > 0 && total == ready, nil
}

// Errors is how often the subscription's workers have failed (copying a
// table or applying a change) since it was made; they retry, so a count
// that keeps growing means the target cannot take the tenant's rows.
func (r *Replication) Errors(ctx context.Context) (int64, error) {
	var n *int64
	err := r.Target.QueryRow(ctx, "select apply_error_count + sync_error_count from pg_stat_subscription_stats where subname = $1", r.name()).Scan(&n)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("replication: error counts: %w", err)
	}
	if n == nil {
		return 0, nil
	}
	return *n, nil
}

// Lag is how many bytes of the source's WAL the target has yet to confirm.
func (r *Replication) Lag(ctx context.Context) (int64, error) {
	var lag *int64
	err := r.Source.QueryRow(ctx, `
		select (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
		from pg_replication_slots where slot_name = $1`, r.name()).Scan(&lag)
	if err != nil {
		return 0, fmt.Errorf("replication: lag: %w", err)
	}
	if lag == nil {
		return -1, nil
	}
	return *lag, nil
}

// Mark writes move's mark number n into the tenant's data on the source,
// outside any fence, to time the target's lag.
func (r *Replication) Mark(ctx context.Context, move uuid.UUID, n int) error {
	return writeMark(ctx, r.Source, r.Tenant, move, n)
}

// Arrived reports whether the target shows move's mark number n. Changes
// are applied in commit order, so the target then holds every change the
// tenant made before the mark; a mark written behind the tenant's fence
// (Fence.Mark) is its last change. The subscription commits
// synchronously, so what the target shows is on its disk.
func (r *Replication) Arrived(ctx context.Context, move uuid.UUID, n int) (bool, error) {
	ok, err := queries.New(r.Target).MoveMarkArrived(ctx, queries.MoveMarkArrivedParams{TenantID: r.Tenant.UUID(), MoveID: move, N: int32(n)})
	if err != nil {
		return false, fmt.Errorf("replication: look for mark %d: %w", n, err)
	}
	return ok, nil
}

// Stop removes the subscription, the slot (with the table-copy slots an
// interrupted copy leaves) and the publication, whichever exist. The
// target keeps the rows it has.
func (r *Replication) Stop(ctx context.Context) error {
	name := r.name()
	ident := pgx.Identifier{name}.Sanitize()
	var sub *uint32
	err := r.Target.QueryRow(ctx, "select oid from pg_subscription where subname = $1", name).Scan(&sub)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("replication: %w", err)
	}
	if sub != nil {
		r.SubscriptionOID = *sub
		// Detached from its slot first, so that dropping it does not need
		// the source (which may be the one that is down).
		for _, sql := range []string{"alter subscription " + ident + " disable", "alter subscription " + ident + " set (slot_name = none)", "drop subscription " + ident} {
			if _, err := r.Target.Exec(ctx, sql); err != nil {
				return fmt.Errorf("replication: %s: %w", sql, err)
			}
		}
	}
	return r.dropSource(ctx)
}

// dropSource drops the slots and the publication on the source.
func (r *Replication) dropSource(ctx context.Context) error {
	name := r.name()
	syncSlots := "" // table-copy slots are named pg_<subscription oid>_sync_<table oid>_<system id>
	if r.SubscriptionOID != 0 {
		syncSlots = fmt.Sprintf(`pg\_%d\_sync\_%%`, r.SubscriptionOID)
	}
	// A slot still held by a walsender that has not yet noticed the
	// subscription went is retried briefly.
	for attempt := 0; ; attempt++ {
		_, err := r.Source.Exec(ctx, `
			select pg_drop_replication_slot(slot_name) from pg_replication_slots
			where slot_name = $1 or ($2 <> '' and slot_name like $2)`, name, syncSlots)
		if err == nil {
			break
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || attempt == 50 { // object_in_use
			return fmt.Errorf("replication: drop slot: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := r.Source.Exec(ctx, "drop publication if exists "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("replication: drop publication: %w", err)
	}
	return nil
}

// TableSum is a table's count of one tenant's rows and a checksum over
// them that does not depend on their order.
type TableSum struct {
	Rows int64
	Sum  string
}

// Checksums returns a TableSum per app table of tenant id's rows in db,
// all read in one snapshot.
func Checksums(ctx context.Context, db *pgxpool.Pool, id ID) (map[string]TableSum, error) {
	snap, err := OpenSnapshot(ctx, db)
	if err != nil {
		return nil, err
	}
	defer snap.Close(ctx)
	tables, err := AppTables(ctx, snap.tx)
	if err != nil {
		return nil, err
	}
	return snap.Checksums(ctx, id, tables)
}

// Snapshot is one moment of a database, held open for reading: a move
// takes one of each side while the tenant's writes are fenced, then
// compares them at leisure after the fence is lifted.
type Snapshot struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// OpenSnapshot opens a read-only repeatable-read transaction on db and
// takes its snapshot at once. Row text is rendered with the time zone and
// output formats fixed, so that two servers render the same row alike.
func OpenSnapshot(ctx context.Context, db *pgxpool.Pool) (*Snapshot, error) {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	s := &Snapshot{conn: conn, tx: tx}
	// The first query takes the snapshot; the settings are local to it.
	_, err = tx.Exec(ctx, `select pg_current_snapshot(), set_config('timezone', 'UTC', true), set_config('datestyle', 'ISO, YMD', true),
		set_config('intervalstyle', 'postgres', true), set_config('bytea_output', 'hex', true), set_config('extra_float_digits', '1', true)`)
	if err != nil {
		s.Close(ctx)
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return s, nil
}

// Close ends the snapshot's transaction.
func (s *Snapshot) Close(ctx context.Context) {
	_ = s.tx.Rollback(context.WithoutCancel(ctx))
	s.conn.Release()
}

// Checksums returns a TableSum per table of tenant id's rows as the
// snapshot sees them. Rows are hashed by their text form.
func (s *Snapshot) Checksums(ctx context.Context, id ID, tables []string) (map[string]TableSum, error) {
	sums := make(map[string]TableSum, len(tables))
	for _, t := range tables {
		// The sum of each row's 64-bit hash, kept as numeric so it cannot
		// overflow: addition does not care about order.
		var sum TableSum
		q := fmt.Sprintf(`select count(*), coalesce(sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric), 0)::text
			from %s r where tenant_id = $1`, pgx.Identifier{"app", t}.Sanitize())
		if err := s.tx.QueryRow(ctx, q, id.UUID()).Scan(&sum.Rows, &sum.Sum); err != nil {
			return nil, fmt.Errorf("checksums: %s: %w", t, err)
		}
		sums[t] = sum
	}
	return sums, nil
}

// CountRows counts tenant id's rows in each of tables, in one statement.
func CountRows(ctx context.Context, db queries.DBTX, id ID, tables []string) (map[string]int64, error) {
	parts := make([]string, len(tables))
	for i, t := range tables {
		parts[i] = fmt.Sprintf("(select count(*) from %s where tenant_id = $1)", pgx.Identifier{"app", t}.Sanitize())
	}
	counts := make([]int64, len(tables))
	dest := make([]any, len(tables))
	for i := range counts {
		dest[i] = &counts[i]
	}
	if err := db.QueryRow(ctx, "select "+strings.Join(parts, ", "), id.UUID()).Scan(dest...); err != nil {
		return nil, fmt.Errorf("count rows: %w", err)
	}
	out := make(map[string]int64, len(tables))
	for i, t := range tables {
		out[t] = counts[i]
	}
	return out, nil
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
