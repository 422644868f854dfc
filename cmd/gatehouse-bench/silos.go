package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/tenancy"
)

// cold measures the first GET /v1/me of a silo tenant whose connection
// pool the server has closed, against the same request on a silo whose
// pool is open, one request at a time. A pool closes when the tenant
// changes (every server drops what it keeps of the tenant: pool, keys,
// data keys), its connection going back to the budget: the first request
// then opens the pool and dials. And when the cluster's connection budget
// is spent, a pool is closed to make room for another silo's: round-robin
// over --silos silos, more than the server's silo budget, finds each pool
// closed by the time its turn comes again, and waits for a connection of
// another silo to be closed.
func (b *bench) cold() error {
	ctx := context.Background()
	slugs, err := b.ensureTenants(ctx, "bench-s", b.nSilos, tenancy.Silo)
	if err != nil {
		return err
	}
	tokens, err := b.signInAll(ctx, b.addr, slugs, false)
	if err != nil {
		return err
	}
	me := func(slug string) (*http.Request, error) {
		req, err := http.NewRequest("GET", "http://"+b.addr+"/v1/me", nil)
		if err == nil {
			req.Host = slug + "." + b.baseDomain
			req.Header.Set("Authorization", "Bearer "+tokens[slug])
		}
		return req, err
	}
	// one sends slug's request alone and returns its latency (0: failed).
	one := func(slug string) time.Duration {
		req, err := me(slug)
		if err != nil {
			return 0
		}
		t0 := time.Now()
		status, _, err := b.do(req)
		if err != nil || status != 200 {
			return 0
		}
		return time.Since(t0)
	}
	collect := func(name string, n int, next func(i int) time.Duration) result {
		res := result{name: name}
		start := time.Now()
		for i := range n {
			if lat := next(i); lat > 0 {
				res.latencies = append(res.latencies, lat)
			} else {
				res.errors++
			}
		}
		res.elapsed = time.Since(start)
		slices.Sort(res.latencies)
		b.print(res)
		b.failures += res.errors
		return res
	}
	op, err := b.operator(ctx)
	if err != nil {
		return err
	}
	open := tenancy.SignupOpen
	for round := range b.rounds {
		warm := collect(fmt.Sprintf("warm silo, pool open (%d)", round+1), 200, func(int) time.Duration { return one(slugs[0]) })
		changed := collect(fmt.Sprintf("silo just changed (%d)", round+1), 40, func(i int) time.Duration {
			slug := slugs[1+i%(len(slugs)-1)]
			one(slug) // its pool open, holding a connection of the budget
			// Writing a setting, even unchanged, announces a change: every
			// server drops the tenant's pool, keys and data keys, which
			// gives its connection back to the budget 50 ms later. The
			// announcement reaches the server within milliseconds.
			if _, err := op.reg.UpdateSettings(ctx, slug, tenancy.Settings{Signup: &open}); err != nil {
				return 0
			}
			time.Sleep(200 * time.Millisecond)
			return one(slug)
		})
		evicted := collect(fmt.Sprintf("round-robin over %d silos (%d)", len(slugs), round+1), 2*len(slugs), func(i int) time.Duration {
			return one(slugs[i%len(slugs)])
		})
		for _, r := range []result{changed, evicted} {
			b.reportRows = append(b.reportRows, fmt.Sprintf("%s: p50 %s, %.1fx the warm silo's (%s); p95 %s",
				r.name, r.pct(50), ratio(r.pct(50), warm.pct(50)), warm.pct(50), r.pct(95)))
		}
	}
	return nil
}

// silos is the operator's report at its scale: --tenants shared tenants
// and --silos silo tenants on one cluster, served by the instances at
// --addr and --more-addrs. Every tenant signs in (alternating
// instances); then rounds of /v1/me over the shared tenants alone, and
// with the same per-tenant rate over the silos beside it, plus a few
// sign-ins, at a fixed rate over both instances. Nothing may fail: it
// reports every answer that is not 200 (401s, 503s, 5xx) and the shared
// tenants' p99 beside silo traffic against alone.
func (b *bench) silos() error {
	ctx := context.Background()
	shared, err := b.ensureTenants(ctx, "bench-t", b.nTenants, tenancy.Shared)
	if err != nil {
		return err
	}
	silos, err := b.ensureTenants(ctx, "bench-s", b.nSilos, tenancy.Silo)
	if err != nil {
		return err
	}
	addrs := append([]string{b.addr}, b.moreAddrs...)
	tokens := map[string]string{}
	for i, addr := range addrs {
		// Each instance signs in its share of the tenants.
		part := func(slugs []string) []string {
			var mine []string
			for j, s := range slugs {
				if j%len(addrs) == i {
					mine = append(mine, s)
				}
			}
			return mine
		}
		for _, set := range []struct {
			slugs  []string
			shared bool
		}{{part(shared), true}, {part(silos), false}} {
			t, err := b.signInAll(ctx, addr, set.slugs, set.shared)
			if err != nil {
				return err
			}
			for s, tok := range t {
				tokens[s] = tok
			}
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}
	meOver := func(slugs []string) func(i int) (*http.Request, error) {
		return func(i int) (*http.Request, error) {
			slug := slugs[rand.IntN(len(slugs))]
			req, err := http.NewRequest("GET", "http://"+addrs[i%len(addrs)]+"/v1/me", nil)
			if err == nil {
				req.Host = slug + "." + b.baseDomain
				req.Header.Set("Authorization", "Bearer "+tokens[slug])
			}
			return req, err
		}
	}
	loginOver := func(slugs []string) func(i int) (*http.Request, error) {
		return func(i int) (*http.Request, error) {
			slug := slugs[rand.IntN(len(slugs))]
			return b.jsonRequestTo(addrs[i%len(addrs)], slug+"."+b.baseDomain, "/v1/auth/login",
				map[string]string{"email": benchAccount(slug), "password": benchPassword}, "")
		}
	}
	// The same rate per tenant, shared or silo.
	sharedRate := b.rate
	siloRate := b.rate * float64(len(silos)) / float64(len(shared))
	var ratios []float64
	for round := range b.rounds {
		// run sends the shared tenants' traffic, and the silos' beside it
		// if asked, and returns every lane's result, shared /v1/me first.
		run := func(withSilos bool) []result {
			lanes := make([]result, 2, 4)
			var wg sync.WaitGroup
			wg.Go(func() { lanes[0] = b.paced(client, "shared /v1/me", meOver(shared), sharedRate, b.d) })
			wg.Go(func() { lanes[1] = b.paced(client, "shared sign-in", loginOver(shared), 1, b.d) })
			if withSilos {
				lanes = lanes[:4]
				wg.Go(func() { lanes[2] = b.paced(client, "silo /v1/me", meOver(silos), siloRate, b.d) })
				wg.Go(func() { lanes[3] = b.paced(client, "silo sign-in", loginOver(silos), 1, b.d) })
			}
			wg.Wait()
			return lanes
		}
		alone, beside := run(false), run(true)
		alone[0].name = fmt.Sprintf("shared /v1/me alone (%d)", round+1)
		beside[0].name = fmt.Sprintf("shared /v1/me beside silos (%d)", round+1)
		beside[2].name = fmt.Sprintf("silo /v1/me (%d)", round+1)
		for _, r := range []result{alone[0], beside[0], beside[2]} {
			b.print(r)
		}
		for _, r := range append(alone, beside...) {
			b.failures += r.errors + r.unavailable
			if r.errors+r.unavailable > 0 {
				b.reportRows = append(b.reportRows, fmt.Sprintf("round %d: %s: %d 503s, other failures %v", round+1, r.name, r.unavailable, r.statuses))
			}
		}
		a, s := alone[0], beside[0]
		ratios = append(ratios, ratio(s.pct(99), a.pct(99)))
		b.reportRows = append(b.reportRows, fmt.Sprintf("round %d: shared p99 %s alone, %s beside silo traffic (%.2fx); p50 %s, %s",
			round+1, a.pct(99), s.pct(99), ratio(s.pct(99), a.pct(99)), a.pct(50), s.pct(50)))
	}
	slices.Sort(ratios)
	b.reportRows = append(b.reportRows, fmt.Sprintf("shared tenants' p99 beside silo traffic: median %.2fx alone over %d rounds (%.2f)", ratios[len(ratios)/2], len(ratios), ratios))
	return nil
}
