package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// hostClient sends requests for many hosts to one server over a few
// kept-alive connections, the way a load balancer does.
type hostClient struct {
	addr string
	http *http.Client
}

func newHostClient(addr string) *hostClient {
	return &hostClient{addr: addr, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
}

// send makes a request for host and decodes a JSON answer into out (if
// non-nil and the status is 2xx).
func (h *hostClient) send(method, host, path, bearer string, body, out any) (int, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+h.addr+path, r)
	if err != nil {
		return 0, err
	}
	req.Host = host
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := h.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	if out != nil && res.StatusCode/100 == 2 {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s: %w", b, err)
		}
	}
	return res.StatusCode, nil
}

// hashing posts to an endpoint that hashes a password. Hashing is the
// machine's bottleneck, and a busy pool answers 503 with Retry-After: a
// client tries again then, as this one does.
func (h *hostClient) hashing(host, path string, body, out any) (int, error) {
	code, err := h.send("POST", host, path, "", body, out)
	for tries := 0; code == 503 && tries < 10; tries++ {
		time.Sleep(time.Second) // the answer's Retry-After
		code, err = h.send("POST", host, path, "", body, out)
	}
	return code, err
}

// wrongAnswers counts and keeps a few examples of answers given as the
// wrong tenant.
type wrongAnswers struct {
	seen     atomic.Int64 // answers looked at
	n        atomic.Int64
	mu       sync.Mutex
	examples []string
}

func (w *wrongAnswers) add(format string, args ...any) {
	w.n.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.examples) < 5 {
		w.examples = append(w.examples, fmt.Sprintf(format, args...))
	}
}

func (w *wrongAnswers) check(t *testing.T, what string) {
	t.Helper()
	if n := w.n.Load(); n > 0 {
		t.Errorf("%s: %d of %d answers were wrong, e.g. %s", what, n, w.seen.Load(), strings.Join(w.examples, "; "))
	}
	if w.seen.Load() == 0 {
		t.Errorf("%s: no answer was looked at", what)
	}
}

// TestEveryRequestIsServedAsItsHostsTenant is the isolation test that
// single-tenant tests cannot be: dozens of tenants whose hosts have the
// same length, requests for random hosts interleaved on shared
// connections, and every answer's tenant compared with its host's, on a
// public route, on sign-up and on signed-in routes. A request value kept
// past its handler (fiber reuses its buffers) shows here as an answer for
// the wrong tenant.
func TestEveryRequestIsServedAsItsHostsTenant(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	const tenants = 60
	slugs := make([]string, tenants)
	ids := map[string]string{} // slug -> tenant id
	for i := range slugs {
		slugs[i] = fmt.Sprintf("hc%03d", i+1)
		c.must("tenant", "create", "--slug", slugs[i], "--name", "Host "+slugs[i])
	}
	var listed []struct{ ID, Slug string }
	if err := json.Unmarshal([]byte(c.must("tenant", "list", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	for _, tn := range listed {
		ids[tn.Slug] = tn.ID
	}
	addr := startServe(t, c, spicedbFlags(t))
	client := newHostClient(addr)
	host := func(slug string) string { return slug + ".localhost" }
	random := func() string { return slugs[rand.IntN(len(slugs))] }

	// Many clients, each on random hosts: the tenant of every answer.
	tenantOf := func(w *wrongAnswers, n int) {
		for range n {
			slug := random()
			w.seen.Add(1)
			var got struct{ ID, Slug string }
			code, err := client.send("GET", host(slug), "/v1/tenant", "", nil, &got)
			if err != nil || code != 200 {
				w.add("GET /v1/tenant on %s: %d %v", slug, code, err)
			} else if got.Slug != slug || got.ID != ids[slug] {
				w.add("host %s answered as %s", slug, got.Slug)
			}
		}
	}
	const clients, each = 8, 400
	var public wrongAnswers
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() { tenantOf(&public, each) })
	}
	wg.Wait()
	public.check(t, "GET /v1/tenant")

	// The rest runs with that public traffic going on beside it.
	stop := make(chan struct{})
	var background wrongAnswers
	var backgroundDone sync.WaitGroup
	for range 2 {
		backgroundDone.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					tenantOf(&background, 10)
				}
			}
		})
	}
	stopBackground := sync.OnceFunc(func() { close(stop); backgroundDone.Wait() })
	defer stopBackground()

	// Sign-up: each tenant's account must land in that tenant.
	email := func(slug string) string { return "owner-" + slug + "@example.com" }
	var signups wrongAnswers
	work := make(chan string)
	go func() {
		for _, i := range rand.Perm(len(slugs)) {
			work <- slugs[i]
		}
		close(work)
	}()
	for range clients {
		wg.Go(func() {
			for slug := range work {
				signups.seen.Add(1)
				if code, err := client.hashing(host(slug), "/v1/auth/signup", map[string]string{"email": email(slug), "password": loadPassword}, nil); err != nil || code != 202 {
					signups.add("signup on %s: %d %v", slug, code, err)
				}
			}
		})
	}
	wg.Wait()
	signups.check(t, "sign-up")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "select t.slug, u.email from app.users u join control.tenants t on t.id = u.tenant_id")
	if err != nil {
		t.Fatal(err)
	}
	accounts := 0
	for rows.Next() {
		var slug, got string
		if err := rows.Scan(&slug, &got); err != nil {
			t.Fatal(err)
		}
		accounts++
		if got != email(slug) {
			t.Errorf("tenant %s holds the account %s", slug, got)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if accounts != tenants {
		t.Errorf("%d accounts after %d sign-ups", accounts, tenants)
	}

	// Sign-in and a signed-in route: the token is the host's tenant's, and
	// it shows that tenant's account.
	var signedIn wrongAnswers
	const logins = 12
	for range clients {
		wg.Go(func() {
			for range logins {
				slug := random()
				signedIn.seen.Add(1)
				var tok struct {
					AccessToken string `json:"access_token"`
				}
				code, err := client.hashing(host(slug), "/v1/auth/login", map[string]string{"email": email(slug), "password": loadPassword}, &tok)
				if err != nil || code != 200 {
					signedIn.add("login on %s: %d %v", slug, code, err)
					continue
				}
				if tid := claim(tok.AccessToken, "tid"); tid != ids[slug] {
					signedIn.add("login on %s gave a token of tenant %s", slug, tid)
				}
				var me struct{ Email string }
				if code, err := client.send("GET", host(slug), "/v1/me", tok.AccessToken, nil, &me); err != nil || code != 200 || me.Email != email(slug) {
					signedIn.add("GET /v1/me on %s: %d %v, account %q", slug, code, err, me.Email)
				}
			}
		})
	}
	wg.Wait()
	signedIn.check(t, "sign-in")
	stopBackground()
	background.check(t, "GET /v1/tenant beside the rest")
}

// claim reads one string claim of a JWT without verifying it (the server
// under test verifies; the test only looks).
func claim(jwt, name string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims map[string]any
	if json.Unmarshal(b, &claims) != nil {
		return ""
	}
	s, _ := claims[name].(string)
	return s
}
