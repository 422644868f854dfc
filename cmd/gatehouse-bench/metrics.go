package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// scrape reads the server's Prometheus metrics (serve --metrics-addr) and
// returns the unlabelled samples named in want.
func (b *bench) scrape(want ...string) (map[string]float64, error) {
	if b.metricsAddr == "" {
		return nil, errors.New("no --metrics-addr: the server's metrics are needed")
	}
	resp, err := b.client.Get("http://" + b.metricsAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for _, w := range want {
			if name == w {
				if v, err := strconv.ParseFloat(value, 64); err == nil {
					got[name] = v
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, w := range want {
		if _, ok := got[w]; !ok {
			return nil, fmt.Errorf("metrics: no %s", w)
		}
	}
	return got, nil
}

// liveHeap returns the server's Go heap that survives a collection: the
// least heap in use seen while the server collects at least five times
// over more than the relays' sweep interval (5 s). Scraping the metrics
// is itself what fills the heap up to the next collection (each scrape
// allocates about 100 kB), so the least value is read just after a
// collection, within a few scrapes' garbage of the live heap; and with
// many collections, some fall outside a sweep of every tenant, whose
// working set is live while it runs.
func (b *bench) liveHeap() (float64, error) {
	const heap, gcs = "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds_count"
	first, err := b.scrape(heap, gcs)
	if err != nil {
		return 0, err
	}
	least := first[heap]
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	var mu sync.Mutex
	var scrapeErr error
	for {
		var wg sync.WaitGroup
		done := false
		for range 4 {
			wg.Go(func() {
				m, err := b.scrape(heap, gcs)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					scrapeErr = err
					return
				}
				// Only after the first collection has ended: the heap
				// before it still holds its garbage.
				if m[gcs] > first[gcs] {
					least = min(least, m[heap])
				}
				if m[gcs] >= first[gcs]+5 && time.Since(start) > 6*time.Second {
					done = true
				}
			})
		}
		wg.Wait()
		if scrapeErr != nil {
			return 0, scrapeErr
		}
		if done {
			return least, nil
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the server did not collect its garbage five times in 2 minutes")
		}
	}
}

// cpuSeconds returns the server process's CPU time so far.
func (b *bench) cpuSeconds() (float64, error) {
	m, err := b.scrape("process_cpu_seconds_total")
	if err != nil {
		return 0, err
	}
	return m["process_cpu_seconds_total"], nil
}

// idle measures the server's CPU while nobody sends it a request: its
// background work (relays sweeping every tenant's outbox, the resolver,
// Vault's health), which grows with the tenants. With operator access it
// also counts the primary database's transactions and rows read
// meanwhile, which are the server's background work (and SpiceDB's, if
// its datastore is there: it has a database of its own).
func (b *bench) idle() error {
	ctx := context.Background()
	db := func() (xacts, rows float64) {
		if os.Getenv("GATEHOUSE_DATABASE_URL") == "" {
			return -1, -1
		}
		op, err := b.operator(ctx)
		if err != nil {
			return -1, -1
		}
		if err := op.admin.QueryRow(ctx, `select (xact_commit + xact_rollback)::float8, (tup_returned + tup_fetched)::float8
			from pg_stat_database where datname = current_database()`).Scan(&xacts, &rows); err != nil {
			return -1, -1
		}
		return xacts, rows
	}
	x0, r0 := db()
	before, err := b.cpuSeconds()
	if err != nil {
		return err
	}
	start := time.Now()
	time.Sleep(b.d)
	after, err := b.cpuSeconds()
	if err != nil {
		return err
	}
	x1, r1 := db()
	elapsed := time.Since(start).Seconds()
	row := fmt.Sprintf("idle server: %.1f ms of CPU a second over %.0fs", 1000*(after-before)/elapsed, elapsed)
	if x0 >= 0 && x1 >= 0 {
		// The two reads of the statistics are transactions themselves.
		row += fmt.Sprintf("; the primary database: %.1f transactions and %.0f rows read a second (%d live tenants)",
			(x1-x0-1)/elapsed, (r1-r0)/elapsed, b.liveTenants())
	}
	b.reportRows = append(b.reportRows, row)
	return nil
}
