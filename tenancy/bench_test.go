package tenancy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// BenchmarkTx compares one indexed read through DB.Tx with the same read in
// a plain transaction on the same pool (the baseline), and with the naive
// scoping that sends set_config as a statement of its own. Each iteration
// runs all three, so drift hits them alike.
func BenchmarkTx(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	tn := e.tenant(b, "bench", tenancy.Shared)
	var user queries.AppUser
	err := e.data.Tx(ctx, tn, func(q *queries.Queries) (err error) {
		for i := range 1000 {
			u, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: fmt.Sprintf("u%d@bench.test", i)})
			if err != nil {
				return err
			}
			user = u
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	pool := pgtest.Pool(b, e.db.AppURL, 1) // one connection: no pool contention in the numbers
	db := tenancy.NewDB(pool, nil)
	arg := queries.GetUserParams{TenantID: tn.ID.UUID(), ID: user.ID}
	read := func(q *queries.Queries) error {
		u, err := q.GetUser(ctx, arg)
		if err == nil && u.ID != user.ID {
			err = fmt.Errorf("read the wrong user")
		}
		return err
	}
	scoped := func() error { return db.Tx(ctx, tn, read) }
	plain := func() error {
		// The baseline: no tenant scoping at all. As gatehouse_app it would
		// see nothing, so it runs with the tenant set on the session once,
		// which production code must never do.
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return read(queries.New(tx)) })
	}
	naive := func() error {
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "select set_config('gatehouse.tenant_id', $1, true)", tn.ID.String()); err != nil {
				return err
			}
			return read(queries.New(tx))
		})
	}
	if _, err := pool.Exec(ctx, "select set_config('gatehouse.tenant_id', $1, false)", tn.ID.String()); err != nil {
		b.Fatal(err)
	}
	var dScoped, dPlain, dNaive time.Duration
	timed := func(d *time.Duration, fn func() error) {
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		*d += time.Since(start)
	}
	for b.Loop() {
		timed(&dPlain, plain)
		timed(&dScoped, scoped)
		timed(&dNaive, naive)
	}
	n := float64(b.N)
	b.ReportMetric(float64(dScoped.Nanoseconds())/n, "ns/tx")
	b.ReportMetric(float64(dPlain.Nanoseconds())/n, "ns/plain-tx")
	b.ReportMetric(float64(dScoped)/float64(dPlain), "x-baseline")
	b.ReportMetric(float64(dNaive)/float64(dPlain), "x-baseline-naive")
}

// BenchmarkResolve measures a cached resolution, with the uncached lookup
// (one control-plane query) as the baseline.
func BenchmarkResolve(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	e.tenant(b, "acme", tenancy.Shared)
	cached := tenancy.NewResolver(e.app, "localhost", quietLog())
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cached.Run(runCtx)
	for !cached.Listening() {
		time.Sleep(time.Millisecond)
	}
	uncached := tenancy.NewResolver(e.app, "localhost", quietLog()) // never subscribed: no cache
	const baselineRuns = 500
	start := time.Now()
	for range baselineRuns {
		if _, err := uncached.Resolve(ctx, "acme.localhost:8080"); err != nil {
			b.Fatal(err)
		}
	}
	baseline := time.Since(start) / baselineRuns
	b.ResetTimer()
	for b.Loop() {
		if _, err := cached.Resolve(ctx, "acme.localhost:8080"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(baseline.Nanoseconds()), "ns/uncached")
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(baseline), "x-baseline")
}
