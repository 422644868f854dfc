package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/tenancy"
)

// tenants measures GET /v1/tenant and GET /v1/me spread over --tenants
// shared tenants against the same requests over two of them, in rounds,
// and, given the server's metrics, its live heap before and after every
// tenant was served once (resolved, signed in, its token verified).
func (b *bench) tenants() error {
	ctx := context.Background()
	slugs, err := b.ensureTenants(ctx, "bench-t", b.nTenants, tenancy.Shared)
	if err != nil {
		return err
	}
	n := len(slugs)
	var heaps []float64
	var heapNames []string
	snap := func(name string) error {
		if b.metricsAddr == "" {
			return nil
		}
		h, err := b.liveHeap()
		if err != nil {
			return err
		}
		fmt.Printf("  server's live heap %s: %.1f MB\n", name, h/1e6)
		heaps, heapNames = append(heaps, h), append(heapNames, name)
		return nil
	}
	getTenant := func(slug string) (*http.Request, error) {
		req, err := http.NewRequest("GET", "http://"+b.addr+"/v1/tenant", nil)
		if err == nil {
			req.Host = slug + "." + b.baseDomain
		}
		return req, err
	}
	var tokens map[string]string
	getMe := func(slug string) (*http.Request, error) {
		req, err := http.NewRequest("GET", "http://"+b.addr+"/v1/me", nil)
		if err == nil {
			req.Host = slug + "." + b.baseDomain
			req.Header.Set("Authorization", "Bearer "+tokens[slug])
		}
		return req, err
	}

	// Every tenant served once, the server's heap measured between steps
	// (on a freshly started server, "before" is before any of them).
	if err := snap("before"); err != nil {
		return err
	}
	b.sweep(fmt.Sprintf("GET /v1/tenant, each of %d once", n), slugs, getTenant)
	if err := snap("after each tenant resolved once"); err != nil {
		return err
	}
	if tokens, err = b.signInAll(ctx, b.addr, slugs, true); err != nil {
		return err
	}
	if err := snap("after each tenant signed in once"); err != nil {
		return err
	}
	b.sweep(fmt.Sprintf("GET /v1/me, each of %d once", n), slugs, getMe)
	if err := snap("after each tenant's /v1/me once"); err != nil {
		return err
	}
	for i := 1; i < len(heaps); i++ {
		b.reportRows = append(b.reportRows, fmt.Sprintf("server heap %s: %+.1f MB, %+.1f MB per 10,000 tenants (%.1f kB each; %.1f MB before)",
			heapNames[i], (heaps[i]-heaps[0])/1e6, (heaps[i]-heaps[0])/1e6*10_000/float64(n), (heaps[i]-heaps[0])/1e3/float64(n), heaps[0]/1e6))
	}

	// The same requests over two tenants (the baseline) and over all of
	// them, alternating, in rounds.
	two := slugs[:2]
	for _, ep := range []struct {
		name string
		req  func(slug string) (*http.Request, error)
	}{{"GET /v1/tenant", getTenant}, {"GET /v1/me", getMe}} {
		over := func(set []string) func(w, i int) (*http.Request, error) {
			return func(w, i int) (*http.Request, error) { return ep.req(set[rand.IntN(len(set))]) }
		}
		b.measure("warm-up", over(two), time.Second)
		b.measure("warm-up", over(slugs), time.Second)
		for round := range b.rounds {
			base := b.measure(fmt.Sprintf("%s over 2 tenants (%d)", ep.name, round+1), over(two), b.d)
			spread := b.measure(fmt.Sprintf("%s over %d (%d)", ep.name, n, round+1), over(slugs), b.d)
			b.reportRows = append(b.reportRows, fmt.Sprintf("%s over %d tenants, round %d: %.2fx the throughput over 2, p50 %.2fx, p99 %.2fx",
				ep.name, n, round+1, spread.rate()/base.rate(), ratio(spread.pct(50), base.pct(50)), ratio(spread.pct(99), base.pct(99))))
		}
	}
	return nil
}

// sweep sends newReq's request once for each slug, --concurrency at a
// time, and prints the row of their answers.
func (b *bench) sweep(name string, slugs []string, newReq func(slug string) (*http.Request, error)) result {
	res := result{name: name}
	var mu sync.Mutex
	start := time.Now()
	b.each(slugs, func(slug string) {
		req, err := newReq(slug)
		if err != nil {
			mu.Lock()
			res.errors++
			mu.Unlock()
			return
		}
		t0 := time.Now()
		resp, err := b.client.Do(req)
		lat := time.Since(t0)
		ok := err == nil && resp.StatusCode/100 == 2
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		mu.Lock()
		defer mu.Unlock()
		if ok {
			res.latencies = append(res.latencies, lat)
		} else {
			res.errors++
		}
	})
	res.elapsed = time.Since(start)
	slices.Sort(res.latencies)
	b.print(res)
	b.failures += res.errors
	return res
}
