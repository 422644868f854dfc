package tenancy_test

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// env is one test's Gatehouse: a migrated primary database of its own, the
// operator's registry on it, and tenant data access as gatehouse_app.
type env struct {
	db    *pgtest.DB
	admin *pgxpool.Pool // superuser
	app   *pgxpool.Pool // gatehouse_app
	vault *secrets.Vault
	reg   *tenancy.Registry
	silos *tenancy.SiloPools
	data  *tenancy.DB
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, pgtest.NewPrimary(t))
}

// newEnvOn is newEnv on a primary database of the test's choosing.
func newEnvOn(t testing.TB, db *pgtest.DB) *env {
	t.Helper()
	e := &env{db: db, admin: pgtest.Pool(t, db.AdminURL, 4), app: pgtest.Pool(t, db.AppURL, 4)}
	e.vault = vaulttest.Shared(t).Connect(t)
	e.reg = tenancy.NewRegistry(e.admin, db.AdminURL, "localhost", e.vault, &tenancy.Migrator{})
	e.silos = tenancy.NewSiloPools(e.vault, tenancy.SiloPoolOptions{})
	t.Cleanup(e.silos.Close)
	e.data = tenancy.NewDB(e.app, e.silos)
	return e
}

// tenant creates a tenant; silo tenants get a database on the second
// cluster, so that tests cover a silo on another cluster than the primary.
func (e *env) tenant(t testing.TB, slug string, placement tenancy.Placement) *tenancy.Tenant {
	t.Helper()
	p := tenancy.CreateParams{Slug: slug, Name: "Tenant " + slug, Placement: placement}
	if placement == tenancy.Silo {
		p.SiloCluster = pgtest.Second(t).URL("postgres")
	}
	tn, err := e.reg.Create(context.Background(), p)
	if err != nil {
		t.Fatalf("create tenant %s: %v", slug, err)
	}
	return tn
}

// siloDSN returns the connection string of silo tenant tn's database for
// role, from Vault.
func (e *env) siloDSN(t testing.TB, tn *tenancy.Tenant, role tenancy.Role) string {
	t.Helper()
	dsn, err := e.vault.SiloDSN(context.Background(), tn.ID, tn.SiloRef, role)
	if err != nil {
		t.Fatalf("silo dsn of %s: %v", tn.Slug, err)
	}
	return dsn
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
