// Package app puts Gatehouse together, once: the tenant data access, the
// resolver, the secrets, the identity and permission services and their
// relays, wired the same way for the server (gatehouse serve), for the
// operator's commands and for tests (package apptest). A change of wiring
// made here reaches all three.
package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Config is what an App is made of. The connections it is given (Vault,
// SpiceDB, SMTP) stay the caller's to close.
type Config struct {
	// DatabaseURL is the primary database as gatehouse_app.
	DatabaseURL string
	// BaseDomain is where <slug>. hosts resolve.
	BaseDomain string
	// Issuer names a tenant's token issuer (and audience).
	Issuer func(*tenancy.Tenant) string
	// Vault keeps tenants' keys and silo credentials.
	Vault *secrets.Vault
	// Generations tells the sealer tenants' key generations; default the
	// control plane read through DatabaseURL.
	Generations secrets.Generations
	// SpiceDB decides permissions; nil records permission changes only
	// (operators' commands: the servers' relays carry them, and every
	// check delivers what waits first).
	SpiceDB *rebac.Client
	// SMTP sends mail; nil leaves it in the outboxes.
	SMTP mail.Sender
	// MailFrom is the From address of tenants that set none.
	MailFrom string
	// Limits are the abuse limits per action; nil the defaults.
	Limits map[string]identity.Limits
	// Hash is the password hashing cost (default identity's), on
	// HashWorkers workers (0: one per CPU), refusing a wait over HashWait
	// (default 2s).
	Hash        identity.HashParams
	HashWorkers int
	HashWait    time.Duration
	// MaxConns bounds the connections opened to any one Postgres
	// cluster; SharedConns of them (default half) are the shared
	// database's pool. Default 40.
	MaxConns, SharedConns int
	// CheckAuditSample is the share of check-API decisions audited.
	CheckAuditSample float64
	// Metrics receives the app's metrics; nil for none.
	Metrics prometheus.Registerer
	// Sweep and Backoff tune the relays (tests make them quick); zero
	// values take the relays' defaults.
	Sweep, Backoff time.Duration
	// Uncached runs no change subscription, so the resolver caches
	// nothing and every request reads its tenant afresh: for tests that
	// change tenants and look at once.
	Uncached bool
	Log      *slog.Logger
}

// App is Gatehouse put together. Run starts its background work; Close
// releases what New opened.
type App struct {
	Pool     *pgxpool.Pool // the shared database, as gatehouse_app
	Silos    *tenancy.SiloPools
	Data     *tenancy.DB
	Sealer   *secrets.Sealer
	Keys     *identity.Keys
	Outbox   *mail.Outbox
	Resolver *tenancy.Resolver
	Relay    *rebac.Relay
	Authz    *rebac.Service
	Accounts *identity.Service

	cfg       Config
	mailRelay *mail.Relay // nil without SMTP
	closeOnce sync.Once
}

// New puts an App together. It connects nothing yet: the first request
// does. Returns Invalid for a configuration that cannot work.
func New(ctx context.Context, cfg Config) (*App, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Vault == nil || cfg.Issuer == nil {
		return nil, errors.New("app: Vault and Issuer are required")
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 40
	}
	if cfg.SharedConns == 0 {
		cfg.SharedConns = cfg.MaxConns / 2
	}
	if cfg.SharedConns < 2 || cfg.SharedConns > cfg.MaxConns-2 {
		return nil, problem.Errorf(problem.Invalid, "the shared database needs at least 2 of the connection budget, and silos 2")
	}
	if cfg.Hash == (identity.HashParams{}) {
		cfg.Hash = identity.DefaultHashParams
	}
	if cfg.HashWait == 0 {
		cfg.HashWait = 2 * time.Second
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, problem.Errorf(problem.Invalid, "the app database URL is malformed")
	}
	poolCfg.MaxConns = int32(cfg.SharedConns)
	primary, err := tenancy.ClusterOf(cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, err
	}
	a := &App{Pool: pool, cfg: cfg}
	// The change subscription holds one connection beside the shared
	// pool's.
	a.Silos = tenancy.NewSiloPools(cfg.Vault, tenancy.SiloPoolOptions{
		ClusterConns: cfg.MaxConns, Reserve: map[string]int{primary: cfg.SharedConns + 1},
	})
	a.Data = tenancy.NewDB(pool, a.Silos)
	if cfg.Generations == nil {
		cfg.Generations = secrets.ControlPlane(pool)
	}
	a.Sealer = secrets.NewSealer(cfg.Vault, cfg.Generations, secrets.SealerOptions{})
	a.Keys = identity.NewKeys(a.Data, a.Sealer, secrets.AAD)
	a.Outbox = mail.NewOutbox(a.Sealer, secrets.AAD)
	a.Resolver = tenancy.NewResolver(pool, cfg.BaseDomain, cfg.Log)
	a.Data.Relocated = a.Resolver.ByID
	// A tenant that changed may have moved, rotated keys or been
	// deleted: drop what is kept of it; the next request loads it afresh.
	a.Resolver.OnChange = func(id tenancy.ID) {
		a.Silos.Forget(id)
		a.Sealer.Forget(id)
		a.Keys.Forget(id)
		a.Accounts.ForgetClients(id)
	}
	a.Resolver.OnResync = func() {
		a.Keys.ForgetAll()
		a.Accounts.ForgetAllClients()
	}
	relayOpts := rebac.RelayOptions{Sweep: cfg.Sweep, Backoff: cfg.Backoff, Log: cfg.Log}
	if cfg.SpiceDB != nil {
		a.Relay = rebac.NewRelay(a.Data, a.Resolver.Live, cfg.SpiceDB, relayOpts)
	}
	a.Authz = rebac.NewService(a.Data, cfg.SpiceDB, a.Relay, cfg.Log)
	a.Accounts = identity.NewService(a.Data, identity.NewHasher(cfg.Hash, cfg.HashWorkers, cfg.HashWait), a.Keys, identity.Config{
		Issuer:     cfg.Issuer,
		Limits:     cfg.Limits,
		Outbox:     a.Outbox,
		MailFrom:   cfg.MailFrom,
		Authorizer: a.Authz,
	})
	if cfg.SMTP != nil {
		a.mailRelay = mail.NewRelay(a.Data, a.Resolver.Live, a.Outbox, cfg.SMTP,
			mail.RelayOptions{Sweep: cfg.Sweep, Backoff: cfg.Backoff, Log: cfg.Log})
	}
	return a, nil
}

// Routes are the tenant endpoints of every domain, for server.Deps.
func (a *App) Routes() []func(fiber.Router) {
	var metrics *rebac.Metrics
	if a.cfg.Metrics != nil {
		metrics = rebac.NewMetrics(a.cfg.Metrics)
	}
	accounts := identity.NewHTTP(a.Accounts)
	checks := rebac.NewHTTP(a.Authz, a.Accounts, accounts, rebac.HTTPOptions{AuditSample: a.cfg.CheckAuditSample, Metrics: metrics})
	return []func(fiber.Router){accounts.Routes, checks.Routes}
}

// Run does the app's background work until ctx ends, and returns once
// all of it has stopped: the resolver's change subscription, the relays
// (relationships to SpiceDB, mail to SMTP), the purge of deleted tenants'
// relationships, and, with SpiceDB, applying the permission schema.
func (a *App) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if !a.cfg.Uncached {
		wg.Go(func() { a.Resolver.Run(ctx) })
	}
	if a.Relay != nil {
		// Relationships are delivered once the schema that takes them is
		// in place: after an upgrade, queued ones may name what only the
		// new schema has.
		wg.Go(func() {
			ensureSchema(ctx, a.cfg.SpiceDB, a.cfg.Log)
			if ctx.Err() == nil {
				a.Relay.Run(ctx)
			}
		})
		wg.Go(func() { rebac.NewPurger(a.Pool, a.cfg.SpiceDB, a.cfg.Log).Run(ctx, time.Minute) })
	}
	if a.mailRelay != nil {
		wg.Go(func() { a.mailRelay.Run(ctx) })
	}
	wg.Wait()
}

// Close releases what New opened. Stop Run first.
func (a *App) Close() {
	a.closeOnce.Do(func() {
		a.Silos.Close()
		a.Sealer.Close()
		a.Pool.Close()
	})
}

// ensureSchema applies the permission schema, retrying while SpiceDB is
// unreachable: until then permission checks answer 503.
func ensureSchema(ctx context.Context, c *rebac.Client, log *slog.Logger) {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		wrote, err := c.EnsureSchema(ctx)
		if err == nil {
			if wrote {
				log.Info("applied the permission schema to SpiceDB")
			}
			return
		}
		log.Warn("cannot apply the permission schema to SpiceDB; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}
