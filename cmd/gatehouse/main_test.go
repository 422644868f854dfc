package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity/mail/mailtest"
	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as gatehouse, for tests that kill a real
	// process (TestKilledPromotionResumesOrAborts).
	if os.Getenv("GATEHOUSE_TEST_AS_MAIN") == "1" {
		os.Exit(run(context.Background(), os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}))
	}
	proctest.Main(m)
}

// cli runs gatehouse command lines against one database and Vault.
type cli struct {
	t     *testing.T
	url   string
	vault []string // flags that reach Vault
}

func newCLI(t *testing.T) *cli {
	c := pgtest.Primary(t)
	return &cli{t: t, url: c.URL(c.NewDatabase(t, "")), vault: vaultFlags(t, vaulttest.Shared(t))}
}

// spicedbFlags returns the flags that reach a SpiceDB of the test's own
// (a datastore of its own on the shared serve-testing server).
func spicedbFlags(t *testing.T) []string {
	cfg := spicedbtest.Shared(t).Config()
	keyFile := filepath.Join(t.TempDir(), "spicedb-key")
	if err := os.WriteFile(keyFile, []byte(cfg.Key), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--spicedb-addr", cfg.Addr, "--spicedb-plaintext", "--spicedb-key-file", keyFile}
}

// vaultFlags returns the flags that log a command in to v.
func vaultFlags(t *testing.T, v *vaulttest.Server) []string {
	tokenFile := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(tokenFile, []byte(v.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--vault-addr", v.Addr, "--vault-token-file", tokenFile}
}

// run executes a command line with stdin and returns exit code and output.
func (c *cli) run(stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	args = append(append(args, "--database-url", c.url), c.vault...)
	code := run(context.Background(), args, stdio{strings.NewReader(stdin), &out, &errOut})
	return code, out.String(), errOut.String()
}

// must runs a command line that must succeed and returns its output.
func (c *cli) must(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run("", args...)
	if code != 0 {
		c.t.Fatalf("gatehouse %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs a command line that must fail with code and say msg.
func (c *cli) fails(code int, msg string, args ...string) {
	c.t.Helper()
	got, out, errOut := c.run("", args...)
	if got != code || !strings.Contains(errOut, msg) {
		c.t.Fatalf("gatehouse %s: exit %d, stderr %q (stdout %q); want exit %d saying %q",
			strings.Join(args, " "), got, errOut, out, code, msg)
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"help"}, stdio{nil, &out, &errOut}); code != 0 || !strings.Contains(out.String(), "gatehouse tenant create") {
		t.Fatalf("help: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"frobnicate"}, stdio{nil, &out, &errOut}); code != 2 || !strings.Contains(errOut.String(), "unknown command") {
		t.Fatalf("unknown command: %d %q", code, errOut.String())
	}
	t.Setenv("GATEHOUSE_DATABASE_URL", "")
	errOut.Reset()
	if code := run(context.Background(), []string{"migrate"}, stdio{nil, &out, &errOut}); code != 1 || !strings.Contains(errOut.String(), "GATEHOUSE_DATABASE_URL") {
		t.Fatalf("migrate without a database: %d %q", code, errOut.String())
	}
}

func TestTenantCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	if out := c.must("migrate"); !strings.Contains(out, "applied control migration") {
		t.Fatalf("first migrate:\n%s", out)
	}
	if out := c.must("migrate"); strings.Contains(out, "applied") || !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate:\n%s", out)
	}
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme Inc")
	if out := c.must("tenant", "create", "--slug", "globex", "--name", "Globex", "--placement", "silo"); !regexp.MustCompile(`placement:\s+silo`).MatchString(out) {
		t.Fatalf("silo create output:\n%s", out)
	}

	// Bad input: a clear message, exit 1, nothing changed.
	c.fails(1, "slug: is reserved", "tenant", "create", "--slug", "admin", "--name", "X")
	c.fails(1, "slug: may contain only lowercase", "tenant", "create", "--slug", "Bad!", "--name", "X")
	c.fails(1, `tenant "acme" already exists`, "tenant", "create", "--slug", "acme", "--name", "Again")
	c.fails(1, "silo cluster 127.0.0.1:1 is unreachable", "tenant", "create", "--slug", "faraway", "--name", "X",
		"--placement", "silo", "--silo-cluster", "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2")
	c.fails(1, `no tenant "nobody"`, "tenant", "show", "nobody")
	c.fails(2, "want 1 argument", "tenant", "show")
	c.fails(2, "flag provided but not defined", "tenant", "list", "--bogus")

	var list []struct{ Slug, Placement, Status string }
	if err := json.Unmarshal([]byte(c.must("tenant", "list", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Slug != "acme" || list[1].Slug != "globex" || list[1].Placement != "silo" {
		t.Fatalf("tenant list after the failures: %+v", list)
	}

	// Settings, and bad ones refused by name with nothing changed.
	if out := c.must("tenant", "set", "acme", "--signup", "invite", "--require-verified-email", "true",
		"--access-token-ttl", "10m", "--sender", "login@acme.test", "--link-base-url", "https://app.acme.test/auth"); !regexp.MustCompile(`signup:\s+invite`).MatchString(out) ||
		!regexp.MustCompile(`access token ttl:\s+10m0s`).MatchString(out) || !regexp.MustCompile(`mail from:\s+login@acme.test`).MatchString(out) {
		t.Fatalf("tenant set:\n%s", out)
	}
	c.fails(1, "mail_from_address: must be a plain email address", "tenant", "set", "acme", "--sender", "Acme <x@acme.test>")
	c.fails(1, "access_token_ttl: must be whole seconds between 1m and 24h", "tenant", "set", "acme", "--access-token-ttl", "48h")
	c.fails(1, "link_base_url: must be an http(s) URL", "tenant", "set", "acme", "--link-base-url", "javascript:alert(1)")
	c.fails(2, "--require-verified-email wants true or false", "tenant", "set", "acme", "--require-verified-email", "maybe")
	c.fails(2, "give at least one setting", "tenant", "set", "acme")
	if out := c.must("tenant", "set", "acme", "--sender", ""); strings.Contains(out, "mail from:") || !strings.Contains(out, "link base url:") {
		t.Fatalf("clearing the sender:\n%s", out)
	}
	// A tenant with its first admin invited.
	if out := c.must("tenant", "create", "--slug", "initech", "--name", "Initech", "--admin-email", "Boss@Initech.test"); !strings.Contains(out, "invited boss@initech.test as an admin of initech") {
		t.Fatalf("create with an admin:\n%s", out)
	}
	// Inviting again an address that never confirmed sends a new invitation.
	if out := c.must("tenant", "admin", "invite", "--tenant", "initech", "--email", "boss@initech.test"); !strings.Contains(out, "invited boss@initech.test") {
		t.Fatalf("invite again:\n%s", out)
	}
	c.fails(1, "--admin-email: email: must be a valid email address",
		"tenant", "create", "--slug", "initech2", "--name", "Initech 2", "--admin-email", "not an address")
	c.fails(1, `no tenant "initech2"`, "tenant", "show", "initech2")
	c.must("tenant", "delete", "initech", "--yes")

	// Migrate now covers the silo too.
	if out := c.must("migrate"); !strings.Contains(out, "silo globex: already current at version") {
		t.Fatalf("migrate does not cover the silo:\n%s", out)
	}

	if out := c.must("tenant", "suspend", "acme"); !regexp.MustCompile(`status:\s+suspended`).MatchString(out) {
		t.Fatalf("suspend:\n%s", out)
	}
	c.must("tenant", "resume", "acme")
	c.must("tenant", "domain", "add", "acme", "login.acme.test")
	c.fails(1, "already registered", "tenant", "domain", "add", "globex", "login.acme.test")
	if out := c.must("tenant", "show", "acme"); !regexp.MustCompile(`domain:\s+login\.acme\.test`).MatchString(out) || !regexp.MustCompile(`status:\s+active`).MatchString(out) {
		t.Fatalf("show:\n%s", out)
	}
	if out := c.must("tenant", "domain", "list", "acme"); out != "login.acme.test\n" {
		t.Fatalf("domain list: %q", out)
	}
	c.must("tenant", "domain", "remove", "acme", "login.acme.test")

	// Deletion wants the slug typed back, or --yes.
	if code, _, errOut := c.run("acm\n", "tenant", "delete", "acme"); code != 1 || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("delete with a wrong confirmation: %d %q", code, errOut)
	}
	c.must("tenant", "show", "acme")
	if code, out, errOut := c.run("acme\n", "tenant", "delete", "acme"); code != 0 || !strings.Contains(out, "deleted tenant acme") {
		t.Fatalf("confirmed delete: %d %q %q", code, out, errOut)
	}
	c.must("tenant", "delete", "globex", "--yes")
	if out := c.must("tenant", "list"); strings.Contains(out, "acme") || strings.Contains(out, "globex") {
		t.Fatalf("list after deleting both:\n%s", out)
	}
}

// syncBuffer collects output written while the test reads it.
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

// TestDevServesDemoTenants runs what the README's first command runs, on an
// empty database: migrate, demo tenants, serve; then stops it as SIGTERM
// would.
func TestDevServesDemoTenants(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	// Mounts of its own, which dev must create on first start as it would
	// on a fresh Vault.
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	catcher := mailtest.Shared(t)
	args := append([]string{"dev", "--database-url", c.url, "--addr", "127.0.0.1:0", "--log-level", "warn",
		"--vault-kv-mount", "kv-" + suffix, "--vault-transit-mount", "transit-" + suffix, "--smtp-url", catcher.URL(),
		"--metrics-addr", "127.0.0.1:0"}, c.vault...)
	args = append(args, spicedbFlags(t)...)
	var demoSecret string
	for round := range 2 { // the second run finds everything in place
		ctx, cancel := context.WithCancel(context.Background())
		out := &syncBuffer{}
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, args, stdio{nil, out, io.Discard})
		}()
		urlRE := regexp.MustCompile(`http://(acme|globex)\.localhost:\d+/v1/tenant`)
		deadline := time.Now().Add(30 * time.Second)
		for len(urlRE.FindAllString(out.String(), -1)) < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("dev printed no URLs:\n%s", out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if round == 0 && !strings.Contains(out.String(), "created demo tenant globex (silo)") {
			t.Fatalf("first dev run did not create the demo tenants:\n%s", out.String())
		}
		if round == 1 && strings.Contains(out.String(), "created demo tenant") {
			t.Fatalf("second dev run created tenants again:\n%s", out.String())
		}
		for _, m := range urlRE.FindAllStringSubmatch(out.String(), -1) {
			// Resolve *.localhost to loopback, as browsers do.
			req, _ := http.NewRequest("GET", strings.Replace(m[0], m[1]+".localhost", "127.0.0.1", 1), nil)
			req.Host = m[1] + ".localhost"
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var info struct{ Slug string }
			err = json.NewDecoder(res.Body).Decode(&info)
			res.Body.Close()
			if err != nil || res.StatusCode != 200 || info.Slug != m[1] {
				t.Fatalf("%s: %d %+v %v", m[0], res.StatusCode, info, err)
			}
		}
		ready := regexp.MustCompile(`http://localhost:(\d+)/readyz`).FindStringSubmatch(out.String())
		if ready == nil {
			t.Fatalf("dev printed no readiness URL:\n%s", out.String())
		}
		eventually(t, 5*time.Second, "dev stack ready (database and vault)", func() bool {
			res, err := http.Get("http://127.0.0.1:" + ready[1] + "/readyz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == 200
		})
		if round == 0 {
			admin := acceptDemoInvitation(t, catcher, "127.0.0.1:"+ready[1])
			checkIsCounted(t, "127.0.0.1:"+ready[1], admin, out.String())
		}
		// The demo app's command names its client and a secret that
		// authenticates it; each start gives a new one and ends the last.
		demo := regexp.MustCompile(`GATEHOUSE_CLIENT_SECRET=(\S+) go run ./examples/webapp[^\n]*\n\s*-issuer http://acme\.localhost:\d+ -client-id (\S+)`).FindStringSubmatch(out.String())
		if demo == nil {
			t.Fatalf("dev printed no demo app command:\n%s", out.String())
		}
		if got := introspectAs(t, "127.0.0.1:"+ready[1], demo[2], demo[1]); got != 200 {
			t.Fatalf("round %d: the demo app's printed secret: %d", round, got)
		}
		if round == 1 {
			if got := introspectAs(t, "127.0.0.1:"+ready[1], demo[2], demoSecret); got != 401 {
				t.Fatalf("the last start's demo secret still works: %d", got)
			}
		}
		demoSecret = demo[1]
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("dev exited %d:\n%s", code, out.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatal("dev did not stop")
		}
	}
}

// introspectAs authenticates to acme's introspection endpoint at addr as
// a client and returns the status: 200 for good credentials.
func introspectAs(t *testing.T, addr, clientID, secret string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/oauth/introspect", strings.NewReader("token=x"))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, secret)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// acceptDemoInvitation reads the invitation dev sent acme's first admin,
// chooses a password through its link and signs in with it, returning the
// access token.
func acceptDemoInvitation(t *testing.T, catcher *mailtest.Server, addr string) string {
	t.Helper()
	m := catcher.Wait(t, "admin@acme.test", 1, 30*time.Second)[0]
	link, err := url.Parse(m.Link(t, "/account/accept-invite"))
	if err != nil || !strings.HasPrefix(link.Host, "acme.localhost:") {
		t.Fatalf("invitation link %v", link)
	}
	send := func(path, contentType, body string) int {
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
		req.Host = "acme.localhost"
		req.Header.Set("Content-Type", contentType)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	const pw = "first-Boss-chooses-this-9"
	form := url.Values{"token": {link.Query().Get("token")}, "password": {pw}, "confirm": {pw}}
	if code := send(link.Path, "application/x-www-form-urlencoded", form.Encode()); code != 200 {
		t.Fatalf("accepting the invitation: %d", code)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/auth/login", strings.NewReader(`{"email":"admin@acme.test","password":"`+pw+`"}`))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	if res.StatusCode != 200 || tok.AccessToken == "" {
		t.Fatalf("the invited admin's sign-in: %d", res.StatusCode)
	}
	// Their admin rights hold: SpiceDB says so.
	req, _ = http.NewRequest("GET", "http://"+addr+"/v1/admin/users", nil)
	req.Host = "acme.localhost"
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("the demo admin lists users: %d", res.StatusCode)
	}
	return tok.AccessToken
}

// checkIsCounted makes a permission check as acme's app and finds it in
// the metrics the dev stack printed the address of.
func checkIsCounted(t *testing.T, addr, token, out string) {
	t.Helper()
	m := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/metrics`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dev printed no metrics URL:\n%s", out)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/permissions/check", strings.NewReader(
		`{"subject":{"type":"user","id":"nobody"},"permission":"view","resource":{"type":"resource","id":"doc"}}`))
	req.Host = "acme.localhost"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("the demo app's check: %d", res.StatusCode)
	}
	res, err = http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	want := `gatehouse_permission_decisions_total{endpoint="check",outcome="denied",tenant="acme"} 1`
	if res.StatusCode != 200 || !strings.Contains(string(body), want) || !strings.Contains(string(body), `gatehouse_permission_request_duration_seconds_count{endpoint="check"} 1`) {
		t.Fatalf("metrics (%d) do not count the check, want %s:\n%s", res.StatusCode, want, body)
	}
}

// eventually polls cond until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
