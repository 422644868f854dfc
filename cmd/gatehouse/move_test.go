package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// startServe runs a server instance for the test on c's database and
// returns its address.
func startServe(t *testing.T, c *cli, spicedb []string) string {
	t.Helper()
	var cfg config
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.flags(fs)
	args := append([]string{"--database-url", c.url, "--addr", "127.0.0.1:0", "--log-level", "warn", "--rate-limits", "off"}, c.vault...)
	if err := fs.Parse(append(args, spicedb...)); err != nil {
		t.Fatal(err)
	}
	addr, _ := serveForTest(t, cfg)
	return addr
}

// serveForTest runs a server instance with cfg until the test ends, and
// returns its address and what it logs.
func serveForTest(t *testing.T, cfg config) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- serve(ctx, cfg, stdio{nil, io.Discard, logs}, func(at listening) { ready <- at.Addr }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case addr := <-ready:
		return addr, logs
	case err := <-done:
		t.Fatalf("serve: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start")
	}
	return "", nil
}

// call sends a JSON request for tenant slug to a server instance.
func call(addr, slug, method, path string, body any) (int, map[string]any, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Host = slug + ".localhost"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out, nil
}

const loadPassword = "tall-quiet-harbour-lantern-87"

// loadGap spaces each load client's requests: steady traffic through the
// move, not a saturated machine.
const loadGap = 5 * time.Millisecond

// load keeps signing up, logging in and refreshing through the HTTP API
// of one instance, and records what was acknowledged.
type load struct {
	stop      atomic.Bool
	wg        sync.WaitGroup
	mu        sync.Mutex
	signedUp  []string
	refresh   string // the latest refresh token handed out
	logins    atomic.Int64
	refreshes atomic.Int64
	refused   atomic.Int64 // 503s: fenced too long, or the flip raced
	errs      []string
}

func (l *load) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, fmt.Sprintf(format, args...))
	}
}

func startLoad(addr, slug, refresh string, from int) *load {
	l := &load{refresh: refresh}
	l.wg.Go(func() { // sign-ups: each one a write of several rows
		for i := from; !l.stop.Load(); i++ {
			email := fmt.Sprintf("load%d@%s.test", i, slug)
			code, body, err := call(addr, slug, "POST", "/v1/auth/signup", map[string]string{"email": email, "password": loadPassword})
			switch {
			case err != nil:
				l.fail("signup: %v", err)
			case code == 202:
				l.mu.Lock()
				l.signedUp = append(l.signedUp, email)
				l.mu.Unlock()
			case code == 503:
				l.refused.Add(1)
			default:
				l.fail("signup: %d %v", code, body)
			}
			time.Sleep(loadGap)
		}
	})
	l.wg.Go(func() { // a refresh-token family rotating: a lost or doubled write would spend a token twice
		for !l.stop.Load() {
			code, body, err := call(addr, slug, "POST", "/v1/auth/token/refresh", map[string]string{"refresh_token": l.refresh})
			switch {
			case err != nil:
				l.fail("refresh: %v", err)
			case code == 200:
				l.mu.Lock()
				l.refresh = body["refresh_token"].(string)
				l.mu.Unlock()
				l.refreshes.Add(1)
			case code == 503:
				l.refused.Add(1)
			default:
				l.fail("refresh: %d %v", code, body)
			}
			time.Sleep(loadGap)
		}
	})
	l.wg.Go(func() { // logins: password checks and new sessions
		for !l.stop.Load() {
			code, body, err := call(addr, slug, "POST", "/v1/auth/login", map[string]string{"email": "seed0@" + slug + ".test", "password": loadPassword})
			switch {
			case err != nil:
				l.fail("login: %v", err)
			case code == 200:
				l.logins.Add(1)
			case code == 503:
				l.refused.Add(1)
			default:
				l.fail("login: %d %v", code, body)
			}
			time.Sleep(loadGap)
		}
	})
	return l
}

func (l *load) finish(t *testing.T) {
	t.Helper()
	l.stop.Store(true)
	l.wg.Wait()
	if len(l.errs) > 0 {
		t.Fatalf("the load saw errors: %s", strings.Join(l.errs, "; "))
	}
	t.Logf("load: %d sign-ups, %d logins, %d refreshes acknowledged; %d refused with 503", len(l.signedUp), l.logins.Load(), l.refreshes.Load(), l.refused.Load())
	if len(l.signedUp) == 0 || l.logins.Load() == 0 || l.refreshes.Load() == 0 {
		t.Fatal("the load did not get through")
	}
}

// usersIn returns tenant id's user emails in database url.
func usersIn(t *testing.T, url, tenant string) map[string]int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "select email from app.users where tenant_id = $1", tenant)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		got[e]++
	}
	return got
}

// siloURL finds tenant id's silo database on the silo cluster.
func siloURL(t *testing.T, tenant string) string {
	t.Helper()
	ctx := context.Background()
	c := pgtest.Second(t)
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var name string
	if err := conn.QueryRow(ctx, "select datname from pg_database where datname like $1",
		"gatehouse_"+strings.ReplaceAll(tenant, "-", "")+"_%").Scan(&name); err != nil {
		t.Fatalf("the silo of %s: %v", tenant, err)
	}
	return c.URL(name)
}

// TestPromoteAndDemoteUnderHTTPLoad runs alone, not in parallel: its load
// takes both cores, and would starve other tests' servers.
func TestPromoteAndDemoteUnderHTTPLoad(t *testing.T) {
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "bigco", "--name", "Big Co")
	c.must("tenant", "create", "--slug", "smallco", "--name", "Small Co")
	spicedb := spicedbFlags(t)
	one, two := startServe(t, c, spicedb), startServe(t, c, spicedb)
	id := tenantID(t, c, "bigco").String()
	other := tenantID(t, c, "smallco").String()

	want := map[string]int{}
	for i := range 5 {
		for _, slug := range []string{"bigco", "smallco"} {
			email := fmt.Sprintf("seed%d@%s.test", i, slug)
			if code, body, err := call(one, slug, "POST", "/v1/auth/signup", map[string]string{"email": email, "password": loadPassword}); err != nil || code != 202 {
				t.Fatalf("signup: %d %v %v", code, body, err)
			}
			if slug == "bigco" {
				want[email]++
			}
		}
	}
	code, tokens, err := call(one, "bigco", "POST", "/v1/auth/login", map[string]string{"email": "seed1@bigco.test", "password": loadPassword})
	if err != nil || code != 200 {
		t.Fatalf("login: %d %v %v", code, tokens, err)
	}
	// Instance two has the tenant cached where it is now.
	if code, _, _ := call(two, "bigco", "GET", "/v1/tenant", nil); code != 200 {
		t.Fatalf("instance two: %d", code)
	}

	check := func(url string, l *load) {
		t.Helper()
		for _, e := range l.signedUp {
			want[e]++
		}
		got := usersIn(t, url, id)
		if !maps.Equal(got, want) {
			t.Fatalf("bigco has %d users where it lives now, want %d (acknowledged sign-ups exactly once, nothing else)", len(got), len(want))
		}
		// The latest acknowledged refresh token is valid there, once: its
		// rotation was not lost, nor applied twice.
		code, body, err := call(two, "bigco", "POST", "/v1/auth/token/refresh", map[string]string{"refresh_token": l.refresh})
		if err != nil || code != 200 {
			t.Fatalf("the last refresh token, through instance two: %d %v %v", code, body, err)
		}
		l.refresh = body["refresh_token"].(string)
		if out := c.must("audit", "verify", "--tenant", "bigco"); !strings.Contains(out, "chain intact") {
			t.Fatalf("audit verify:\n%s", out)
		}
	}

	// Promotion under load.
	l := startLoad(one, "bigco", tokens["refresh_token"].(string), 0)
	time.Sleep(300 * time.Millisecond)
	out := c.must("tenant", "promote", "bigco", "--silo-cluster", pgtest.Second(t).URL("postgres"), "--max-pause", "1s", "--purge")
	time.Sleep(300 * time.Millisecond) // load on the silo, through both instances' routing
	l.finish(t)
	if !regexp.MustCompile(`promoted bigco to a silo of its own: .* writes paused at most [0-9.]+m?s`).MatchString(out) {
		t.Fatalf("promote said:\n%s", out)
	}
	if show := c.must("tenant", "show", "bigco"); !regexp.MustCompile(`placement:\s+silo`).MatchString(show) {
		t.Fatalf("after promote:\n%s", show)
	}
	silo := siloURL(t, id)
	check(silo, l)
	if n := len(usersIn(t, silo, other)); n != 0 {
		t.Fatalf("%d of smallco's users reached bigco's silo", n)
	}
	if n := len(usersIn(t, c.url, id)); n != 0 {
		t.Fatalf("--purge left %d of bigco's users in the shared database", n)
	}

	// Demotion under load, through the other instance.
	l = startLoad(two, "bigco", l.refresh, len(want))
	time.Sleep(300 * time.Millisecond)
	out = c.must("tenant", "demote", "bigco", "--max-pause", "1s", "--purge")
	time.Sleep(300 * time.Millisecond)
	l.finish(t)
	if !strings.Contains(out, "demoted bigco to the shared database") {
		t.Fatalf("demote said:\n%s", out)
	}
	check(c.url, l)
	var moves []struct{ Direction, State string }
	if err := json.Unmarshal([]byte(c.must("tenant", "move", "list", "bigco", "--json")), &moves); err != nil ||
		len(moves) != 2 || moves[0].Direction != "demote" || moves[0].State != "done" || moves[1].State != "done" {
		t.Fatalf("moves: %+v %v", moves, err)
	}
}

// TestPromoteAndDemoteRefusePurgeWithKeep: --purge and --keep-*-for both
// say how long the old copy stays, so the CLI refuses them together, in
// the operator API's words, before anything is recorded; --purge alone
// passes the check.
func TestPromoteAndDemoteRefusePurgeWithKeep(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme")
	for _, tc := range []struct{ dir, flag, field string }{
		{"promote", "--keep-shared-for", "keep_shared_for"},
		{"demote", "--keep-silo-for", "keep_silo_for"},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			c := &cli{t: t, url: c.url, vault: c.vault}
			want := "purge: give either purge or " + tc.field
			c.fails(1, want, "tenant", tc.dir, "acme", "--purge", tc.flag, "1h")
			// Given at all, even as the default or as 0, the flag clashes.
			c.fails(1, want, "tenant", tc.dir, "acme", tc.flag+"=24h", "--purge")
			c.fails(1, want, "tenant", tc.dir, "acme", tc.flag, "0s", "--purge")
		})
	}
	// --purge alone gets past the options to the tenant.
	c.fails(1, "is already in the shared database", "tenant", "demote", "acme", "--purge")

	var moves []json.RawMessage
	if err := json.Unmarshal([]byte(c.must("tenant", "move", "list", "acme", "--json")), &moves); err != nil || len(moves) != 0 {
		t.Fatalf("after the refusals, acme's moves: %d %v; want none", len(moves), err)
	}
	if show := c.must("tenant", "show", "acme"); !regexp.MustCompile(`status:\s+active\s+placement:\s+shared`).MatchString(show) {
		t.Fatalf("after the refusals:\n%s", show)
	}
}

// TestKilledPromotionResumesOrAborts kills a real promote process with
// SIGKILL in the middle of its copy, then resumes the move, or aborts it.
func TestKilledPromotionResumesOrAborts(t *testing.T) {
	for _, then := range []string{"resume", "abort"} {
		t.Run(then, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := newCLI(t)
			c.must("migrate")
			c.must("tenant", "create", "--slug", "killme", "--name", "Kill Me")
			id := tenantID(t, c, "killme").String()
			pgtest.Primary(t) // the cluster of c.url
			conn, err := pgx.Connect(ctx, c.url)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			// Enough rows that the copy takes a moment.
			if _, err := conn.Exec(ctx, `insert into app.users (tenant_id, email) select $1, 'u' || g || '@killme.test' from generate_series(1, 20000) g`, id); err != nil {
				t.Fatal(err)
			}
			before := usersIn(t, c.url, id)

			args := append([]string{"tenant", "promote", "killme", "--silo-cluster", pgtest.Second(t).URL("postgres"), "--purge", "--database-url", c.url}, c.vault...)
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(os.Environ(), "GATEHOUSE_TEST_AS_MAIN=1")
			stderr := &syncBuffer{}
			cmd.Stderr, cmd.Stdout = stderr, io.Discard
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var moveID string
			eventually(t, 60*time.Second, "the promotion copies", func() bool {
				m := regexp.MustCompile(`move ([0-9a-f-]{36})`).FindStringSubmatch(stderr.String())
				if m == nil {
					return false
				}
				moveID = m[1]
				var phase string
				_ = conn.QueryRow(ctx, "select phase from control.placement_moves where id = $1", moveID).Scan(&phase)
				return phase == "copy"
			})
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			var state, phase string
			if err := conn.QueryRow(ctx, "select state, phase from control.placement_moves where id = $1", moveID).Scan(&state, &phase); err != nil || state != "running" {
				t.Fatalf("after the kill: %s %s %v\n%s", state, phase, err, stderr.String())
			}
			c.fails(1, "is already moving", "tenant", "promote", "killme")

			out := c.must("tenant", "move", then, moveID)
			var slots, subs int
			conn.QueryRow(ctx, "select count(*) from pg_replication_slots where database = current_database()").Scan(&slots)
			second, err := pgx.Connect(ctx, pgtest.Second(t).URL("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			second.QueryRow(ctx, "select count(*) from pg_subscription where subname = $1", "gatehouse_move_"+strings.ReplaceAll(id, "-", "")).Scan(&subs)
			second.Close(ctx)
			if then == "resume" {
				if !strings.Contains(out, "promoted killme to a silo of its own") {
					t.Fatalf("resume said:\n%s", out)
				}
				if got := usersIn(t, siloURL(t, id), id); !maps.Equal(got, before) {
					t.Fatalf("the silo has %d users, want %d", len(got), len(before))
				}
			} else {
				if show := c.must("tenant", "show", "killme"); !regexp.MustCompile(`status:\s+active\s+placement:\s+shared`).MatchString(show) {
					t.Fatalf("after abort:\n%s", show)
				}
				if got := usersIn(t, c.url, id); !maps.Equal(got, before) {
					t.Fatalf("after abort the tenant has %d users, want %d", len(got), len(before))
				}
			}
			if slots+subs != 0 {
				t.Fatalf("%s left %d slots and %d subscriptions", then, slots, subs)
			}
		})
	}
}
