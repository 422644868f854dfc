package tenancy_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// siloConns counts the open connections to the databases of silos.
func siloConns(t *testing.T, admin *pgxpool.Pool, silos []*tenancy.Tenant) int {
	t.Helper()
	names := make([]string, len(silos))
	for i, s := range silos {
		names[i] = "gatehouse_" + strings.ReplaceAll(s.ID.String(), "-", "")
	}
	var n int
	if err := admin.QueryRow(context.Background(),
		"select count(*) from pg_stat_activity where datname = any($1)", names).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// mostSiloConns samples siloConns until stop is closed, and reports the
// most seen in two samples running: a backend outlives its closed
// connection for a moment (longer on a loaded machine), so one sample
// over the budget may be a connection already given back; two running
// are not.
func mostSiloConns(t *testing.T, admin *pgxpool.Pool, silos []*tenancy.Tenant, stop <-chan struct{}) <-chan int {
	most := make(chan int, 1)
	go func() {
		m, last := 0, 0
		for {
			select {
			case <-stop:
				most <- m
				return
			default:
			}
			n := siloConns(t, admin, silos)
			m, last = max(m, min(n, last)), n
		}
	}()
	return most
}

// siloTenants creates n silo tenants named prefix-0… on the second cluster.
func (e *env) siloTenants(t *testing.T, prefix string, n int) []*tenancy.Tenant {
	t.Helper()
	silos := make([]*tenancy.Tenant, n)
	for i := range silos {
		silos[i] = e.tenant(t, fmt.Sprintf("%s-%d", prefix, i), tenancy.Silo)
	}
	return silos
}

// busy runs one short transaction on tenant tn.
func busy(ctx context.Context, db *tenancy.DB, tn *tenancy.Tenant) error {
	return db.RawTx(ctx, tn, func(tx queries.DBTX) error {
		_, err := tx.Exec(ctx, "select pg_sleep(0.005)")
		return err
	})
}

func TestSiloPoolsKeepToTheClusterBudget(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	silos := e.siloTenants(t, "budget", 8)
	const budget = 3
	pools := tenancy.NewSiloPools(e.vault, tenancy.SiloPoolOptions{MaxConns: 2, ClusterConns: budget, Wait: 5 * time.Second})
	t.Cleanup(pools.Close)
	db := tenancy.NewDB(e.app, pools)
	counter := pgtest.Pool(t, pgtest.Second(t).URL("postgres"), 1)

	// Every silo at once, many times over: all of them are served, and
	// never by more than the budget's connections.
	stop := make(chan struct{})
	most := mostSiloConns(t, counter, silos, stop)
	var wg sync.WaitGroup
	errs := make(chan error, 8*40)
	for w := range 40 {
		wg.Go(func() {
			for i := range 8 {
				if err := busy(ctx, db, silos[(w+i)%len(silos)]); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Errorf("silo transaction under the budget failed: %v", err)
	}
	if m := <-most; m > budget || m == 0 {
		t.Fatalf("at most %d connections to the silos were open, want 1..%d", m, budget)
	}
}

func TestSpentBudgetWaitsThenAnswers503(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	silos := e.siloTenants(t, "spent", 3)
	pools := tenancy.NewSiloPools(e.vault, tenancy.SiloPoolOptions{MaxConns: 2, ClusterConns: 2, Wait: 300 * time.Millisecond})
	t.Cleanup(pools.Close)
	db := tenancy.NewDB(e.app, pools)

	// Two silos hold the budget's two connections in open transactions.
	held := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range silos[:2] {
		wg.Go(func() {
			err := db.RawTx(ctx, s, func(tx queries.DBTX) error {
				if _, err := tx.Exec(ctx, "select 1"); err != nil {
					return err
				}
				held <- struct{}{}
				<-release
				return nil
			})
			if err != nil {
				t.Errorf("holding %s: %v", s.Slug, err)
			}
		})
	}
	<-held
	<-held
	start := time.Now()
	err := busy(ctx, db, silos[2])
	waited := time.Since(start)
	if problem.CodeOf(err) != problem.Unavailable || problem.RetryAfterOf(err) <= 0 {
		t.Fatalf("third silo with the budget spent: %v, want 503 with Retry-After", err)
	}
	if waited < 300*time.Millisecond {
		t.Fatalf("refused after %v, want a wait of the budget's 300ms first", waited)
	}
	// Once the two are done, their idle connections make room: the
	// third silo is served although the budget is still two.
	close(release)
	wg.Wait()
	if err := busy(ctx, db, silos[2]); err != nil {
		t.Fatalf("third silo once the others idle: %v", err)
	}
	if n := siloConns(t, pgtest.Pool(t, pgtest.Second(t).URL("postgres"), 1), silos); n > 2 {
		t.Fatalf("%d connections to the silos, want at most 2", n)
	}
}

func TestSiloTrafficLeavesTheSharedPoolItsReserve(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var silos []*tenancy.Tenant
	for i := range 4 {
		tn, err := e.reg.Create(ctx, tenancy.CreateParams{Slug: fmt.Sprintf("floor-%d", i), Name: "Floor", Placement: tenancy.Silo})
		if err != nil {
			t.Fatal(err)
		}
		silos = append(silos, tn) // on the primary's cluster
	}
	shared := e.tenant(t, "floor-shared", tenancy.Shared)
	primary, err := tenancy.ClusterOf(e.db.AppURL)
	if err != nil {
		t.Fatal(err)
	}
	// Five connections to the primary's cluster, four of them the shared
	// pool's: silos get one.
	pools := tenancy.NewSiloPools(e.vault, tenancy.SiloPoolOptions{
		MaxConns: 2, ClusterConns: 5, Reserve: map[string]int{primary: 4}, Wait: 5 * time.Second,
	})
	t.Cleanup(pools.Close)
	db := tenancy.NewDB(e.app, pools)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	most := mostSiloConns(t, pgtest.Pool(t, e.db.AdminURL, 1), silos, stop)
	for w := range 12 {
		wg.Go(func() {
			for i := range 5 {
				if err := busy(ctx, db, silos[(w+i)%len(silos)]); err != nil {
					t.Errorf("silo: %v", err)
				}
			}
		})
	}
	// The shared tenant meanwhile is served at once, from its own pool.
	for range 20 {
		start := time.Now()
		err := db.Tx(ctx, shared, func(q *queries.Queries) error {
			_, err := q.CountUsers(ctx, shared.ID.UUID())
			return err
		})
		if err != nil {
			t.Fatalf("shared tenant beside busy silos: %v", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("shared tenant waited %v beside busy silos", d)
		}
	}
	wg.Wait()
	close(stop)
	if m := <-most; m != 1 {
		t.Fatalf("silos on the primary's cluster held up to %d connections, want 1 (5 less the shared pool's 4)", m)
	}
}

func TestSweepsAskColdSilosSparingly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	silos := e.siloTenants(t, "sweep", 3)
	pools := tenancy.NewSiloPools(e.vault, tenancy.SiloPoolOptions{})
	t.Cleanup(pools.Close)
	db := tenancy.NewDB(e.app, pools)
	const yes = "select $1::uuid is not null"
	which := func() int {
		t.Helper()
		found, err := db.Which(ctx, silos, yes)
		if err != nil {
			t.Fatal(err)
		}
		return len(found)
	}
	if n := which(); n != 3 {
		t.Fatalf("first sweep asked %d silos, want 3", n)
	}
	if n := which(); n != 3 {
		t.Fatalf("a sweep asked %d silos this server holds connections to, want all 3", n)
	}
	// Cold silos (no connection held: no traffic of late) were asked a
	// moment ago: a sweep every few seconds does not open a connection to
	// each of them again.
	for _, s := range silos {
		pools.Forget(s.ID)
	}
	if n := which(); n != 0 {
		t.Fatalf("a sweep right after asked %d cold silos again, want 0", n)
	}
	if n := pools.Open(); n != 0 {
		t.Fatalf("the sweep opened %d silo pools", n)
	}
	// Another query has its own memory.
	if found, err := db.Which(ctx, silos, yes+" and true"); err != nil || len(found) != 3 {
		t.Fatalf("another query's first sweep found %d (%v), want 3", len(found), err)
	}
}
