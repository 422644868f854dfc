package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/problem/problemtest"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMain(m *testing.M) {
	proctest.Main(m)
}

// syncBuffer collects log lines from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// instance is one running server process's worth of Gatehouse.
type instance struct {
	url  string
	logs *syncBuffer
}

// start runs a server instance on db until the test ends.
func start(t *testing.T, db *pgtest.DB, routes ...func(*fiber.App)) *instance {
	t.Helper()
	pool := pgtest.Pool(t, db.AppURL, 4)
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	resolver := tenancy.NewResolver(pool, "localhost", log)
	srv := server.New(server.Config{BodyLimit: 4096}, server.Deps{
		Log:      log,
		Resolver: resolver,
		Ready: map[string]func(context.Context) error{
			"database": func(ctx context.Context) error { return tenancy.SchemaCurrent(ctx, pool, true) },
		},
	})
	for _, add := range routes {
		add(srv.App())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { resolver.Run(ctx); done <- nil }()
	go func() { done <- srv.Serve(ctx, ln, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for !resolver.Listening() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return &instance{url: "http://" + ln.Addr().String(), logs: logs}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (in *instance) do(t *testing.T, method, host, path string, body io.Reader, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, in.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// wantProblem asserts r is an RFC 9457 problem with the given status.
func wantProblem(t *testing.T, r response, status int, detail string) problem.Details {
	t.Helper()
	return problemtest.Want(t, r.status, r.header.Get("Content-Type"), r.body, status, detail)
}

func newTenants(t *testing.T) *pgtest.DB {
	t.Helper()
	db := pgtest.NewPrimary(t)
	reg := registry(t, db)
	ctx := context.Background()
	for _, slug := range []string{"acme", "sleepy"} {
		if _, err := reg.Create(ctx, tenancy.CreateParams{Slug: slug, Name: "Tenant " + slug}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Suspend(ctx, "sleepy"); err != nil {
		t.Fatal(err)
	}
	return db
}

func registry(t *testing.T, db *pgtest.DB) *tenancy.Registry {
	admin := pgtest.Pool(t, db.AdminURL, 2)
	v := vaulttest.Shared(t).Connect(t)
	return tenancy.NewRegistry(admin, db.AdminURL, "localhost", v, &tenancy.Migrator{})
}

func TestTenantEndpoint(t *testing.T) {
	t.Parallel()
	db := newTenants(t)
	in := start(t, db)

	r := in.do(t, "GET", "acme.localhost", "/v1/tenant", nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var info tenancy.TenantInfo
	if err := json.Unmarshal(r.body, &info); err != nil || info.Slug != "acme" || info.Name != "Tenant acme" || info.ID == "" {
		t.Fatalf("tenant info %s (%v)", r.body, err)
	}

	wantProblem(t, in.do(t, "GET", "nobody.localhost", "/v1/tenant", nil), 404, "no tenant")
	if r := in.do(t, "GET", "sleepy.localhost", "/v1/tenant", nil); r.status != 403 {
		var tenants []string
		rows, _ := pgtest.Pool(t, db.AdminURL, 1).Query(context.Background(), "select slug || ':' || status from control.tenants")
		for rows != nil && rows.Next() {
			var s string
			rows.Scan(&s)
			tenants = append(tenants, s)
		}
		t.Fatalf("sleepy: %d %s; %s has tenants %v; server logs:\n%s", r.status, r.body, db.Name, tenants, in.logs.String())
	}
	wantProblem(t, in.do(t, "GET", "127.0.0.1", "/v1/tenant", nil), 400, "host")
	wantProblem(t, in.do(t, "GET", "bad_host!.localhost", "/v1/tenant", nil), 400, "host")
	wantProblem(t, in.do(t, "GET", "acme.localhost", "/v1/nothing-here", nil), 404, "no such endpoint")
	wantProblem(t, in.do(t, "GET", "nobody.localhost", "/v1/nothing-here", nil), 404, "no tenant")
	r = in.do(t, "POST", "acme.localhost", "/v1/tenant", strings.NewReader(strings.Repeat("x", 8192)))
	wantProblem(t, r, 413, "too large")
	if r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("a request refused before routing lacks the security headers")
	}
	wantProblem(t, in.do(t, "POST", "acme.localhost", "/v1/tenant", strings.NewReader("{}")), 405, "method not allowed")
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	db := newTenants(t)
	in := start(t, db)
	for _, host := range []string{"localhost", "nobody.localhost"} {
		if r := in.do(t, "GET", host, "/healthz", nil); r.status != 200 {
			t.Fatalf("healthz on %s: %d %s", host, r.status, r.body)
		}
		if r := in.do(t, "GET", host, "/readyz", nil); r.status != 200 {
			t.Fatalf("readyz on %s: %d %s", host, r.status, r.body)
		}
	}
	// Pretend a newer migration exists that this database lacks.
	db.Cluster.Exec(t, db.Name, "delete from gatehouse.tenant_migrations where version_id > 0")
	wantProblem(t, in.do(t, "GET", "localhost", "/readyz", nil), 503, "not ready")
}

func TestSecurityHeadersAndRequestID(t *testing.T) {
	t.Parallel()
	db := newTenants(t)
	in := start(t, db)
	for _, path := range []string{"/v1/tenant", "/v1/missing"} {
		r := in.do(t, "GET", "acme.localhost", path, nil, "X-Request-Id", "trace-abc-123")
		for h, want := range map[string]string{
			"Strict-Transport-Security": "max-age=",
			"Content-Security-Policy":   "frame-ancestors 'none'",
			"X-Content-Type-Options":    "nosniff",
			"Referrer-Policy":           "no-referrer",
			"X-Request-Id":              "trace-abc-123",
		} {
			if got := r.header.Get(h); !strings.Contains(got, want) {
				t.Errorf("%s: header %s = %q, want it to contain %q", path, h, got, want)
			}
		}
	}
	// An id that could forge log lines is replaced, not echoed.
	r := in.do(t, "GET", "acme.localhost", "/v1/tenant", nil, "X-Request-Id", "evil\" injected=1")
	if got := r.header.Get("X-Request-Id"); got == "" || strings.Contains(got, "evil") {
		t.Fatalf("request id %q", got)
	}
	// The access log carries the tenant and the request id.
	var found bool
	for line := range strings.SplitSeq(in.logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "request" {
			continue
		}
		if rec["request_id"] == "trace-abc-123" && rec["tenant_id"] != nil && rec["path"] == "/v1/tenant" && rec["status"] == float64(200) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no access log line with tenant and request id:\n%s", in.logs.String())
	}
}

func TestPanicIsAnInternalProblemWithoutDetails(t *testing.T) {
	t.Parallel()
	db := newTenants(t)
	in := start(t, db, func(app *fiber.App) {
		app.Get("/v1/boom", func(*fiber.Ctx) error { panic("secret detail") })
		app.Get("/v1/fail", func(*fiber.Ctx) error { return errors.New("db password=hunter2 rejected") })
	})
	for _, path := range []string{"/v1/boom", "/v1/fail"} {
		r := in.do(t, "GET", "acme.localhost", path, nil)
		d := wantProblem(t, r, 500, "Internal error")
		if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "hunter2") {
			t.Fatalf("%s leaked details: %+v", path, d)
		}
	}
	if r := in.do(t, "GET", "acme.localhost", "/v1/tenant", nil); r.status != 200 {
		t.Fatalf("server unhealthy after a panic: %d", r.status)
	}
	logs := in.logs.String()
	if !strings.Contains(logs, `"msg":"panic"`) || !strings.Contains(logs, `"path":"/v1/boom","status":500`) {
		t.Fatalf("the panic is not logged as a 500:\n%s", logs)
	}
}

// TestSecondInstanceSeesSuspensionWithinASecond runs two server instances on
// one database: a change made through the control plane reaches the
// instance that did not make it, through NOTIFY.
func TestSecondInstanceSeesSuspensionWithinASecond(t *testing.T) {
	t.Parallel()
	db := newTenants(t)
	one, two := start(t, db), start(t, db)
	for _, in := range []*instance{one, two} {
		if r := in.do(t, "GET", "acme.localhost", "/v1/tenant", nil); r.status != 200 {
			t.Fatalf("before: %d", r.status)
		}
	}
	reg := registry(t, db)
	if _, err := reg.Suspend(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	// Neither instance made the change: each hears of it on its own.
	start := time.Now()
	for i, in := range []*instance{one, two} {
		for in.do(t, "GET", "acme.localhost", "/v1/tenant", nil).status != 403 {
			if time.Since(start) > time.Second {
				t.Fatalf("instance %d still serves the suspended tenant after 1s", i+1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	t.Logf("both instances refused the suspended tenant after %s", time.Since(start))
	wantProblem(t, one.do(t, "GET", "acme.localhost", "/v1/tenant", nil), 403, "suspended")
}

func TestGracefulShutdownFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	db := newTenants(t)
	pool := pgtest.Pool(t, db.AppURL, 2)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	srv := server.New(server.Config{}, server.Deps{Log: log, Resolver: tenancy.NewResolver(pool, "localhost", log),
		Ready: map[string]func(context.Context) error{}})
	release := make(chan struct{})
	srv.App().Get("/v1/slow", func(c *fiber.Ctx) error { <-release; return c.SendString("done") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, 5*time.Second) }()
	in := &instance{url: "http://" + ln.Addr().String()}
	got := make(chan response, 1)
	go func() { got <- in.do(t, "GET", "acme.localhost", "/v1/slow", nil) }()
	time.Sleep(100 * time.Millisecond) // the request is in the handler
	cancel()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if r := <-got; r.status != 200 || string(r.body) != "done" {
		t.Fatalf("in-flight request: %d %s", r.status, r.body)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := http.Get(in.url + "/healthz"); err == nil {
		t.Fatal("server still accepts connections after shutdown")
	}
}
