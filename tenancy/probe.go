// The SQL written here frames the probes of many tenants in one pipelined
// batch: BEGIN READ ONLY, then each tenant's setting (setTenant) and its
// probe, then COMMIT. sqlc, one statement a call, cannot express that; the
// probes themselves are the callers'.

package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/queries"
)

// probeBatch is how many tenants one round trip of Which asks about.
const probeBatch = 500

// Which returns those of tenants for which query, a statement answering
// one boolean with the tenant's id as $1, is true when run scoped to that
// tenant. Background work uses it to find the few tenants with something
// to do without a transaction for each: the shared database's tenants are
// asked in batches, each query under its own tenant's setting, in one
// read-only transaction a batch; silo tenants one at a time. A silo that
// cannot be reached is skipped (and reported in the error) rather than
// holding up the rest.
//
// A silo this server holds no connection to (no traffic of late) is asked
// at most once per coldProbeEvery, and at most coldProbes of them per
// call, oldest asked first: with a thousand silos, a sweep every few
// seconds must not open a connection to each (see probeSilos).
func (db *DB) Which(ctx context.Context, tenants []*Tenant, query string) ([]*Tenant, error) {
	var found, shared []*Tenant
	var errs []error
	probes := db.probesOf(query, tenants)
	for _, t := range tenants {
		if t.Placement == Silo {
			if !probes.due(t.ID, db.silos != nil && db.silos.Holds(t.ID)) {
				continue
			}
			var yes bool
			err := db.RawTx(ctx, t, func(tx queries.DBTX) error {
				return tx.QueryRow(ctx, query, t.ID.UUID()).Scan(&yes)
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("tenant %s: %w", t.Slug, err))
			} else if yes {
				found = append(found, t)
			}
			continue
		}
		shared = append(shared, t)
	}
	for len(shared) > 0 {
		n := min(len(shared), probeBatch)
		hits, err := db.probeShared(ctx, shared[:n], query)
		if err != nil {
			return found, errors.Join(append(errs, err)...)
		}
		found = append(found, hits...)
		shared = shared[n:]
	}
	return found, errors.Join(errs...)
}

func (db *DB) probeShared(ctx context.Context, tenants []*Tenant, query string) ([]*Tenant, error) {
	b := &pgx.Batch{}
	b.Queue("begin read only")
	for _, t := range tenants {
		b.Queue(setTenant, t.ID.String())
		b.Queue(query, t.ID.UUID())
	}
	b.Queue("commit")
	conn, err := db.shared.Acquire(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	defer conn.Release()
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, unavailable(err)
	}
	var found []*Tenant
	for _, t := range tenants {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
		var yes bool
		if err := br.QueryRow().Scan(&yes); err != nil {
			return nil, fmt.Errorf("probe tenant %s: %w", t.Slug, err)
		}
		if yes {
			found = append(found, t)
		}
	}
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	return found, nil
}

// Bounds of the probing of cold silos (see Which).
const (
	coldProbeEvery = time.Minute
	coldProbes     = 50
)

// probesOf returns the memory of query's probes, made ready for a call
// over tenants.
func (db *DB) probesOf(query string, tenants []*Tenant) *siloProbes {
	db.mu.Lock()
	p := db.probes[query]
	if p == nil {
		p = &siloProbes{}
		db.probes[query] = p
	}
	db.mu.Unlock()
	p.begin(tenants)
	return p
}

// siloProbes remembers when Which last asked each silo one query.
type siloProbes struct {
	mu     sync.Mutex
	last   map[ID]time.Time
	budget int // cold probes left in the current call
}

// due reports whether silo id is to be asked now: always when this
// server holds connections to it (warm), else once per coldProbeEvery
// and while the call's cold probes last. It counts the probe.
func (p *siloProbes) due(id ID, warm bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last = map[ID]time.Time{}
	}
	now := time.Now()
	if !warm {
		if now.Sub(p.last[id]) < coldProbeEvery || p.budget <= 0 {
			return false
		}
		p.budget--
	}
	p.last[id] = now
	return true
}

// begin gives a call over tenants its cold probes, and drops what is
// known of silos not among them (deleted, moved), keeping the memory as
// small as the tenant list.
func (p *siloProbes) begin(tenants []*Tenant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := make(map[ID]bool, len(tenants))
	for _, t := range tenants {
		keep[t.ID] = true
	}
	for id := range p.last {
		if !keep[id] {
			delete(p.last, id)
		}
	}
	p.budget = coldProbes
}
