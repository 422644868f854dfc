package tenancy

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

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
	// Out receives one line per step; nil discards.
	Out io.Writer
	// AppPassword, if set, becomes gatehouse_app's password. Only a SCRAM
	// verifier computed here reaches the server, never the password.
	AppPassword string
}

func (m *Migrator) printf(format string, args ...any) {
	if m.Out != nil {
		fmt.Fprintf(m.Out, format+"\n", args...)
	}
}

// Primary migrates the primary database: the control plane and the shared
// tenant schema.
func (m *Migrator) Primary(ctx context.Context, dsn string) error {
	return m.migrate(ctx, dsn, "primary", controlSet, tenantSet)
}

// Silo migrates a silo database's tenant schema. label names it in output.
func (m *Migrator) Silo(ctx context.Context, dsn, label string) error {
	return m.migrate(ctx, dsn, label, tenantSet)
}

// All migrates the primary database and then every silo it records.
func (m *Migrator) All(ctx context.Context, dsn string, locator SiloLocator) error {
	if err := m.Primary(ctx, dsn); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to primary: %w", err)
	}
	silos, err := queries.New(conn).ListSiloTenants(ctx)
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("list silos: %w", err)
	}
	for _, row := range silos {
		t := tenantFromRow(row)
		siloDSN, err := locator.SiloDSN(ctx, t.ID, t.SiloRef, AdminRole)
		if err != nil {
			return fmt.Errorf("silo %s: %w", t.Slug, err)
		}
		if err := m.Silo(ctx, siloDSN, "silo "+t.Slug); err != nil {
			return err
		}
	}
	return nil
}

func (m *Migrator) migrate(ctx context.Context, dsn, label string, sets ...migrationSet) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("%s: connect: %w", label, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// The lock is held by this session until it ends, so a second migrate
	// of the same database waits here and then finds nothing to do.
	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", int64(migrateLock)); err != nil {
		return fmt.Errorf("%s: lock: %w", label, err)
	}
	if err := m.EnsureRoles(ctx, conn); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	var db string
	if err := conn.QueryRow(ctx, "select current_database()").Scan(&db); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	dbIdent := pgx.Identifier{db}.Sanitize()
	for _, stmt := range []string{
		"grant connect, create, temporary on database " + dbIdent + " to " + OwnerRoleName,
		"grant connect on database " + dbIdent + " to " + AppRoleName,
		"create schema if not exists gatehouse authorization " + OwnerRoleName,
		"grant usage on schema gatehouse to " + AppRoleName,
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: prepare database: %w", label, err)
		}
	}

	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	sqlDB := stdlib.OpenDB(*cfg, stdlib.OptionAfterConnect(func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, "set role "+OwnerRoleName)
		return err
	}))
	defer sqlDB.Close()
	sqlDB.SetMaxOpenConns(1)

	for _, set := range sets {
		if err := m.up(ctx, sqlDB, label, set); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, "grant select on all tables in schema gatehouse to "+AppRoleName); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

func (m *Migrator) up(ctx context.Context, db *sql.DB, label string, set migrationSet) error {
	p, err := goose.NewProvider(goose.DialectPostgres, db, set.fsys(),
		goose.WithTableName(set.table),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("%s: %s migrations: %w", label, set.name, err)
	}
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error == nil {
			m.printf("%s: applied %s migration %s (%s)", label, set.name, r.Source.Path, r.Duration.Round(1e6))
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %s migrations: %w", label, set.name, err)
	}
	if len(results) == 0 {
		v, _ := p.GetDBVersion(ctx)
		m.printf("%s: %s migrations up to date (version %d)", label, set.name, v)
	}
	return nil
}

// EnsureRoles creates gatehouse_owner and gatehouse_app on conn's cluster if
// missing, and puts back gatehouse_app's restrictions if someone loosened
// them. Roles are per cluster, so this runs for every cluster Gatehouse uses.
func (m *Migrator) EnsureRoles(ctx context.Context, conn *pgx.Conn) error {
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
		m.printf("restored the restrictions of role %s", AppRoleName)
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
