package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// statuses counts the answers of one kind of request.
type statuses struct {
	mu    sync.Mutex
	codes map[int]int
	bad   []string // answers that must never be
}

func (s *statuses) add(code int, retryAfter string, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.codes == nil {
		s.codes = map[int]int{}
	}
	s.codes[code]++
	switch {
	case code == 200:
	case code == 503 && retryAfter != "":
	default:
		if len(s.bad) < 10 {
			s.bad = append(s.bad, fmt.Sprintf("%s: %d (Retry-After %q)", what, code, retryAfter))
		}
	}
}

// TestDatabaseOutageNeverLooksLikeABadToken stops Postgres for a few
// seconds under /v1/me and refresh traffic of signed-in users, on a
// shared and a silo tenant. Every answer meanwhile is 200 or 503 with
// Retry-After, never 401 (a client would throw its tokens away); after
// it everything works again on its own, and every refresh family lives
// on.
func TestDatabaseOutageNeverLooksLikeABadToken(t *testing.T) {
	t.Parallel()
	// Commits are durable, as in production: an outage loses none.
	cluster, err := pgtest.Start("synchronous_commit=on")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Stop)
	c := &cli{t: t, url: cluster.URL(cluster.NewDatabase(t, "")), vault: vaultFlags(t, vaulttest.Shared(t))}
	c.must("migrate")
	c.must("tenant", "create", "--slug", "calm", "--name", "Calm")
	c.must("tenant", "create", "--slug", "deep", "--name", "Deep", "--placement", "silo")
	// A machine app of each tenant uses the OpenID Connect provider
	// meanwhile: its grants and introspections must not look like bad
	// client credentials either.
	type machine struct{ slug, id, secret string }
	var machines []machine
	for _, slug := range []string{"calm", "deep"} {
		out := c.must("app", "create", "--tenant", slug, "--name", "Worker", "--kind", "machine")
		secret := regexp.MustCompile(`client secret:\s+(\S+)`).FindStringSubmatch(out)
		id := regexp.MustCompile(`client id:\s+(\S+)`).FindStringSubmatch(out)
		if secret == nil || id == nil {
			t.Fatalf("app create:\n%s", out)
		}
		machines = append(machines, machine{slug, id[1], secret[1]})
	}
	addr := startServe(t, c, spicedbFlags(t))

	type user struct {
		slug            string
		mu              sync.Mutex // the tokens, which refreshes change
		access, refresh string
	}
	tokens := func(u *user) (access, refresh string) {
		u.mu.Lock()
		defer u.mu.Unlock()
		return u.access, u.refresh
	}
	var users []*user
	for _, slug := range []string{"calm", "deep"} {
		for i := range 3 {
			email := fmt.Sprintf("u%d@%s.example", i, slug)
			if code, body, err := call(addr, slug, "POST", "/v1/auth/signup", map[string]any{"email": email, "password": loadPassword}); err != nil || code != 202 {
				t.Fatalf("sign up on %s: %d %v %v", slug, code, body, err)
			}
			code, body, err := call(addr, slug, "POST", "/v1/auth/login", map[string]any{"email": email, "password": loadPassword})
			if err != nil || code != 200 {
				t.Fatalf("sign in on %s: %d %v %v", slug, code, body, err)
			}
			users = append(users, &user{slug: slug, access: body["access_token"].(string), refresh: body["refresh_token"].(string)})
		}
	}

	client := &http.Client{Timeout: 20 * time.Second}
	do := func(u *user, method, path, bearer, body string) (int, string, map[string]any) {
		return rawCall(t, client, addr, u.slug, method, path, bearer, body)
	}
	var me, refresh, oauth statuses
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, m := range machines {
		wg.Go(func() {
			token := ""
			for !stop.Load() {
				code, retry, body := oauthCall(client, addr, m.slug, "/oauth/token", m.id, m.secret, "grant_type=client_credentials")
				oauth.add(code, retry, m.slug+" client_credentials")
				if code == 200 {
					token = body["access_token"].(string)
				}
				if token != "" {
					code, retry, _ = oauthCall(client, addr, m.slug, "/oauth/introspect", m.id, m.secret, "token="+token)
					oauth.add(code, retry, m.slug+" introspect")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	for _, u := range users {
		wg.Go(func() {
			for !stop.Load() {
				access, _ := tokens(u)
				code, retry, _ := do(u, "GET", "/v1/me", access, "")
				me.add(code, retry, u.slug+" /v1/me")
			}
		})
		wg.Go(func() {
			for !stop.Load() {
				_, old := tokens(u)
				code, retry, body := do(u, "POST", "/v1/auth/token/refresh", "", fmt.Sprintf(`{"refresh_token":%q}`, old))
				refresh.add(code, retry, u.slug+" refresh")
				if code == 200 {
					u.mu.Lock()
					u.access, u.refresh = body["access_token"].(string), body["refresh_token"].(string)
					u.mu.Unlock()
				}
				time.Sleep(100 * time.Millisecond) // a client refreshes now and then, not in a loop
			}
		})
	}
	// Traffic flows, then Postgres goes away for a few seconds.
	eventually(t, 10*time.Second, "traffic before the outage", func() bool {
		me.mu.Lock()
		defer me.mu.Unlock()
		return me.codes[200] > 50
	})
	cluster.Down()
	outage := time.Now()
	eventually(t, 20*time.Second, "503s during the outage", func() bool {
		me.mu.Lock()
		defer me.mu.Unlock()
		return me.codes[503] > 20
	})
	time.Sleep(3*time.Second - time.Since(outage)) // the outage lasts a few seconds
	if err := cluster.Up(); err != nil {
		t.Fatal(err)
	}
	// Everyone is served again without anyone's help.
	recovered := func() bool {
		for _, u := range users {
			access, _ := tokens(u)
			if code, _, _ := do(u, "GET", "/v1/me", access, ""); code != 200 {
				return false
			}
		}
		return true
	}
	if !within(30*time.Second, recovered) {
		t.Error("not served again within 30s of the outage's end")
	}
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		for _, u := range users {
			code, _, body := do(u, "GET", "/v1/me", u.access, "")
			t.Logf("%s: /v1/me %d %v", u.slug, code, body)
		}
	}

	for _, s := range []*statuses{&me, &refresh, &oauth} {
		if len(s.bad) > 0 {
			t.Errorf("answers other than 200 or 503 with Retry-After (%v): %v", s.codes, s.bad)
		}
	}
	if oauth.codes[503] == 0 || oauth.codes[200] == 0 {
		t.Errorf("the OpenID Connect calls saw no outage, or no service: %v", oauth.codes)
	}
	t.Logf("/v1/me: %v; refresh: %v; oauth: %v", me.codes, refresh.codes, oauth.codes)
	// Every family lives on: its newest token refreshes.
	for _, u := range users {
		code, _, body := do(u, "POST", "/v1/auth/token/refresh", "", fmt.Sprintf(`{"refresh_token":%q}`, u.refresh))
		if code != 200 {
			t.Errorf("%s: the refresh family did not outlive the outage: %d %v", u.slug, code, body)
		}
	}
}

// rawCall sends a request with an optional bearer token and JSON body, and
// returns the status, the Retry-After header and the decoded answer (0
// for a request that got no answer).
func rawCall(t *testing.T, client *http.Client, addr, slug, method, path, bearer, body string) (int, string, map[string]any) {
	h := http.Header{}
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		h.Set("Authorization", "Bearer "+bearer)
	}
	return sendTo(client, addr, slug, method, path, h, body)
}

// oauthCall posts form to an OAuth endpoint of slug's as a client
// (client_secret_basic); rawCall's answers.
func oauthCall(client *http.Client, addr, slug, path, clientID, secret, form string) (int, string, map[string]any) {
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(clientID+":"+secret)))
	return sendTo(client, addr, slug, "POST", path, h, form)
}

// sendTo sends a request with header and body to slug's host at addr.
func sendTo(client *http.Client, addr, slug, method, path string, header http.Header, body string) (int, string, map[string]any) {
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		return 0, "", nil
	}
	req.Host = slug + ".localhost"
	req.Header = header
	res, err := client.Do(req)
	if err != nil {
		return 0, "", nil
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, res.Header.Get("Retry-After"), out
}

// within reports whether cond holds within d, trying every 50ms.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

func TestServeRefusesABudgetThatCannotWork(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	for _, args := range [][]string{
		{"--db-max-conns", "3"},
		{"--db-max-conns", "-1"},
		{"--db-max-conns", "20", "--db-shared-conns", "19"},
		{"--db-max-conns", "20", "--db-shared-conns", "1"},
	} {
		msg := "--db-max-conns must be"
		if len(args) > 2 {
			msg = "--db-shared-conns must be"
		}
		c.fails(1, msg, append([]string{"serve"}, args...)...)
	}
}
