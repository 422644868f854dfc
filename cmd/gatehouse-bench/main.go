// Command gatehouse-bench drives load at a running Gatehouse and reports
// each scenario side by side with a baseline measured in the same run.
//
// Today's scenario is tenant resolution: GET /v1/tenant on the given tenant
// hosts (resolver, cache, tenant middleware, JSON), against GET /healthz on
// the same server (HTTP stack only) as the baseline.
//
//	gatehouse-bench --addr 127.0.0.1:8080 --hosts acme.localhost,globex.localhost --duration 10s
//
// It only targets loopback addresses: it is for measuring, not for testing
// someone else's server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "the server's address (loopback only)")
	hosts := flag.String("hosts", "acme.localhost,globex.localhost", "comma-separated tenant hosts to spread requests over")
	duration := flag.Duration("duration", 10*time.Second, "how long each scenario runs")
	concurrency := flag.Int("concurrency", 8, "concurrent clients")
	maxRequests := flag.Int("max-requests", 1_000_000, "upper bound of requests per scenario")
	flag.Parse()
	if err := run(*addr, strings.Split(*hosts, ","), *duration, *concurrency, *maxRequests); err != nil {
		fmt.Fprintln(os.Stderr, "gatehouse-bench:", err)
		os.Exit(1)
	}
}

func run(addr string, hosts []string, d time.Duration, conc, maxReq int) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); (ip == nil && host != "localhost") || (ip != nil && !ip.IsLoopback()) {
		return errors.New("refusing a non-loopback target")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}, Timeout: 10 * time.Second}
	base := scenario{name: "baseline GET /healthz", path: "/healthz", hosts: hosts}
	resolve := scenario{name: "GET /v1/tenant", path: "/v1/tenant", hosts: hosts}
	// Warm up caches and connections, then measure.
	_ = base.run(client, addr, time.Second, conc, maxReq)
	_ = resolve.run(client, addr, time.Second, conc, maxReq)
	b := base.run(client, addr, d, conc, maxReq)
	r := resolve.run(client, addr, d, conc, maxReq)
	fmt.Printf("%-24s %10s %10s %10s %8s\n", "scenario", "req/s", "p50", "p99", "errors")
	for _, res := range []result{b, r} {
		fmt.Printf("%-24s %10.0f %10s %10s %8d\n", res.name, res.rate(), res.pct(50), res.pct(99), res.errors)
	}
	if b.rate() > 0 && r.rate() > 0 {
		fmt.Printf("\n%s: %.2fx the baseline's p50 latency, %.2fx its throughput\n",
			r.name, float64(r.pct(50))/float64(b.pct(50)), r.rate()/b.rate())
	}
	if r.errors > 0 || b.errors > 0 {
		return fmt.Errorf("%d requests failed", r.errors+b.errors)
	}
	return nil
}

type scenario struct {
	name, path string
	hosts      []string
}

type result struct {
	name      string
	latencies []time.Duration
	errors    int
	elapsed   time.Duration
}

func (r result) rate() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

func (r result) pct(p int) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[(len(r.latencies)-1)*p/100]
}

func (s scenario) run(client *http.Client, addr string, d time.Duration, conc, maxReq int) result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	res := result{name: s.name}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			var lat []time.Duration
			var errs int
			for i := 0; ctx.Err() == nil && i < maxReq/conc; i++ {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+s.path, nil)
				req.Host = s.hosts[(w+i)%len(s.hosts)]
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs++
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs++
					continue
				}
				lat = append(lat, time.Since(t0))
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
	return res
}
