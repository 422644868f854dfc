// Package apptest puts Gatehouse together for a test the way the server
// does (app.New), on real components: a primary database of the test's
// own, and the shared Vault, SpiceDB and mail catcher (with a SpiceDB
// datastore of the test's own). Its background work runs until the test
// ends, and its HTTP server is driven in process.
package apptest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/identity/mail/mailtest"
	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// Env is one test's Gatehouse.
type Env struct {
	*app.App
	DB       *pgtest.DB
	Admin    *pgxpool.Pool // superuser on the primary database
	Registry *tenancy.Registry
	Vault    *secrets.Vault
	SpiceDB  *rebac.Client // the env's own datastore
	Mail     *mailtest.Server
	Metrics  *prometheus.Registry
	HTTP     *fiber.App // the server, for app.Test
}

// Options change an Env.
type Options struct {
	// Config changes the app's configuration before it is made.
	Config func(*app.Config)
	// Mail and SpiceDB replace the shared servers.
	Mail    *mailtest.Server
	SpiceDB *spicedbtest.Server
	// Log receives what the app and its server log; nil discards it.
	Log *slog.Logger
	// Caching runs the resolver's change subscription, so that it caches
	// tenants as a server does. Off, every request reads its tenant
	// afresh, and a test sees a change of a tenant at once.
	Caching bool
}

// TestHash keeps argon2id cheap in tests of other things (the hasher is
// tested at its real cost in package identity).
var TestHash = identity.HashParams{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

// Issuer is the token issuer of an env's tenants.
func Issuer(t *tenancy.Tenant) string { return "https://" + t.Slug + ".gatehouse.test" }

// RoomyLimits keep rate limiting out of tests about other things.
func RoomyLimits() map[string]identity.Limits {
	roomy := map[string]identity.Limits{}
	for action := range identity.DefaultLimits {
		roomy[action] = identity.Limits{
			PerIP:     identity.Limit{Requests: 10_000, Window: time.Minute},
			PerTenant: identity.Limit{Requests: 10_000, Window: time.Minute},
		}
	}
	return roomy
}

// New returns a running Env, stopped when the test ends.
func New(t testing.TB, o Options) *Env {
	t.Helper()
	db := pgtest.NewPrimary(t)
	e := &Env{DB: db, Admin: pgtest.Pool(t, db.AdminURL, 4), Vault: vaulttest.Shared(t).Connect(t), Metrics: prometheus.NewRegistry()}
	e.Registry = tenancy.NewRegistry(e.Admin, db.AdminURL, "localhost", e.Vault, &tenancy.Migrator{})
	e.Mail = o.Mail
	if e.Mail == nil {
		e.Mail = mailtest.Shared(t)
	}
	spicedb := o.SpiceDB
	if spicedb == nil {
		spicedb = spicedbtest.Shared(t)
	}
	e.SpiceDB = spicedb.Connect(t)
	cfg := app.Config{
		DatabaseURL:      db.AppURL,
		BaseDomain:       "localhost",
		Issuer:           Issuer,
		Vault:            e.Vault,
		SpiceDB:          e.SpiceDB,
		SMTP:             mail.NewSMTP(e.Mail.Config()),
		MailFrom:         "no-reply@gatehouse.test",
		Limits:           RoomyLimits(),
		Hash:             TestHash,
		HashWait:         5 * time.Second,
		MaxConns:         24,
		SharedConns:      12,
		CheckAuditSample: 1,
		Metrics:          e.Metrics,
		Sweep:            200 * time.Millisecond,
		Backoff:          100 * time.Millisecond,
		Uncached:         !o.Caching,
		Log:              o.Log,
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	a, err := app.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("app: %v", err)
	}
	e.App = a
	ctx, stop := context.WithCancel(context.Background())
	running := make(chan struct{})
	go func() { a.Run(ctx); close(running) }()
	t.Cleanup(func() { stop(); <-running; a.Close() })
	if o.Caching {
		deadline := time.Now().Add(10 * time.Second)
		for !a.Resolver.Listening() {
			if time.Now().After(deadline) {
				t.Fatal("the resolver's change subscription did not start in 10s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e.HTTP = server.New(server.Config{}, server.Deps{Log: log, Resolver: a.Resolver, Routes: a.Routes()}).App()
	return e
}
