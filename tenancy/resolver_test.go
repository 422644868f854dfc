package tenancy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// runResolver starts a resolver with its change subscription and waits
// until it listens.
func runResolver(t *testing.T, e *env) *tenancy.Resolver {
	t.Helper()
	r := tenancy.NewResolver(e.app, "localhost", quietLog())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 5*time.Second, "resolver listening", r.Listening)
	return r
}

// eventually polls cond every few milliseconds until it holds or within
// passes, and fails the test then.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func TestResolve(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	acme := e.tenant(t, "acme", tenancy.Shared)
	e.tenant(t, "sleepy", tenancy.Shared)
	if _, err := e.reg.Suspend(ctx, "sleepy"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.AddDomain(ctx, "acme", "login.acme.test"); err != nil {
		t.Fatal(err)
	}
	r := runResolver(t, e)
	tests := []struct {
		host string
		code problem.Code // "" means resolves to acme
	}{
		{"acme.localhost", ""},
		{"ACME.localhost:8080", ""},
		{"acme.localhost.", ""},
		{"login.acme.test", ""},
		{"login.acme.test:443", ""},
		{"nobody.localhost", problem.NotFound},
		{"localhost", problem.NotFound},
		{"www.acme.localhost", problem.NotFound},
		{"acme.example.org", problem.NotFound},
		{"admin.localhost", problem.NotFound},
		{"sleepy.localhost", problem.Forbidden},
		{"", problem.Invalid},
		{"127.0.0.1:8080", problem.Invalid},
		{"acme.localhost\x00", problem.Invalid},
		{"a b.localhost", problem.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			for range 2 { // uncached, then cached
				got, err := r.Resolve(ctx, tt.host)
				if problem.CodeOf(err) != tt.code {
					t.Fatalf("Resolve(%q) = %v, want code %q", tt.host, err, tt.code)
				}
				if tt.code == "" && got.ID != acme.ID {
					t.Fatalf("Resolve(%q) = %s, want acme", tt.host, got.Slug)
				}
			}
		})
	}
}

// TestResolverCachesAndForgetsOnChange shows answers come from the cache
// (they survive losing read access to the control plane) and that a change
// made through the registry reaches the resolver through NOTIFY at once.
func TestResolverCachesAndForgetsOnChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "acme", tenancy.Shared)
	r := runResolver(t, e)
	if _, err := r.Resolve(ctx, "acme.localhost"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, "later.localhost"); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("later before creation: %v", err)
	}

	e.db.Cluster.Exec(t, e.db.Name, "revoke select on control.tenants from gatehouse_app")
	if _, err := r.Resolve(ctx, "acme.localhost"); err != nil {
		t.Fatalf("cached resolve needed the database: %v", err)
	}
	if _, err := r.Resolve(ctx, "other.localhost"); problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("uncached resolve without read access = %v, want Unavailable", err)
	}
	e.db.Cluster.Exec(t, e.db.Name, "grant select on control.tenants to gatehouse_app")

	if _, err := e.reg.Suspend(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, time.Second, "suspension seen", func() bool {
		_, err := r.Resolve(ctx, "acme.localhost")
		return problem.CodeOf(err) == problem.Forbidden
	})
	t.Logf("suspension seen after %s", took)

	// A cached "no such tenant" goes too when the tenant appears.
	e.tenant(t, "later", tenancy.Shared)
	eventually(t, time.Second, "new tenant seen", func() bool {
		_, err := r.Resolve(ctx, "later.localhost")
		return err == nil
	})
}

// TestResolverRecoversLostSubscription kills the listening connection; a
// change made meanwhile must still be seen once it reconnects.
func TestResolverRecoversLostSubscription(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "acme", tenancy.Shared)
	r := runResolver(t, e)
	if _, err := r.Resolve(ctx, "acme.localhost"); err != nil {
		t.Fatal(err)
	}
	e.db.Cluster.Exec(t, e.db.Name, `select pg_terminate_backend(pid) from pg_stat_activity
		where usename = 'gatehouse_app' and datname = current_database() and query ilike 'listen%'`)
	eventually(t, 2*time.Second, "subscription loss noticed", func() bool { return !r.Listening() })
	// While it is down, nothing is served from the cache.
	if _, err := e.reg.Suspend(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(ctx, "acme.localhost"); problem.CodeOf(err) != problem.Forbidden {
		t.Fatalf("resolve while unsubscribed = %v, want Forbidden (fresh read)", err)
	}
	eventually(t, 5*time.Second, "resubscribed", r.Listening)
	if _, err := e.reg.Resume(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "resume seen", func() bool {
		_, err := r.Resolve(ctx, "acme.localhost")
		return err == nil
	})
}

// TestResolverBoundsUnknownHosts floods the resolver with made-up hosts:
// it remembers only the most recently asked of them (the oldest must be
// looked up again), and the known tenants stay cached through it all.
func TestResolverBoundsUnknownHosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "acme", tenancy.Shared)
	r := runResolver(t, e)
	if _, err := r.Resolve(ctx, "acme.localhost"); err != nil {
		t.Fatal(err)
	}
	const flood = tenancy.UnknownHosts + 500
	host := func(i int) string { return fmt.Sprintf("made-up-%05d.localhost", i) }
	for i := range flood {
		if _, err := r.Resolve(ctx, host(i)); problem.CodeOf(err) != problem.NotFound {
			t.Fatalf("Resolve(%s) = %v, want NotFound", host(i), err)
		}
	}

	// Without the directory, only cached answers can be given.
	e.db.Cluster.Exec(t, e.db.Name, "revoke select on control.tenants from gatehouse_app")
	defer e.db.Cluster.Exec(t, e.db.Name, "grant select on control.tenants to gatehouse_app")
	if got, err := r.Resolve(ctx, "acme.localhost"); err != nil || got.Slug != "acme" {
		t.Fatalf("a known tenant after the flood: %v, %v; want it cached", got, err)
	}
	if _, err := r.Resolve(ctx, host(flood-1)); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("the latest unknown host: %v, want a cached NotFound", err)
	}
	if _, err := r.Resolve(ctx, host(0)); problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("the first unknown host: %v, want Unavailable (forgotten, so looked up)", err)
	}
}
