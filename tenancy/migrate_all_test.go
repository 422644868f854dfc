package tenancy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/migrations"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// siloPassword is in the administrator URL of the silos these tests make:
// the clusters trust loopback, so it is never checked, only carried, and
// must never be shown.
const siloPassword = "hunter2-silo-admin"

// fleet is silo tenants whose migrations are behind, for Migrator.All.
type fleet struct {
	e      *env
	silos  []*tenancy.Tenant
	dbs    []string // database of each silo
	latest int64    // the tenant migrations' latest version
}

// newFleet creates n silo tenants on the second cluster, named
// prefix-01…, and moves each but those in current back to tenant
// migration 10.
func newFleet(t *testing.T, prefix string, n int, current ...int) *fleet {
	t.Helper()
	ctx := context.Background()
	f := &fleet{e: newEnv(t)}
	cluster, err := url.Parse(pgtest.Second(t).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cluster.User = url.UserPassword("postgres", siloPassword)
	for i := range n {
		tn, err := f.e.reg.Create(ctx, tenancy.CreateParams{
			Slug: fmt.Sprintf("%s-%02d", prefix, i+1), Name: "Fleet", Placement: tenancy.Silo, SiloCluster: cluster.String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		dsn := f.e.siloDSN(t, tn, tenancy.AdminRole)
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		f.silos = append(f.silos, tn)
		f.dbs = append(f.dbs, strings.TrimPrefix(u.Path, "/"))
		f.latest = f.version(t, i)
		if !slices.Contains(current, i) {
			p := pgtest.Migrations(t, dsn, migrations.Tenant(), "gatehouse.tenant_migrations")
			if _, err := p.DownTo(ctx, 10); err != nil {
				t.Fatal(err)
			}
			// Its connection must not count as one of the migrator's.
			p.Close()
		}
	}
	return f
}

// version returns silo i's tenant migration version.
func (f *fleet) version(t *testing.T, i int) int64 {
	t.Helper()
	conn := pgtest.Pool(t, pgtest.Second(t).URL(f.dbs[i]), 1)
	defer conn.Close()
	var v int64
	if err := conn.QueryRow(context.Background(),
		"select coalesce(max(version_id), 0) from gatehouse.tenant_migrations where is_applied").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// watch samples the fleet's databases until the returned function is
// called, which returns the most migrations seen running at once and the
// most connections seen to any one database. A migration running is a
// session holding its database's migration lock and busy (not idle):
// a closed session's backend stays in pg_stat_activity, idle and still
// holding its lock, for a moment after its client has gone and the next
// silo's session has come, and would count twice.
func (f *fleet) watch(t *testing.T) func() (migrations, conns int64) {
	t.Helper()
	counter := pgtest.Pool(t, pgtest.Second(t).URL("postgres"), 1)
	var mostMigrations, mostConns int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			var m, c int64
			err := counter.QueryRow(context.Background(), `select
				(select count(*) from pg_stat_activity a where a.datname = any($1) and a.state <> 'idle'
					and exists (select from pg_locks l where l.pid = a.pid and l.locktype = 'advisory' and l.granted)),
				(select coalesce(max(n), 0) from (select count(*) as n from pg_stat_activity
					where datname = any($1) group by datname) as per_db)`, f.dbs).Scan(&m, &c)
			if err != nil {
				t.Error(err)
				return
			}
			mostMigrations, mostConns = max(mostMigrations, m), max(mostConns, c)
		}
	}()
	return func() (int64, int64) {
		close(stop)
		<-stopped
		return mostMigrations, mostConns
	}
}

var progressLine = regexp.MustCompile(`(?m)^silo (\S+): (migrated to version (\d+)|already current at version (\d+)|failed) \((\d+)/(\d+)\)`)

// progress returns the outcome and the k of "(k/n)" that out reports for
// each silo, failing the test if one is reported twice.
func progress(t *testing.T, out string) map[string]struct {
	outcome string
	k, n    int
} {
	t.Helper()
	got := map[string]struct {
		outcome string
		k, n    int
	}{}
	for _, m := range progressLine.FindAllStringSubmatch(out, -1) {
		if _, dup := got[m[1]]; dup {
			t.Fatalf("silo %s reported twice:\n%s", m[1], out)
		}
		k, _ := strconv.Atoi(m[5])
		n, _ := strconv.Atoi(m[6])
		got[m[1]] = struct {
			outcome string
			k, n    int
		}{m[2], k, n}
	}
	return got
}

func TestMigrateAllRunsSilosInParallelWithinItsBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const n, parallel, broken, current = 12, 3, 6, 11
	f := newFleet(t, "fleet", n, current)
	// A silo whose database is gone fails; the others do not care.
	pgtest.Second(t).Exec(t, "postgres", "drop database "+f.dbs[broken]+" with (force)")

	var out bytes.Buffer
	watch := f.watch(t)
	err := (&tenancy.Migrator{Out: &out, Parallel: parallel}).All(ctx, f.e.db.AdminURL, f.e.vault)
	running, conns := watch()
	if err == nil || !strings.Contains(err.Error(), "1 of 12 silos failed to migrate: fleet-07") {
		t.Fatalf("All = %v, want it to name the broken silo\n%s", err, out.String())
	}
	if strings.Contains(out.String()+err.Error(), siloPassword) {
		t.Fatalf("the silos' password was shown:\n%s\n%v", out.String(), err)
	}

	// Every silo reported once, counted 1 to 12 as each was done.
	got := progress(t, out.String())
	seen := map[int]bool{}
	for i, tn := range f.silos {
		p, ok := got[tn.Slug]
		if !ok {
			t.Fatalf("silo %s not reported:\n%s", tn.Slug, out.String())
		}
		if p.n != n || p.k < 1 || p.k > n || seen[p.k] {
			t.Fatalf("silo %s reported as (%d/%d):\n%s", tn.Slug, p.k, p.n, out.String())
		}
		seen[p.k] = true
		want := fmt.Sprintf("migrated to version %d", f.latest)
		switch i {
		case broken:
			want = "failed"
		case current:
			want = fmt.Sprintf("already current at version %d", f.latest)
		}
		if p.outcome != want {
			t.Fatalf("silo %s: %q, want %q:\n%s", tn.Slug, p.outcome, want, out.String())
		}
		if i != broken {
			if v := f.version(t, i); v != f.latest {
				t.Fatalf("silo %s at version %d after All, want %d", tn.Slug, v, f.latest)
			}
		}
	}
	for _, line := range []string{
		"silos: 10 migrated, 1 already current, 1 failed (12 in all)",
		"failed: silo fleet-07: connect: ",
	} {
		if !strings.Contains(out.String(), line) {
			t.Fatalf("no %q at the end:\n%s", line, out.String())
		}
	}
	if i := strings.Index(out.String(), "silos: 10 migrated"); strings.Contains(out.String()[i:], "(12/12)") {
		t.Fatalf("the summary came before the last silo:\n%s", out.String())
	}

	// Never more silos at once than the bound, the bound used, and one
	// connection per silo.
	if running > parallel || running < 2 {
		t.Fatalf("at most %d silos were migrating at once, want 2..%d", running, parallel)
	}
	if conns != 1 {
		t.Fatalf("a silo being migrated had up to %d connections, want 1", conns)
	}
}

func TestMigrateAllStopsStartingSilosWhenInterrupted(t *testing.T) {
	t.Parallel()
	const n, parallel = 6, 2
	f := newFleet(t, "halt", n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Ctrl-C as the first silo is done.
	out := &cancelOn{marker: fmt.Sprintf("(1/%d)", n), cancel: cancel}
	err := (&tenancy.Migrator{Out: out, Parallel: parallel}).All(ctx, f.e.db.AdminURL, f.e.vault)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "silos not migrated") {
		t.Fatalf("All after an interrupt = %v, want it to say silos were not migrated", err)
	}
	got := progress(t, out.String())
	if len(got) == 0 || len(got) > parallel {
		t.Fatalf("%d silos reported after an interrupt, want those running (1..%d):\n%s", len(got), parallel, out.String())
	}
	summary := fmt.Sprintf("silos: %d migrated, 0 already current, 0 failed, %d not started (interrupted) (%d in all)", len(got), n-len(got), n)
	if !strings.Contains(out.String(), summary) {
		t.Fatalf("no %q:\n%s", summary, out.String())
	}
	for i, tn := range f.silos {
		v := f.version(t, i)
		p, started := got[tn.Slug]
		switch {
		case started && (p.outcome != fmt.Sprintf("migrated to version %d", f.latest) || v != f.latest):
			// A running silo is waited for, not cut short.
			t.Fatalf("running silo %s: %q, at version %d; want it finished at %d", tn.Slug, p.outcome, v, f.latest)
		case !started && v != 10:
			t.Fatalf("silo %s migrated to %d after the interrupt", tn.Slug, v)
		}
	}
}

// cancelOn is an Out that calls cancel when a line holding marker is
// written.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel func()
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte(w.marker)) {
		w.cancel()
	}
	return w.buf.Write(p)
}

func (w *cancelOn) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
