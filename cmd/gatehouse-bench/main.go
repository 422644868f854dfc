// Command gatehouse-bench drives load at a running Gatehouse over HTTP and
// reports each scenario (throughput, p50, p95, p99) side by side with a
// baseline measured in the same run.
//
//	gatehouse-bench --addr 127.0.0.1:8080 --hosts acme.localhost,globex.localhost \
//	    --scenarios resolve,login,refresh,me --duration 10s --concurrency 8
//
// Scenarios and their baselines:
//   - resolve: GET /v1/tenant (resolver, tenant middleware) against GET
//     /healthz (the HTTP stack alone).
//   - login: POST /v1/auth/login (argon2id, session, audit, token) against
//     raw argon2id at the same parameters, hashed in this process on every
//     CPU before the load starts (hashes a second).
//   - refresh: POST /v1/auth/token/refresh, each client following its own
//     token family, against /healthz.
//   - me: GET /v1/me with a bearer token (verification, session check)
//     against /healthz.
//   - fairness: the first host's tenant (A) floods POST /v1/auth/login at
//     ten times (--flood) the hashing capacity (raw argon2id's hashes a
//     second, measured first) while the second host's tenant (B) signs in at a
//     tenth of it, both at a fixed rate whatever the answers; against B
//     signing in at that rate alone. B should see no 503 and a p99 under
//     twice its p99 alone.
//   - tenants: GET /v1/tenant and GET /v1/me spread over --tenants shared
//     tenants (bench-t-00001 …) against the same over two of them, in
//     --rounds; with --metrics-addr, the server's live Go heap before and
//     after every tenant was resolved, signed in and verified once (run
//     it on a freshly started server).
//   - cold: GET /v1/me on a silo tenant whose pool the server has closed
//     (the tenant just changed; or round-robin over --silos silos, more
//     than the server's silo budget) against a silo whose pool is open.
//   - silos: --tenants shared and --silos silo tenants on one cluster,
//     served by --addr and --more-addrs: every tenant signs in, then
//     /v1/me at --rate over the shared tenants alone, and beside the same
//     per-tenant rate over the silos; every answer but 200 is a failure,
//     and the shared tenants' p99 beside silo traffic is compared with
//     alone.
//   - idle: the server's CPU while nobody sends it a request (its
//     background work over every tenant), from its metrics.
//   - cc: POST /oauth/token client_credentials (a JWT access token) of a
//     machine app of the first host's tenant, against /healthz.
//   - introspect: POST /oauth/introspect of that app's access token, by
//     the app, against /healthz; every answer must say "active": true.
//   - code: POST /oauth/token authorization_code (PKCE) of a first-party
//     web app of the first host's tenant, each client a browser signed in
//     once whose every authorization the bench runs before the exchange,
//     unmeasured; against one tenant-scoped write transaction (DB.Tx as
//     gatehouse_app, updating a row) measured in the same run.
//
// The login, refresh, me and fairness scenarios sign up accounts first;
// run the server with --rate-limits off, or the per-IP limits stop the
// load within seconds. The tenants, cold and silos scenarios create their
// tenants first if they are missing, as an operator would (the bench
// reads GATEHOUSE_DATABASE_URL and GATEHOUSE_VAULT_* like gatehouse's
// commands), and sign in to an account of each. The cc, introspect and
// code scenarios register their apps the first time as an operator would
// (gatehouse app create, run with the same environment; --gatehouse-bin)
// and give them a new secret on every run; code also reads
// GATEHOUSE_DATABASE_URL for its baseline. It only targets loopback
// addresses: it is for measuring, not for testing someone else's server.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gatehouse/gatehouse/identity"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "the server's address (loopback only)")
	hosts := flag.String("hosts", "acme.localhost,globex.localhost", "comma-separated tenant hosts to spread requests over")
	scenarios := flag.String("scenarios", "resolve", "comma-separated: resolve, login, refresh, me, fairness, tenants, cold, silos, idle, cc, introspect, code")
	duration := flag.Duration("duration", 10*time.Second, "how long each scenario runs")
	concurrency := flag.Int("concurrency", 8, "concurrent clients")
	maxRequests := flag.Int("max-requests", 1_000_000, "upper bound of requests per scenario")
	flood := flag.Float64("flood", 10, "fairness: the flooding tenant's rate, in multiples of the hashing capacity")
	moreAddrs := flag.String("more-addrs", "", "silos: comma-separated addresses of the deployment's other server instances (loopback only)")
	metricsAddr := flag.String("metrics-addr", "", "the server's metrics address (serve --metrics-addr), for its heap and CPU")
	tenants := flag.Int("tenants", 10_000, "tenants, silos: shared tenants")
	silos := flag.Int("silos", 40, "cold, silos: silo tenants")
	rounds := flag.Int("rounds", 2, "tenants, cold, silos: rounds of each measurement")
	rate := flag.Float64("rate", 60, "silos: shared tenants' GET /v1/me a second")
	baseDomain := flag.String("base-domain", "localhost", "the server's --base-domain: tenants are <slug>.<base domain>")
	setupParallel := flag.Int("setup-parallel", 8, "tenants created at once")
	gatehouseBin := flag.String("gatehouse-bin", "", "cc, introspect, code: the gatehouse binary that registers the apps (default: gatehouse on the PATH, else .cache/bin/gatehouse)")
	flag.Parse()
	b := &bench{addr: *addr, hosts: strings.Split(*hosts, ","), d: *duration, conc: *concurrency, maxReq: *maxRequests, flood: *flood,
		metricsAddr: *metricsAddr, nTenants: *tenants, nSilos: *silos, rounds: *rounds, rate: *rate,
		baseDomain: *baseDomain, setupParallel: max(1, *setupParallel), gatehouseBin: *gatehouseBin}
	if *moreAddrs != "" {
		b.moreAddrs = strings.Split(*moreAddrs, ",")
	}
	err := b.run(strings.Split(*scenarios, ","))
	if b.op != nil {
		b.op.close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gatehouse-bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	addr       string
	hosts      []string
	d          time.Duration
	conc       int
	maxReq     int
	flood      float64 // fairness: the flood's rate in multiples of the hashing capacity
	client     *http.Client
	password   string
	tag        string            // this run's random tag, in account names
	accounts   map[string]string // host -> email
	healthz    *result
	failures   int
	reportRows []string

	// The scale scenarios (tenants, cold, silos, idle).
	moreAddrs     []string // the deployment's other instances
	metricsAddr   string
	nTenants      int
	nSilos        int
	rounds        int
	rate          float64
	baseDomain    string
	setupParallel int
	op            *operator // setup access, connected on first need

	// The OpenID Connect scenarios (cc, introspect, code).
	gatehouseBin string
	apps         map[string]oidcClient // by name, registered or given a new secret in this run
	stepClient   *http.Client          // client, stopping at redirects
}

func (b *bench) run(names []string) error {
	for _, addr := range append([]string{b.addr, b.metricsAddr}, b.moreAddrs...) {
		if addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return err
		}
		if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
			return errors.New("refusing a non-loopback target")
		}
	}
	b.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.conc}, Timeout: 30 * time.Second}
	fmt.Printf("%-34s %9s %10s %10s %10s %7s\n", "scenario", "req/s", "p50", "p95", "p99", "errors")
	for _, name := range names {
		var err error
		switch strings.TrimSpace(name) {
		case "resolve":
			err = b.resolve()
		case "login":
			err = b.login()
		case "refresh":
			err = b.refresh()
		case "me":
			err = b.me()
		case "fairness":
			err = b.fairness()
		case "tenants":
			err = b.tenants()
		case "cold":
			err = b.cold()
		case "silos":
			err = b.silos()
		case "idle":
			err = b.idle()
		case "cc":
			err = b.cc()
		case "introspect":
			err = b.introspect()
		case "code":
			err = b.code()
		default:
			err = fmt.Errorf("unknown scenario %q (want resolve, login, refresh, me, fairness, tenants, cold, silos, idle, cc, introspect, code)", name)
		}
		if err != nil {
			return err
		}
	}
	fmt.Println()
	for _, row := range b.reportRows {
		fmt.Println(row)
	}
	if b.failures > 0 {
		return fmt.Errorf("%d requests failed", b.failures)
	}
	return nil
}

// baseline measures GET /healthz once per run.
func (b *bench) baseline() result {
	if b.healthz == nil {
		get := func(int, int) (*http.Request, error) {
			return http.NewRequest("GET", "http://"+b.addr+"/healthz", nil)
		}
		b.measure("warm-up", get, time.Second)
		r := b.measure("baseline GET /healthz", get, b.d)
		b.healthz = &r
	}
	return *b.healthz
}

func (b *bench) resolve() error {
	base := b.baseline()
	get := func(w, i int) (*http.Request, error) {
		req, err := http.NewRequest("GET", "http://"+b.addr+"/v1/tenant", nil)
		if err == nil {
			req.Host = b.hosts[(w+i)%len(b.hosts)]
		}
		return req, err
	}
	b.measure("warm-up", get, time.Second)
	r := b.measure("GET /v1/tenant", get, b.d)
	b.compare(r, base)
	return nil
}

func (b *bench) login() error {
	if err := b.signUp(); err != nil {
		return err
	}
	rawRate := b.rawArgon2()
	post := func(w, i int) (*http.Request, error) {
		host := b.hosts[(w+i)%len(b.hosts)]
		return b.jsonRequest(host, "/v1/auth/login", map[string]string{"email": b.accounts[host], "password": b.password}, "")
	}
	r := b.measure("POST /v1/auth/login", post, b.d)
	b.reportRows = append(b.reportRows, fmt.Sprintf("%s: %.2fx raw argon2id's hashes a second", r.name, r.rate()/rawRate))
	return nil
}

// rawArgon2 measures raw argon2id at the server's parameters on every
// CPU: the most sign-ins a second this machine could do if hashing were
// all.
func (b *bench) rawArgon2() float64 {
	p := identity.DefaultHashParams
	salt := make([]byte, p.SaltLen)
	rand.Read(salt)
	var n int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.NumCPU() {
		wg.Go(func() {
			local := int64(0)
			for time.Since(start) < b.d {
				argon2.IDKey([]byte("a password of the usual length"), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
				local++
			}
			mu.Lock()
			n += local
			mu.Unlock()
		})
	}
	wg.Wait()
	rate := float64(n) / time.Since(start).Seconds()
	fmt.Printf("%-34s %9.1f\n", "baseline raw argon2id (hashes/s)", rate)
	return rate
}

// fairness floods the first host's tenant with sign-ins at ten times the
// hashing capacity while the second's signs in at a tenth of it.
func (b *bench) fairness() error {
	if len(b.hosts) < 2 {
		return errors.New("fairness needs two hosts: the flooding tenant's and the other's")
	}
	if err := b.signUp(); err != nil {
		return err
	}
	flooder, calm := b.hosts[0], b.hosts[1]
	// The flood signs in to many accounts, so that it is throttled by
	// nothing but the hashing pool (more than five sign-ins of one account
	// from one client at once are refused: attempts count before the
	// password is checked).
	floodAccounts, err := b.signUpMany(flooder, 200)
	if err != nil {
		return err
	}
	capacity := b.rawArgon2()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4096}, Timeout: 30 * time.Second}
	calmReq := func(int) (*http.Request, error) {
		return b.jsonRequest(calm, "/v1/auth/login", map[string]string{"email": b.accounts[calm], "password": b.password}, "")
	}
	floodReq := func(i int) (*http.Request, error) {
		return b.jsonRequest(flooder, "/v1/auth/login", map[string]string{"email": floodAccounts[i%len(floodAccounts)], "password": b.password}, "")
	}
	b.paced(client, "warm-up", calmReq, capacity/10, time.Second)
	alone := b.paced(client, "B alone, at capacity/10", calmReq, capacity/10, b.d)
	b.print(alone)
	var flood, loaded result
	var wg sync.WaitGroup
	wg.Go(func() {
		flood = b.paced(client, fmt.Sprintf("A flooding, at capacity*%g", b.flood), floodReq, capacity*b.flood, b.d)
	})
	wg.Go(func() { loaded = b.paced(client, "B meanwhile, at capacity/10", calmReq, capacity/10, b.d) })
	wg.Wait()
	for _, r := range []result{flood, loaded} {
		b.print(r)
	}
	// The flood's 503s are the pool doing its job; B's are failures.
	b.failures += alone.errors + alone.unavailable + loaded.errors + loaded.unavailable + flood.errors
	b.reportRows = append(b.reportRows,
		fmt.Sprintf("A: %d of %d sign-ins refused with 503, %.1f served a second (%.2fx capacity)",
			flood.unavailable, flood.sent, flood.rate(), flood.rate()/capacity),
		fmt.Sprintf("B under A's flood: %d 503s, p99 %.2fx its p99 alone (p50 %.2fx, p95 %.2fx)",
			loaded.unavailable, ratio(loaded.pct(99), alone.pct(99)), ratio(loaded.pct(50), alone.pct(50)), ratio(loaded.pct(95), alone.pct(95))))
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// paced sends newReq's requests at rate a second for d, each on its own
// as its time comes, whatever the answers so far (an open loop: a slow
// server meets the same load, not less), and collects the latencies of
// the 2xx answers. It prints nothing.
func (b *bench) paced(client *http.Client, name string, newReq func(i int) (*http.Request, error), rate float64, d time.Duration) result {
	res := result{name: name, statuses: map[int]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.Sub(start) >= d || i >= b.maxReq {
			break
		}
		time.Sleep(time.Until(at))
		req, err := newReq(i)
		res.sent++
		if err != nil {
			res.errors++
			continue
		}
		wg.Go(func() {
			t0 := time.Now()
			resp, err := client.Do(req)
			lat := time.Since(t0)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				res.errors++
				res.statuses[0]++
			case resp.StatusCode == http.StatusServiceUnavailable:
				res.unavailable++
			case resp.StatusCode/100 != 2:
				res.errors++
				res.statuses[resp.StatusCode]++
			default:
				res.latencies = append(res.latencies, lat)
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.latencies)
	return res
}

func (b *bench) refresh() error {
	if err := b.signUp(); err != nil {
		return err
	}
	base := b.baseline()
	// Each client follows its own refresh-token family.
	tokens := make([]string, b.conc)
	for w := range tokens {
		tok, err := b.signIn(b.hosts[w%len(b.hosts)])
		if err != nil {
			return err
		}
		tokens[w] = tok.RefreshToken
	}
	var mu sync.Mutex
	r := b.measureWith("POST /v1/auth/token/refresh", func(w, _ int) (*http.Request, error) {
		mu.Lock()
		tok := tokens[w]
		mu.Unlock()
		return b.jsonRequest(b.hosts[w%len(b.hosts)], "/v1/auth/token/refresh", map[string]string{"refresh_token": tok}, "")
	}, func(w int, body []byte) error {
		var t identity.Tokens
		if err := json.Unmarshal(body, &t); err != nil || t.RefreshToken == "" {
			return errors.New("no refresh token")
		}
		mu.Lock()
		tokens[w] = t.RefreshToken
		mu.Unlock()
		return nil
	}, b.d)
	b.compare(r, base)
	return nil
}

func (b *bench) me() error {
	if err := b.signUp(); err != nil {
		return err
	}
	base := b.baseline()
	access := map[string]string{}
	for _, host := range b.hosts {
		tok, err := b.signIn(host)
		if err != nil {
			return err
		}
		access[host] = tok.AccessToken
	}
	get := func(w, i int) (*http.Request, error) {
		host := b.hosts[(w+i)%len(b.hosts)]
		req, err := http.NewRequest("GET", "http://"+b.addr+"/v1/me", nil)
		if err == nil {
			req.Host = host
			req.Header.Set("Authorization", "Bearer "+access[host])
		}
		return req, err
	}
	b.measure("warm-up", get, time.Second)
	r := b.measure("GET /v1/me", get, b.d)
	b.compare(r, base)
	return nil
}

// signUp creates one account per host, once.
func (b *bench) signUp() error {
	if b.accounts != nil {
		return nil
	}
	suffix := make([]byte, 6)
	rand.Read(suffix)
	b.tag = hex.EncodeToString(suffix)
	b.password = "bench-Password-" + b.tag
	b.accounts = map[string]string{}
	for _, host := range b.hosts {
		email, err := b.signUpOne(host, "bench-"+b.tag)
		if err != nil {
			return err
		}
		b.accounts[host] = email
	}
	return nil
}

// signUpMany creates n more accounts on host and returns their addresses.
func (b *bench) signUpMany(host string, n int) ([]string, error) {
	emails := make([]string, n)
	for i := range emails {
		email, err := b.signUpOne(host, fmt.Sprintf("bench-%s-%d", b.tag, i))
		if err != nil {
			return nil, err
		}
		emails[i] = email
	}
	return emails, nil
}

func (b *bench) signUpOne(host, name string) (string, error) {
	email := name + "@" + strings.SplitN(host, ".", 2)[0] + ".test"
	req, err := b.jsonRequest(host, "/v1/auth/signup", map[string]string{"email": email, "password": b.password}, "")
	if err != nil {
		return "", err
	}
	status, body, err := b.do(req)
	if err != nil || (status != http.StatusCreated && status != http.StatusAccepted) {
		return "", fmt.Errorf("sign up on %s: %d %s %v", host, status, body, err)
	}
	return email, nil
}

func (b *bench) signIn(host string) (identity.Tokens, error) {
	var t identity.Tokens
	req, err := b.jsonRequest(host, "/v1/auth/login", map[string]string{"email": b.accounts[host], "password": b.password}, "")
	if err != nil {
		return t, err
	}
	status, body, err := b.do(req)
	if err != nil || status != http.StatusOK {
		return t, fmt.Errorf("sign in on %s: %d %s %v (is the server running with --rate-limits off?)", host, status, body, err)
	}
	return t, json.Unmarshal(body, &t)
}

func (b *bench) jsonRequest(host, path string, body any, token string) (*http.Request, error) {
	return b.jsonRequestTo(b.addr, host, path, body, token)
}

// jsonRequestTo is jsonRequest to the server instance at addr.
func (b *bench) jsonRequestTo(addr, host, path string, body any, token string) (*http.Request, error) {
	buf, _ := json.Marshal(body)
	req, err := http.NewRequest("POST", "http://"+addr+path, bytes.NewReader(buf))
	if err != nil {
		return nil, err
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

func (b *bench) do(req *http.Request) (int, []byte, error) {
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func (b *bench) compare(r, base result) {
	if r.rate() > 0 && base.rate() > 0 {
		b.reportRows = append(b.reportRows, fmt.Sprintf("%s: %.2fx the baseline's p50 latency, %.2fx its throughput",
			r.name, float64(r.pct(50))/float64(base.pct(50)), r.rate()/base.rate()))
	}
}

type result struct {
	name        string
	latencies   []time.Duration // of the 2xx answers
	errors      int
	unavailable int         // 503s, counted apart from errors by paced runs
	sent        int         // paced runs: requests sent
	statuses    map[int]int // paced runs: the errors' statuses (0: no answer)
	elapsed     time.Duration
}

func (r result) rate() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

func (r result) pct(p int) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[(len(r.latencies)-1)*p/100]
}

func (b *bench) measure(name string, newReq func(worker, i int) (*http.Request, error), d time.Duration) result {
	return b.measureWith(name, newReq, nil, d)
}

// measureWith runs newReq's requests from conc clients for d and collects
// the latencies of the 2xx answers (newReq's own time not included); seen,
// if set, gets each 2xx body, and an answer it refuses is a failure.
func (b *bench) measureWith(name string, newReq func(worker, i int) (*http.Request, error), seen func(worker int, body []byte) error, d time.Duration) result {
	return b.loop(name, d, func(ctx context.Context, w, i int) (time.Duration, error) {
		req, err := newReq(w, i)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		resp, err := b.client.Do(req.WithContext(ctx))
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lat := time.Since(t0)
		if resp.StatusCode/100 != 2 {
			return 0, fmt.Errorf("%s %s: %d %.300s", req.Method, req.URL.Path, resp.StatusCode, body)
		}
		if seen != nil {
			if err := seen(w, body); err != nil {
				return 0, fmt.Errorf("%s %s: %w: %.300s", req.Method, req.URL.Path, err, body)
			}
		}
		return lat, nil
	})
}

// loop calls one from conc clients for d (at most --max-requests calls in
// all) and collects the latencies it reports. An error is a failure,
// unless d was up when it came; the first one is printed below the row.
func (b *bench) loop(name string, d time.Duration, one func(ctx context.Context, worker, i int) (time.Duration, error)) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	res := result{name: name}
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for w := range b.conc {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			for i := 0; ctx.Err() == nil && i < b.maxReq/b.conc; i++ {
				l, err := one(ctx, w, i)
				if err != nil {
					if ctx.Err() == nil {
						errs++
						mu.Lock()
						if first == nil {
							first = err
						}
						mu.Unlock()
					}
					continue
				}
				lat = append(lat, l)
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			res.errors += errs
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.latencies)
	if name != "warm-up" {
		b.print(res)
		b.failures += res.errors
		if first != nil {
			fmt.Printf("  first failure: %v\n", first)
		}
	}
	return res
}

// print prints one result's row: 2xx answers a second, their latencies,
// and the other answers (paced runs: 503s apart).
func (b *bench) print(res result) {
	errs := fmt.Sprint(res.errors)
	if res.unavailable > 0 {
		errs += fmt.Sprintf(" (+%d 503)", res.unavailable)
	}
	for _, code := range slices.Sorted(maps.Keys(res.statuses)) {
		errs += fmt.Sprintf(" [%d: %d]", code, res.statuses[code])
	}
	fmt.Printf("%-34s %9.1f %10s %10s %10s %7s\n", res.name, res.rate(), res.pct(50), res.pct(95), res.pct(99), errs)
}
