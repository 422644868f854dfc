package tenancy_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMigrateIsIdempotentAndSerialised(t *testing.T) {
	t.Parallel()
	c := pgtest.Primary(t)
	db := c.NewDatabase(t, "")
	ctx := context.Background()

	// Two processes' worth of migrators at once: the advisory lock makes one
	// wait, and it then finds nothing to do.
	var wg sync.WaitGroup
	outs := make([]bytes.Buffer, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			errs[i] = (&tenancy.Migrator{Out: &outs[i]}).Primary(ctx, c.URL(db))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
	}
	both := outs[0].String() + outs[1].String()
	if n := strings.Count(both, "applied control migration 00001_tenants.sql"); n != 1 {
		t.Fatalf("control migration applied %d times, want once:\n%s", n, both)
	}
	if n := strings.Count(both, "migrations up to date"); n != 2 {
		t.Fatalf("want the second migrator to find both sets up to date:\n%s", both)
	}

	var again bytes.Buffer
	if err := (&tenancy.Migrator{Out: &again}).Primary(ctx, c.URL(db)); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(again.String(), "applied") {
		t.Fatalf("third run applied something:\n%s", again.String())
	}
	app := pgtest.Pool(t, c.AppURL(db), 2)
	if err := tenancy.SchemaCurrent(ctx, app, true); err != nil {
		t.Fatalf("SchemaCurrent as gatehouse_app after migrate: %v", err)
	}
}

func TestSchemaCurrentReportsMissingMigrations(t *testing.T) {
	t.Parallel()
	c := pgtest.Primary(t)
	db := c.NewDatabase(t, "")
	pool := pgtest.Pool(t, c.URL(db), 2)
	ctx := context.Background()
	if err := tenancy.SchemaCurrent(ctx, pool, true); err == nil {
		t.Fatal("SchemaCurrent on an empty database = nil, want an error")
	}
	if err := (&tenancy.Migrator{}).Silo(ctx, c.URL(db), "silo"); err != nil {
		t.Fatal(err)
	}
	if err := tenancy.SchemaCurrent(ctx, pool, false); err != nil {
		t.Fatalf("silo schema current: %v", err)
	}
	if err := tenancy.SchemaCurrent(ctx, pool, true); err == nil {
		t.Fatal("a silo has no control plane, yet SchemaCurrent(wantControl) = nil")
	}
}

func TestMigrateRestoresAppRoleRestrictions(t *testing.T) {
	// Not parallel: it loosens a cluster-wide role for a moment.
	c := pgtest.Second(t)
	db := c.NewDatabase(t, "")
	ctx := context.Background()
	if err := (&tenancy.Migrator{}).Primary(ctx, c.URL(db)); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, db, "alter role gatehouse_app bypassrls createdb")
	var out bytes.Buffer
	if err := (&tenancy.Migrator{Out: &out}).Primary(ctx, c.URL(db)); err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t, c.URL(db), 1)
	var bypass, createdb bool
	if err := pool.QueryRow(ctx, "select rolbypassrls, rolcreatedb from pg_roles where rolname = 'gatehouse_app'").Scan(&bypass, &createdb); err != nil {
		t.Fatal(err)
	}
	if bypass || createdb {
		t.Fatalf("after migrate: bypassrls=%v createdb=%v, want both false", bypass, createdb)
	}
	if !strings.Contains(out.String(), "restored the restrictions") {
		t.Fatalf("migrate did not say it restored the role:\n%s", out.String())
	}
}
