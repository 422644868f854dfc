// Command gatehouse is Gatehouse's one binary: the server, migrations and
// the operator's commands. It only wires the packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
)

const usage = `Gatehouse: multi-tenant authentication and authorization.

Usage:
  gatehouse serve                      run the HTTP server
  gatehouse migrate [--parallel 8]     migrate the primary database, then every silo, 8 at a time (1 to 64)
  gatehouse dev                        migrate, create demo tenants, serve (local use)
  gatehouse tenant create --slug S --name N [--placement shared|silo] [--silo-cluster URL] [--plan P] [--signup open|invite]
                          [--admin-email E [--admin-name N]]   and invite E as its first admin
  gatehouse tenant set SLUG [--signup open|invite] [--require-verified-email true|false] [--access-token-ttl 15m]
                          [--sender ADDR] [--sender-name N] [--reply-to ADDR] [--link-base-url URL]
  gatehouse tenant list [--json]
  gatehouse tenant show SLUG [--json]
  gatehouse tenant suspend SLUG
  gatehouse tenant resume SLUG
  gatehouse tenant delete SLUG [--yes]
  gatehouse tenant domain add SLUG DOMAIN
  gatehouse tenant domain remove SLUG DOMAIN
  gatehouse tenant domain list SLUG
  gatehouse tenant promote SLUG [--silo-cluster URL] [--max-pause 2s] [--keep-shared-for 24h | --purge]
                          move the tenant to a silo database of its own, online
  gatehouse tenant demote SLUG [--max-pause 2s] [--keep-silo-for 24h | --purge]
                          move a silo tenant back to the shared database, online
  gatehouse tenant move list [SLUG] | show ID        placement moves and their progress
  gatehouse tenant move resume ID | abort ID         finish an interrupted move, or roll it back (before its flip)
  gatehouse tenant move retire (ID [--force] | --due) remove a moved tenant's old copy now, or every one past its grace period
  gatehouse tenant byok import --tenant SLUG --key-file FILE   seal the tenant's data under its own AES-256 key
  gatehouse tenant admin grant|revoke --tenant SLUG --email E  make an account the tenant's admin, or not
  gatehouse tenant admin invite --tenant SLUG --email E [--name N]  create an admin account and mail its invitation
  gatehouse app create --tenant SLUG --name N --kind web|spa|native|machine [--redirect-uri U ...]
                          [--post-logout-redirect-uri U ...] [--grant-types G,G] [--scopes S,S] [--auth-method M]
                          [--jwks-file F] [--access-token-ttl 15m] [--first-party] [--id-token-alg EdDSA|RS256] [--json]
                          register an OpenID Connect app (a client secret is shown once)
  gatehouse app list --tenant SLUG [--json] | show --tenant SLUG ID|CLIENT_ID [--json]
  gatehouse app delete --tenant SLUG ID|CLIENT_ID [--yes]
  gatehouse app rotate-secret --tenant SLUG ID|CLIENT_ID [--overlap 24h]  a new client secret; the old one stays valid for --overlap
  gatehouse keys rotate (--tenant SLUG | --all)                 rotate tenant keys (Transit and token signing)
  gatehouse rebac reconcile (--tenant SLUG | --all) [--dry-run] compare Postgres and SpiceDB and repair drift
  gatehouse operator serve [--operator-addr 127.0.0.1:8090] [--operator-tls-cert FILE --operator-tls-key FILE]
                          the operator API (moves), for holders of an operator token; HTTPS, or plain HTTP on loopback only
  gatehouse operator token create NAME [--scope read,move,retire] [--expires-in 2160h] | revoke NAME | list
                          operator API tokens (a new token is shown once; default scope read, 90 days)
  gatehouse audit verify --tenant SLUG                          check the tenant's audit hash chain
  gatehouse audit export --tenant SLUG [--out FILE]             write the audit trail as NDJSON

Configuration comes from flags or the environment (flags win):
  --database-url   GATEHOUSE_DATABASE_URL      primary database, as an administrator (postgres:// URL)
  --app-database-url GATEHOUSE_APP_DATABASE_URL the server's connection as gatehouse_app
                                               (default: the primary URL with user gatehouse_app)
                   GATEHOUSE_APP_PASSWORD      gatehouse_app's password (environment only)
  --addr           GATEHOUSE_ADDR              listen address (default 127.0.0.1:8080)
  --base-domain    GATEHOUSE_BASE_DOMAIN       tenants are served at <slug>.<base domain> (default localhost)
  --log-level      GATEHOUSE_LOG_LEVEL         debug, info, warn or error (default info)
  --rate-limits    GATEHOUSE_RATE_LIMITS       on (default), or off: no per-IP or per-tenant limits (load tests only)
  --public-url     GATEHOUSE_PUBLIC_URL        tenants' public URL, {tenant} standing for the slug: the token issuer
                                               (default https://{tenant}.<base domain>; http and the port for localhost)
  --smtp-url       GATEHOUSE_SMTP_URL          SMTP server for mail: smtp://user@host:587?tls=starttls|tls|none
                                               (none: loopback only); without it, mail waits in the outbox
                   GATEHOUSE_SMTP_PASSWORD     the SMTP user's password (environment only)
  --mail-from      GATEHOUSE_MAIL_FROM         From address of tenants that set none (default no-reply@<base domain>)
  --spicedb-addr   GATEHOUSE_SPICEDB_ADDR      SpiceDB's gRPC address, host:port (required by serve)
                   GATEHOUSE_SPICEDB_KEY       its preshared key (environment only) …
  --spicedb-key-file GATEHOUSE_SPICEDB_KEY_FILE … or a file holding it
  --spicedb-plaintext GATEHOUSE_SPICEDB_PLAINTEXT=true  no TLS to SpiceDB (loopback only)
  --spicedb-ca-file GATEHOUSE_SPICEDB_CA_FILE  CA certificate(s) for SpiceDB's TLS (default: the system's)
  --check-audit-sample GATEHOUSE_CHECK_AUDIT_SAMPLE  share of check-API decisions audited, 0 to 1 (default 0.01)
  --vault-addr     GATEHOUSE_VAULT_ADDR        Vault's address (e.g. https://vault.internal:8200)
                   GATEHOUSE_VAULT_ROLE_ID     AppRole login for servers (environment only) …
                   GATEHOUSE_VAULT_SECRET_ID   … with its secret id (environment only)
                   GATEHOUSE_VAULT_TOKEN       or a Vault token, for local use and operators' commands
  --vault-token-file GATEHOUSE_VAULT_TOKEN_FILE or a file holding the token (e.g. a Vault Agent sink)
  --vault-kv-mount GATEHOUSE_VAULT_KV_MOUNT    KV v2 mount for tenant secrets (default kv)
  --vault-transit-mount GATEHOUSE_VAULT_TRANSIT_MOUNT  Transit mount for tenant keys (default transit)
`

// config is the process configuration, from flags and GATEHOUSE_* variables.
type config struct {
	DatabaseURL    string
	AppDatabaseURL string
	AppPassword    string
	Addr           string
	BaseDomain     string
	LogLevel       string
	Vault          secrets.Config
	VaultTokenFile string
	PublicURL      string
	// RateLimits off lifts the per-IP and per-tenant limits: for load
	// tests on a local stack only.
	RateLimits string
	// SMTPURL is where mail goes (smtp://user@host:port?tls=...); its
	// password is SMTPPassword, from the environment only.
	SMTPURL      string
	SMTPPassword string
	// MailFrom is the From address of tenants that set none.
	MailFrom string
	// SpiceDB decides permissions; its key comes from the environment
	// or SpiceDBKeyFile.
	SpiceDB        rebac.Config
	SpiceDBKeyFile string
	// CheckAuditSample is the share of check-API decisions audited.
	CheckAuditSample float64
	// MetricsAddr is where Prometheus metrics are served ("" for
	// nowhere).
	MetricsAddr string
	// DBMaxConns bounds the connections the server opens to any one
	// Postgres cluster; DBSharedConns of them, on the primary cluster,
	// are the shared database's and never go to silos.
	DBMaxConns    int
	DBSharedConns int
}

// flags registers the configuration flags on fs, defaulting to the
// environment.
func (c *config) flags(fs *flag.FlagSet) {
	env := func(name, def string) string {
		if v, ok := os.LookupEnv(name); ok {
			return v
		}
		return def
	}
	fs.StringVar(&c.DatabaseURL, "database-url", env("GATEHOUSE_DATABASE_URL", ""), "primary database URL (administrator)")
	fs.StringVar(&c.AppDatabaseURL, "app-database-url", env("GATEHOUSE_APP_DATABASE_URL", ""), "the server's database URL (gatehouse_app)")
	fs.StringVar(&c.Addr, "addr", env("GATEHOUSE_ADDR", "127.0.0.1:8080"), "listen address")
	fs.StringVar(&c.BaseDomain, "base-domain", env("GATEHOUSE_BASE_DOMAIN", "localhost"), "base domain of tenant hosts")
	fs.StringVar(&c.LogLevel, "log-level", env("GATEHOUSE_LOG_LEVEL", "info"), "log level")
	fs.StringVar(&c.RateLimits, "rate-limits", env("GATEHOUSE_RATE_LIMITS", "on"), "on, or off for load tests")
	fs.StringVar(&c.PublicURL, "public-url", env("GATEHOUSE_PUBLIC_URL", ""), "tenants' public URL, {tenant} standing for the slug (token issuer)")
	fs.StringVar(&c.SMTPURL, "smtp-url", env("GATEHOUSE_SMTP_URL", ""), "SMTP server for mail: smtp://user@host:587?tls=starttls|tls|none")
	fs.StringVar(&c.MailFrom, "mail-from", env("GATEHOUSE_MAIL_FROM", ""), "From address of tenants that set none (default no-reply@<base domain>)")
	fs.StringVar(&c.SpiceDB.Addr, "spicedb-addr", env("GATEHOUSE_SPICEDB_ADDR", ""), "SpiceDB's gRPC address, host:port")
	fs.Float64Var(&c.CheckAuditSample, "check-audit-sample", envFloat("GATEHOUSE_CHECK_AUDIT_SAMPLE", 0.01), "share of check-API decisions written to the audit trail, 0 to 1")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", env("GATEHOUSE_METRICS_ADDR", ""), "address to serve Prometheus metrics at /metrics on, e.g. 127.0.0.1:9464 (default: none)")
	fs.IntVar(&c.DBMaxConns, "db-max-conns", envInt("GATEHOUSE_DB_MAX_CONNS", 40), "connections this server opens to one Postgres cluster, at most (see README: several instances)")
	fs.IntVar(&c.DBSharedConns, "db-shared-conns", envInt("GATEHOUSE_DB_SHARED_CONNS", 0), "of --db-max-conns, those kept for the shared database (default half)")
	fs.StringVar(&c.SpiceDBKeyFile, "spicedb-key-file", env("GATEHOUSE_SPICEDB_KEY_FILE", ""), "file holding SpiceDB's preshared key")
	fs.BoolVar(&c.SpiceDB.Plaintext, "spicedb-plaintext", env("GATEHOUSE_SPICEDB_PLAINTEXT", "") == "true", "talk to SpiceDB without TLS (loopback only)")
	fs.StringVar(&c.SpiceDB.CAFile, "spicedb-ca-file", env("GATEHOUSE_SPICEDB_CA_FILE", ""), "CA certificate(s) SpiceDB's TLS certificate is checked against (default: the system's)")
	fs.StringVar(&c.Vault.Addr, "vault-addr", env("GATEHOUSE_VAULT_ADDR", ""), "Vault address")
	fs.StringVar(&c.VaultTokenFile, "vault-token-file", env("GATEHOUSE_VAULT_TOKEN_FILE", ""), "file holding a Vault token")
	fs.StringVar(&c.Vault.KVMount, "vault-kv-mount", env("GATEHOUSE_VAULT_KV_MOUNT", "kv"), "Vault KV v2 mount")
	fs.StringVar(&c.Vault.TransitMount, "vault-transit-mount", env("GATEHOUSE_VAULT_TRANSIT_MOUNT", "transit"), "Vault Transit mount")
	// Credentials come from the environment only: flags show in ps.
	c.AppPassword = os.Getenv("GATEHOUSE_APP_PASSWORD")
	c.SMTPPassword = os.Getenv("GATEHOUSE_SMTP_PASSWORD")
	c.SpiceDB.Key = os.Getenv("GATEHOUSE_SPICEDB_KEY")
	c.Vault.Token = os.Getenv("GATEHOUSE_VAULT_TOKEN")
	c.Vault.RoleID = os.Getenv("GATEHOUSE_VAULT_ROLE_ID")
	c.Vault.SecretID = os.Getenv("GATEHOUSE_VAULT_SECRET_ID")
}

// envFloat reads a number from the environment; a malformed one is left
// to the flag's own check (it becomes the flag's default and is refused
// by serve).
func envFloat(name string, def float64) float64 {
	if v, ok := os.LookupEnv(name); ok {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return f
		}
		return -1
	}
	return def
}

// envInt is envFloat for whole numbers.
func envInt(name string, def int) int {
	if v, ok := os.LookupEnv(name); ok {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
		return -1
	}
	return def
}

// dbBudget checks the connection budget flags and returns the shared
// database's connections (the rest of --db-max-conns on the primary
// cluster go to silos, less the change subscription's one).
func (c *config) dbBudget() (shared int, err error) {
	if c.DBMaxConns < 4 || c.DBMaxConns > 10_000 {
		return 0, problem.Errorf(problem.Invalid, "--db-max-conns must be a number from 4 to 10000")
	}
	shared = c.DBSharedConns
	if shared == 0 {
		shared = c.DBMaxConns / 2
	}
	if shared < 2 || shared > c.DBMaxConns-2 {
		return 0, problem.Errorf(problem.Invalid, "--db-shared-conns must be at least 2 and leave 2 of --db-max-conns to silos")
	}
	return shared, nil
}

// configFrom parses the flags of a command that takes no arguments.
func configFrom(name string, args []string, std stdio) (config, error) {
	var cfg config
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg.flags(fs)
	err := positional(fs, args, std, 0)
	return cfg, err
}

// migrateParallel is how many silos migrate migrates at once by default,
// and maxMigrateParallel the most it will: each holds a connection to its
// silo's cluster.
const (
	migrateParallel    = 8
	maxMigrateParallel = 64
)

func runMigrate(ctx context.Context, args []string, std stdio) error {
	var cfg config
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	cfg.flags(fs)
	parallel := fs.Int("parallel", migrateParallel, fmt.Sprintf("silos migrated at once, 1 to %d (one connection each)", maxMigrateParallel))
	if err := positional(fs, args, std, 0); err != nil {
		return err
	}
	if *parallel < 1 || *parallel > maxMigrateParallel {
		return usageErr("migrate: --parallel must be from 1 to %d, got %d", maxMigrateParallel, *parallel)
	}
	return cfg.migrateWith(ctx, std.out, *parallel)
}

// migrate migrates the primary database and every silo, reporting to out.
func (c *config) migrate(ctx context.Context, out io.Writer) error {
	return c.migrateWith(ctx, out, migrateParallel)
}

// migrateWith is migrate with parallel silos at once.
func (c *config) migrateWith(ctx context.Context, out io.Writer, parallel int) error {
	if err := c.requireDatabase(); err != nil {
		return err
	}
	v, err := c.vault(ctx, nil)
	if err != nil {
		return err
	}
	defer v.Close()
	m := &tenancy.Migrator{Out: out, AppPassword: c.AppPassword, Parallel: parallel}
	return m.All(ctx, c.DatabaseURL, v)
}

// publicURL returns the template of tenants' public URLs (the issuer of
// their tokens): configured, or https://{tenant}.<base domain>, and for
// localhost http with the port the server listens on.
func (c *config) publicURL(listen net.Addr) (string, error) {
	if c.PublicURL != "" {
		u, err := url.Parse(strings.ReplaceAll(c.PublicURL, "{tenant}", "x"))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" || !strings.Contains(c.PublicURL, "{tenant}") {
			return "", problem.Errorf(problem.Invalid, "--public-url must look like https://{tenant}.example.com")
		}
		return c.PublicURL, nil
	}
	if c.BaseDomain == "localhost" {
		_, port, _ := net.SplitHostPort(listen.String())
		return "http://{tenant}.localhost:" + port, nil
	}
	return "https://{tenant}." + c.BaseDomain, nil
}

// issuer returns tenants' issuer URLs for commands that run beside the
// server: the public URL as the server at --addr makes it.
func (c *config) issuer() (func(*tenancy.Tenant) string, error) {
	addr, err := net.ResolveTCPAddr("tcp", c.Addr)
	if err != nil {
		return nil, problem.Errorf(problem.Invalid, "--addr %q is not a host:port", c.Addr)
	}
	tmpl, err := c.publicURL(addr)
	if err != nil {
		return nil, err
	}
	return func(t *tenancy.Tenant) string { return strings.ReplaceAll(tmpl, "{tenant}", t.Slug) }, nil
}

// rateLimits returns the identity rate limits: the defaults, or none at
// all with --rate-limits off.
func (c *config) rateLimits() map[string]identity.Limits {
	if c.RateLimits == "off" {
		return map[string]identity.Limits{}
	}
	return nil // identity's defaults
}

// mailFrom is the From address of tenants that set none.
func (c *config) mailFrom() string {
	if c.MailFrom != "" {
		return c.MailFrom
	}
	if c.BaseDomain == "localhost" {
		return "no-reply@gatehouse.localhost"
	}
	return "no-reply@" + c.BaseDomain
}

// spicedb connects to SpiceDB as configured.
func (c *config) spicedb() (*rebac.Client, error) {
	sc := c.SpiceDB
	if c.SpiceDBKeyFile != "" {
		b, err := os.ReadFile(c.SpiceDBKeyFile)
		if err != nil {
			return nil, problem.Errorf(problem.Invalid, "cannot read the SpiceDB key file %s", c.SpiceDBKeyFile)
		}
		sc.Key = strings.TrimSpace(string(b))
	}
	client, err := rebac.Connect(sc)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "SpiceDB: "+problem.MessageOf(err)+" (--spicedb-addr, GATEHOUSE_SPICEDB_KEY)")
	}
	return client, nil
}

// vault connects to Vault as configured.
func (c *config) vault(ctx context.Context, log *slog.Logger) (*secrets.Vault, error) {
	vc := c.Vault
	if c.VaultTokenFile != "" {
		b, err := os.ReadFile(c.VaultTokenFile)
		if err != nil {
			return nil, problem.Errorf(problem.Invalid, "cannot read the Vault token file %s", c.VaultTokenFile)
		}
		vc.Token = strings.TrimSpace(string(b))
	}
	return secrets.Connect(ctx, vc, log)
}

func (c *config) requireDatabase() error {
	if c.DatabaseURL == "" {
		return problem.Errorf(problem.Invalid, "no database: set GATEHOUSE_DATABASE_URL or --database-url")
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return problem.Errorf(problem.Invalid, "the database URL must be a postgres:// URL")
	}
	return nil
}

// appDatabaseURL is the server's connection: configured, or the primary URL
// with gatehouse_app's credentials.
func (c *config) appDatabaseURL() (string, error) {
	if c.AppDatabaseURL != "" {
		return c.AppDatabaseURL, nil
	}
	return tenancy.AppURL(c.DatabaseURL, c.AppPassword)
}

func (c *config) logger(w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

type command func(ctx context.Context, args []string, stdio stdio) error

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

var commands = map[string]command{
	"serve":    runServe,
	"migrate":  runMigrate,
	"dev":      runDev,
	"tenant":   runTenant,
	"keys":     runKeys,
	"audit":    runAudit,
	"rebac":    runRebac,
	"operator": runOperator,
	"app":      runApp,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit status: 0 success,
// 1 failure, 2 usage error.
func run(ctx context.Context, args []string, std stdio) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(std.out, usage)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(std.err, "gatehouse: unknown command %q (commands: %s; see gatehouse help)\n", args[0], strings.Join(names, ", "))
		return 2
	}
	err := cmd(ctx, args[1:], std)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(std.err, "gatehouse: %v\n", err)
		return 2
	}
	if problem.CodeOf(err) == problem.Internal {
		// Operators see the cause; errors carry no secrets by convention.
		fmt.Fprintf(std.err, "gatehouse: %v\n", err)
	} else {
		fmt.Fprintf(std.err, "gatehouse: %s\n", problem.MessageOf(err))
	}
	return 1
}

var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// parse parses a subcommand's flags, which may come before or after its
// positional arguments, and returns the positional ones.
func parse(fs *flag.FlagSet, args []string, std stdio) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(std.out)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, usageErr("%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
