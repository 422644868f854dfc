package tenancy

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/gatehouse/gatehouse/migrations"
	"github.com/gatehouse/gatehouse/queries"
)

// Role names. Migrations grant to AppRoleName by name.
const (
	// OwnerRoleName owns every schema and table; migrations run as it.
	OwnerRoleName = "gatehouse_owner"
	// AppRoleName is what the server connects as: it owns nothing, is not a
	// superuser and cannot bypass row level security.
	AppRoleName = "gatehouse_app"
)

// migrateLock is the advisory lock key that serialises migrations of one
// database across processes.
const migrateLock = 7_460_031_215_004_311

// migrateConnectTimeout bounds a connection attempt whose connection
// string sets no connect_timeout.
const migrateConnectTimeout = 10 * time.Second

// Migration sets and the tables goose records them in. The tables live in
// schema gatehouse, outside app, so that every table of app is tenant data.
type migrationSet struct {
	name  string
	table string
	fsys  func() fs.FS
}

var (
	controlSet = migrationSet{"control", "gatehouse.control_migrations", migrations.Control}
	tenantSet  = migrationSet{"tenant", "gatehouse.tenant_migrations", migrations.Tenant}
)

// Migrator applies Gatehouse's migrations and keeps its two roles in shape.
// It connects as an administrator (a superuser, or a role with CREATEROLE and
// CREATEDB) and runs the migrations themselves as gatehouse_owner.
type Migrator struct {
	// Out receives one line per step; nil discards. Writes to it are
	// serialised, so it need not be safe for concurrent use.
	Out io.Writer
	// AppPassword, if set, becomes gatehouse_app's password. Only a SCRAM
	// verifier computed here reaches the server, never the password.
	AppPassword string
	// Parallel bounds how many silos All migrates at once, and so how
	// many silo connections it holds (one per silo being migrated).
	// Below 1 means 1.
	Parallel int

	mu sync.Mutex // guards writes to Out
}

// printer receives a line of output, fmt.Printf style.
type printer func(format string, args ...any)

func (m *Migrator) printf(format string, args ...any) {
	m.write(fmt.Sprintf(format, args...))
}

// write writes lines to Out, together.
func (m *Migrator) write(lines ...string) {
	if m.Out == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range lines {
		fmt.Fprintln(m.Out, l)
	}
}

// setResult is where one migration set of one database ended.
type setResult struct {
	set     migrationSet
	applied int   // migrations applied by this run
	version int64 // the database's version of the set afterwards
}

// Primary migrates the primary database: the control plane and the shared
// tenant schema.
func (m *Migrator) Primary(ctx context.Context, dsn string) error {
	return m.one(ctx, dsn, "primary", controlSet, tenantSet)
}

// Silo migrates a silo database's tenant schema. label names it in output.
func (m *Migrator) Silo(ctx context.Context, dsn, label string) error {
	return m.one(ctx, dsn, label, tenantSet)
}

// one migrates one database, reporting each step to Out as it happens.
func (m *Migrator) one(ctx context.Context, dsn, label string, sets ...migrationSet) error {
	ensureRoles := func(ctx context.Context, c *pgx.Conn) error { return m.ensureRoles(ctx, c, m.printf) }
	results, err := m.migrate(ctx, dsn, label, m.printf, ensureRoles, sets...)
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	for _, r := range results {
		if r.applied == 0 {
			m.printf("%s: %s migrations up to date (version %d)", label, r.set.name, r.version)
		}
	}
	return nil
}

// All migrates the primary database, alone, and then every silo it
// records, at most Parallel at a time. A silo's connection is closed as
// soon as that silo is done, so All never holds more than Parallel silo
// connections: the bound is also one on the connections it takes from
// the silo clusters.
//
// A line goes to Out as each silo is done, "silo <slug>: migrated to
// version V (k/n)", "silo <slug>: already current at version V (k/n)" or
// "silo <slug>: failed (k/n): <error>", after the lines of the migrations
// it applied; then a summary and each failed silo again. One silo's
// failure does not stop the others. When ctx is cancelled no more silos
// start, and the running ones are left to finish.
//
// Returns the primary's error, if any, before any silo is touched; else an
// error naming the failed silos, or saying how many never started.
func (m *Migrator) All(ctx context.Context, dsn string, locator SiloLocator) error {
	if err := m.Primary(ctx, dsn); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	rows, err := queries.New(conn).ListSiloTenants(ctx)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("list silos: %w", err)
	}
	silos := make([]*Tenant, len(rows))
	for i, row := range rows {
		silos[i] = tenantFromRow(row)
	}
	return m.silos(ctx, silos, locator)
}

// siloFailure is a silo All could not migrate.
type siloFailure struct {
	slug string
	err  error
}

// silos migrates silos, Parallel at a time, for All.
func (m *Migrator) silos(ctx context.Context, silos []*Tenant, locator SiloLocator) error {
	n := len(silos)
	if n == 0 {
		m.printf("silos: none")
		return nil
	}
	// A silo that has started is not cut short by an interrupt: it ends
	// at the version its migrations reach, its output complete.
	run := context.WithoutCancel(ctx)
	roles := &clusterRoles{m: m, done: map[string]bool{}}
	var (
		mu                      sync.Mutex
		done, migrated, current int
		failed                  []siloFailure
	)
	report := func(t *Tenant, lines []string, r setResult, err error) {
		mu.Lock()
		defer mu.Unlock()
		done++
		switch {
		case err != nil:
			failed = append(failed, siloFailure{t.Slug, err})
			lines = append(lines, fmt.Sprintf("silo %s: failed (%d/%d): %v", t.Slug, done, n, err))
		case r.applied > 0:
			migrated++
			lines = append(lines, fmt.Sprintf("silo %s: migrated to version %d (%d/%d)", t.Slug, r.version, done, n))
		default:
			current++
			lines = append(lines, fmt.Sprintf("silo %s: already current at version %d (%d/%d)", t.Slug, r.version, done, n))
		}
		m.write(lines...)
	}

	jobs := make(chan *Tenant)
	var wg sync.WaitGroup
	for range min(max(m.Parallel, 1), n) {
		wg.Go(func() {
			for t := range jobs {
				// The feeder may hand out one more silo as ctx ends.
				if ctx.Err() != nil {
					continue
				}
				lines, r, err := m.migrateSilo(run, t, locator, roles)
				report(t, lines, r, err)
			}
		})
	}
feed:
	for _, t := range silos {
		if ctx.Err() != nil {
			break
		}
		select {
		case jobs <- t:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()

	summary := fmt.Sprintf("silos: %d migrated, %d already current, %d failed", migrated, current, len(failed))
	if done < n {
		summary += fmt.Sprintf(", %d not started (interrupted)", n-done)
	}
	lines := []string{summary + fmt.Sprintf(" (%d in all)", n)}
	slices.SortFunc(failed, func(a, b siloFailure) int { return strings.Compare(a.slug, b.slug) })
	slugs := make([]string, len(failed))
	for i, f := range failed {
		slugs[i] = f.slug
		lines = append(lines, fmt.Sprintf("failed: silo %s: %v", f.slug, f.err))
	}
	m.write(lines...)

	var errs []error
	if len(failed) > 0 {
		// Out lists every failure; the error names a few.
		const named = 10
		list := strings.Join(slugs[:min(len(slugs), named)], ", ")
		if len(slugs) > named {
			list += fmt.Sprintf(" and %d more", len(slugs)-named)
		}
		errs = append(errs, fmt.Errorf("%d of %d silos failed to migrate: %s", len(failed), n, list))
	}
	if done < n {
		errs = append(errs, fmt.Errorf("%d of %d silos not migrated: %w", n-done, n, ctx.Err()))
	}
	return errors.Join(errs...)
}

// migrateSilo migrates silo t for All. Silos run at once, so its lines of
// output are returned, to be written together, rather than written.
func (m *Migrator) migrateSilo(ctx context.Context, t *Tenant, locator SiloLocator, roles *clusterRoles) ([]string, setResult, error) {
	var lines []string
	say := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	dsn, err := locator.SiloDSN(ctx, t.ID, t.SiloRef, AdminRole)
	if err != nil {
		return lines, setResult{}, fmt.Errorf("connection string: %w", err)
	}
	ensureRoles := func(ctx context.Context, c *pgx.Conn) error { return roles.ensure(ctx, c, say) }
	results, err := m.migrate(ctx, dsn, "silo "+t.Slug, say, ensureRoles, tenantSet)
	if err != nil {
		return lines, setResult{}, err
	}
	return lines, results[0], nil
}

// clusterRoles puts the roles in shape once per cluster and administrator
// for All: roles belong to the cluster, not to a silo's database, and two
// sessions altering one role at once can fail ("tuple concurrently
// updated"), so its calls never overlap.
type clusterRoles struct {
	m    *Migrator
	mu   sync.Mutex
	done map[string]bool // host:port user
}

func (r *clusterRoles) ensure(ctx context.Context, c *pgx.Conn, say printer) error {
	cfg := c.Config()
	key := fmt.Sprintf("%s:%d %s", cfg.Host, cfg.Port, cfg.User)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done[key] {
		return nil
	}
	if err := r.m.ensureRoles(ctx, c, say); err != nil {
		return err
	}
	r.done[key] = true
	return nil
}

// migrate applies sets to the database dsn names, in one session of its
// own, closed on return: the session that holds the database's advisory
// lock is the one that migrates, so a database costs one connection, and
// a lost session ends the run instead of going on unlocked. Errors do not
// name the database; the caller does.
func (m *Migrator) migrate(ctx context.Context, dsn, label string, say printer, ensureRoles func(context.Context, *pgx.Conn) error, sets ...migrationSet) ([]setResult, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// Not the parse error: pgx only tries its best to hide the
		// password of a string it cannot parse.
		return nil, errors.New("connection string is malformed")
	}
	if cfg.ConnectTimeout == 0 {
		// A silo left running after an interrupt is waited for: a cluster
		// that does not answer must not hold it for the system's TCP
		// timeout.
		cfg.ConnectTimeout = migrateConnectTimeout
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "gatehouse migrate"
	}
	db := sql.OpenDB(&oneSession{Connector: stdlib.GetConnector(*cfg)})
	defer db.Close()
	db.SetMaxOpenConns(1)

	err = withConn(ctx, db, func(conn *pgx.Conn) error {
		// The lock is held by this session until it ends, so a second
		// migrate of the same database waits here and then finds nothing
		// to do.
		if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", int64(migrateLock)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if err := ensureRoles(ctx, conn); err != nil {
			return err
		}
		var name string
		if err := conn.QueryRow(ctx, "select current_database()").Scan(&name); err != nil {
			return err
		}
		dbIdent := pgx.Identifier{name}.Sanitize()
		for _, stmt := range []string{
			"grant connect, create, temporary on database " + dbIdent + " to " + OwnerRoleName,
			"grant connect on database " + dbIdent + " to " + AppRoleName,
			"create schema if not exists gatehouse authorization " + OwnerRoleName,
			"grant usage on schema gatehouse to " + AppRoleName,
		} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("prepare database: %w", err)
			}
		}
		if _, err := conn.Exec(ctx, "set role "+OwnerRoleName); err != nil {
			return fmt.Errorf("prepare database: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	results := make([]setResult, 0, len(sets))
	for _, set := range sets {
		r, err := m.up(ctx, db, label, set, say)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	err = withConn(ctx, db, func(conn *pgx.Conn) error {
		for _, stmt := range []string{"reset role", "grant select on all tables in schema gatehouse to " + AppRoleName} {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// withConn runs fn on db's session.
func withConn(ctx context.Context, db *sql.DB, fn func(*pgx.Conn) error) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	return c.Raw(func(dc any) error { return fn(dc.(*stdlib.Conn).Conn()) })
}

// oneSession connects once. database/sql replaces a connection it finds
// broken; migrate's holds the advisory lock and the owner role, so a
// replacement must fail rather than migrate unlocked, as the administrator.
type oneSession struct {
	driver.Connector
	used atomic.Bool
}

func (s *oneSession) Connect(ctx context.Context) (driver.Conn, error) {
	if s.used.Swap(true) {
		return nil, errors.New("the migration session was lost")
	}
	return s.Connector.Connect(ctx)
}

// up applies set's pending migrations on db, which runs as the owner.
func (m *Migrator) up(ctx context.Context, db *sql.DB, label string, set migrationSet, say printer) (setResult, error) {
	p, err := goose.NewProvider(goose.DialectPostgres, db, set.fsys(),
		goose.WithTableName(set.table),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return setResult{}, fmt.Errorf("%s migrations: %w", set.name, err)
	}
	results, err := p.Up(ctx)
	applied := 0
	for _, r := range results {
		if r.Error == nil {
			applied++
			say("%s: applied %s migration %s (%s)", label, set.name, r.Source.Path, r.Duration.Round(1e6))
		}
	}
	if err != nil {
		return setResult{}, fmt.Errorf("%s migrations: %w", set.name, err)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return setResult{}, fmt.Errorf("%s migrations: %w", set.name, err)
	}
	return setResult{set: set, applied: applied, version: v}, nil
}

// EnsureRoles creates gatehouse_owner and gatehouse_app on conn's cluster if
// missing, and puts back gatehouse_app's restrictions if someone loosened
// them. Roles are per cluster, so this runs for every cluster Gatehouse uses.
func (m *Migrator) EnsureRoles(ctx context.Context, conn *pgx.Conn) error {
	return m.ensureRoles(ctx, conn, m.printf)
}

func (m *Migrator) ensureRoles(ctx context.Context, conn *pgx.Conn, say printer) error {
	var user string
	var super bool
	if err := conn.QueryRow(ctx, "select current_user::text, rolsuper from pg_roles where rolname = current_user").Scan(&user, &super); err != nil {
		return fmt.Errorf("ensure roles: %w", err)
	}
	if user == AppRoleName {
		return fmt.Errorf("ensure roles: migrations must not run as %s", AppRoleName)
	}
	// Concurrent CREATE ROLE from two processes can fail with either error.
	create := func(role, attrs string) error {
		_, err := conn.Exec(ctx, fmt.Sprintf(`do $$ begin
			create role %s %s;
		exception when duplicate_object or unique_violation then null;
		end $$`, role, attrs))
		return err
	}
	if user != OwnerRoleName {
		if err := create(OwnerRoleName, "nologin"); err != nil {
			return fmt.Errorf("ensure role %s: %w", OwnerRoleName, err)
		}
		if !super {
			// A non-superuser administrator needs membership to SET ROLE.
			if _, err := conn.Exec(ctx, "grant "+OwnerRoleName+" to current_user"); err != nil {
				return fmt.Errorf("ensure role %s: %w", OwnerRoleName, err)
			}
		}
	}
	const appAttrs = "login nosuperuser nobypassrls nocreatedb nocreaterole noreplication inherit"
	if err := create(AppRoleName, appAttrs); err != nil {
		return fmt.Errorf("ensure role %s: %w", AppRoleName, err)
	}
	var loose bool
	if err := conn.QueryRow(ctx, `select rolsuper or rolbypassrls or rolcreatedb or rolcreaterole
		or rolreplication or not rolcanlogin from pg_roles where rolname = $1`, AppRoleName).Scan(&loose); err != nil {
		return fmt.Errorf("ensure role %s: %w", AppRoleName, err)
	}
	if loose {
		if _, err := conn.Exec(ctx, "alter role "+AppRoleName+" "+appAttrs); err != nil {
			return fmt.Errorf("restrict role %s: %w", AppRoleName, err)
		}
		say("restored the restrictions of role %s", AppRoleName)
	}
	if m.AppPassword != "" {
		verifier, err := scramVerifier(m.AppPassword)
		if err != nil {
			return err
		}
		// ALTER ROLE takes no parameters; the verifier is base64 and '$'
		// only, so quoting it is safe.
		if _, err := conn.Exec(ctx, "alter role "+AppRoleName+" password '"+verifier+"'"); err != nil {
			return fmt.Errorf("set %s password: %w", AppRoleName, err)
		}
	}
	return nil
}

// scramVerifier computes the SCRAM-SHA-256 verifier Postgres stores for a
// password (RFC 5802/7677), as psql's \password does, so the password itself
// never travels to the server or into its logs.
func scramVerifier(password string) (string, error) {
	const iterations = 4096
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	b64 := base64.StdEncoding.EncodeToString
	return "SCRAM-SHA-256$" + strconv.Itoa(iterations) + ":" + b64(salt) + "$" +
		b64(stored[:]) + ":" + b64(mac(salted, "Server Key")), nil
}

// SchemaCurrent reports whether db (any role with usage on schema gatehouse,
// gatehouse_app included) has every embedded migration applied. wantControl
// is false for silo databases, which have no control plane.
func SchemaCurrent(ctx context.Context, db interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, wantControl bool) error {
	sets := []migrationSet{tenantSet}
	if wantControl {
		sets = append(sets, controlSet)
	}
	for _, set := range sets {
		want, err := latestVersion(set.fsys())
		if err != nil {
			return err
		}
		var have int64
		// goose's version table is not in sqlc's schema; this read is the
		// only place that looks at it.
		err = db.QueryRow(ctx, "select coalesce(max(version_id), 0) from "+set.table+" where is_applied").Scan(&have)
		if err != nil {
			return fmt.Errorf("%s migrations: %w", set.name, err)
		}
		if have < want {
			return fmt.Errorf("%s migrations: at version %d, want %d: run gatehouse migrate", set.name, have, want)
		}
	}
	return nil
}

func latestVersion(fsys fs.FS) (int64, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, n := range names {
		prefix, _, _ := strings.Cut(n, "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("migration %s: name must start with a version number", n)
		}
		latest = max(latest, v)
	}
	return latest, nil
}
