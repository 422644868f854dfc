package tenancy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
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
}

// name is the publication's, slot's and subscription's name.
func (r *Replication) name() string {
	return "gatehouse_move_" + strings.ReplaceAll(r.Tenant.String(), "-", "")
}

// Start creates what is missing of the publication, the slot and the
// subscription. The subscription's first act is the copy of the tenant's
// existing rows; Copied tells when it is done.
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
		if _, err := r.Source.Exec(ctx, "create publication "+ident+" for table "+strings.Join(list, ", ")); err != nil {
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
		sql := fmt.Sprintf("create subscription %s connection %s publication %s with (create_slot = false, slot_name = %s, copy_data = true)",
			ident, quoteLiteral(r.SourceConn), ident, quoteLiteral(name))
		if _, err := r.Target.Exec(ctx, sql); err != nil {
			return fmt.Errorf("replication: create subscription: %w", err)
		}
	}
	return nil
}

func hasPassword(u *url.URL) bool {
	_, ok := u.User.Password()
	return ok || u.Query().Get("password") != ""
}

// quoteLiteral quotes s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// Copied reports whether the subscription has copied every table's
// existing rows and is streaming changes, and how many tables are still
// being copied.
func (r *Replication) Copied(ctx context.Context) (bool, int, error) {
	var total, ready int
	err := r.Target.QueryRow(ctx, `
		select count(*), count(*) filter (where srsubstate in ('r', 's'))
		from pg_subscription_rel sr join pg_subscription s on s.oid = sr.srsubid
		where s.subname = $1`, r.name()).Scan(&total, &ready)
	if err != nil {
		return false, 0, fmt.Errorf("replication: copy state: %w", err)
	}
	return total > 0 && total == ready, total - ready, nil
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

// CaughtUp reports whether the target has applied every change the
// source committed before lsn: the slot's confirmed position has reached
// it. Make sure the tenant wrote something at or after lsn (a move marks
// its fence with a row of its own): a source whose last changes belong to
// other tenants has nothing of this tenant to send, and confirms late.
func (r *Replication) CaughtUp(ctx context.Context, lsn string) (bool, error) {
	var ok *bool
	err := r.Source.QueryRow(ctx, `select confirmed_flush_lsn >= $2::pg_lsn from pg_replication_slots where slot_name = $1`, r.name(), lsn).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("replication: confirmed position: %w", err)
	}
	return ok != nil && *ok, nil
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
	syncSlots := "" // table-copy slots are named pg_<subscription oid>_sync_<table oid>_<system id>
	if sub != nil {
		syncSlots = fmt.Sprintf(`pg\_%d\_sync\_%%`, *sub)
		// Detached from its slot first, so that dropping it does not need
		// the source (which may be the one that is down).
		for _, sql := range []string{"alter subscription " + ident + " disable", "alter subscription " + ident + " set (slot_name = none)", "drop subscription " + ident} {
			if _, err := r.Target.Exec(ctx, sql); err != nil {
				return fmt.Errorf("replication: %s: %w", sql, err)
			}
		}
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
	if _, err := r.Source.Exec(ctx, "drop publication if exists "+ident); err != nil {
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
// for comparing the two sides of a move. Rows are compared by their text
// form, with the session's time zone and output formats fixed so that two
// servers render the same row alike.
func Checksums(ctx context.Context, db *pgxpool.Pool, id ID) (map[string]TableSum, error) {
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	// One snapshot for every table.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for _, s := range []string{"set local timezone = 'UTC'", "set local datestyle = 'ISO, YMD'", "set local intervalstyle = 'postgres'",
		"set local bytea_output = 'hex'", "set local extra_float_digits = 1"} {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("checksums: %s: %w", s, err)
		}
	}
	tables, err := AppTables(ctx, tx)
	if err != nil {
		return nil, err
	}
	sums := make(map[string]TableSum, len(tables))
	for _, t := range tables {
		// The sum of each row's 64-bit hash, kept as numeric so it cannot
		// overflow: addition does not care about order.
		var s TableSum
		q := fmt.Sprintf(`select count(*), coalesce(sum(('x' || substr(md5(r::text), 1, 16))::bit(64)::bigint::numeric), 0)::text
			from %s r where tenant_id = $1`, pgx.Identifier{"app", t}.Sanitize())
		if err := tx.QueryRow(ctx, q, id.UUID()).Scan(&s.Rows, &s.Sum); err != nil {
			return nil, fmt.Errorf("checksums: %s: %w", t, err)
		}
		sums[t] = s
	}
	return sums, nil
}
