// Package outbox runs the relays that carry tenants' outboxes to the world
// outside Postgres (mail to SMTP, relationship changes to SpiceDB, and any
// outbox to come).
//
// An outbox is a table of the tenant's data written in the same
// transaction as the change it tells of, so that what leaves Postgres
// leaves if and only if that change committed. A relay finds the tenants
// with work due (every sweep, across the shared database and every silo,
// through tenancy.DB.Which), and at once for a tenant whose change this
// server just committed (Notify); the outbox itself claims, delivers and
// records each batch, with a retry time for what failed (Backoff). Because
// the rows are the tenant's, they move with a tenant that moves, and any
// number of servers may each run a relay: claims are leased or locked by
// each outbox, never shared.
package outbox

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/gatehouse/gatehouse/tenancy"
)

// Outbox is one kind of outbox that a Relay carries.
type Outbox interface {
	// Due is a statement answering one boolean, with the tenant's id as
	// $1: whether the tenant has work due now (tenancy.DB.Which's probe).
	Due() string
	// Drain delivers tenant t's due work now, batch by batch, records
	// each outcome, and prunes what is done. An error is logged by the
	// relay; what failed is retried at its retry time.
	Drain(ctx context.Context, t *tenancy.Tenant) error
}

// Options tune a Relay; zero values take the defaults.
type Options struct {
	Name  string        // for logs: "mail", "rebac"
	Sweep time.Duration // how often every tenant's outbox is checked; default 15s
	Log   *slog.Logger
}

// Relay carries one kind of outbox of every tenant that tenants lists.
type Relay struct {
	db      *tenancy.DB
	tenants func(context.Context) ([]*tenancy.Tenant, error)
	box     Outbox
	o       Options
	wake    chan *tenancy.Tenant
}

// New returns a relay of box over the tenants that tenants lists.
func New(db *tenancy.DB, tenants func(context.Context) ([]*tenancy.Tenant, error), box Outbox, o Options) *Relay {
	if o.Sweep <= 0 {
		o.Sweep = 15 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Relay{db: db, tenants: tenants, box: box, o: o, wake: make(chan *tenancy.Tenant, 256)}
}

// Run relays until ctx ends: every tenant with work due at start and at
// each sweep, and a tenant at once when Notify names it.
func (r *Relay) Run(ctx context.Context) {
	tick := time.NewTicker(r.o.Sweep)
	defer tick.Stop()
	r.sweep(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-r.wake:
			r.drain(ctx, t)
		case <-tick.C:
			r.sweep(ctx)
		}
	}
}

// Notify asks the relay to drain tenant t soon: call it after the
// transaction that wrote to t's outbox committed. Without it the work
// still goes, at the next sweep.
func (r *Relay) Notify(t *tenancy.Tenant) {
	select {
	case r.wake <- t:
	default: // busy; the sweep finds it
	}
}

func (r *Relay) sweep(ctx context.Context) {
	if r.tenants == nil {
		return
	}
	ts, err := r.tenants(ctx)
	if err != nil {
		r.o.Log.Warn(r.o.Name+" relay: cannot list tenants", "err", err)
		return
	}
	due, err := r.db.Which(ctx, ts, r.box.Due())
	if err != nil {
		r.o.Log.Warn(r.o.Name+" relay: cannot read every outbox", "err", err)
	}
	for _, t := range due {
		if ctx.Err() != nil {
			return
		}
		r.drain(ctx, t)
	}
}

func (r *Relay) drain(ctx context.Context, t *tenancy.Tenant) {
	if err := r.box.Drain(ctx, t); err != nil && ctx.Err() == nil {
		r.o.Log.Warn(r.o.Name+" relay: delivery failed; will retry", "tenant", t.Slug, "err", err)
	}
}

// Backoff is the delay before the retry that follows failure n (from 1):
// first doubled n-1 times, at most most, less up to a quarter of jitter so
// that what failed together does not retry together.
func Backoff(first time.Duration, n int, most time.Duration) time.Duration {
	d := min(first<<min(max(n-1, 0), 20), most)
	return d - time.Duration(rand.Int64N(int64(d/4)+1))
}

// Truncate cuts s to at most n bytes, on a character boundary: for the
// last error recorded on a row.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
