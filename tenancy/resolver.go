package tenancy

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// notifyChannel carries the id of every tenant whose row or domains
// changed; control.notify_tenant_change sends it.
const notifyChannel = "gatehouse_tenants"

// Resolver maps a request's Host to its tenant: <slug>.<base domain>, or a
// verified custom domain. Answers are cached in memory; a Postgres
// LISTEN/NOTIFY subscription drops a tenant's entries the moment any
// instance changes it. While the subscription is down the cache is not
// used, so a missed notification can never serve a stale answer.
//
// Hosts that serve a tenant are few (a slug or a verified domain each)
// and stay cached until they expire or change, in a list bounded all the
// same (knownHosts, least recently asked forgotten first). Unknown hosts
// are anyone's to invent, so their answers go to a bounded list of their
// own that forgets the least recently asked first: a flood of made-up hosts costs
// a lookup each, never memory or the known hosts' entries.
type Resolver struct {
	pool *pgxpool.Pool
	base string
	log  *slog.Logger

	// OnChange, if set before Run, is called with the id of every tenant
	// that changed (after its cache entries are gone).
	OnChange func(ID)
	// OnResync, if set before Run, is called each time the subscription
	// starts: changes made while it was down went unheard, so what is
	// kept of any tenant may be stale.
	OnResync func()

	ttl time.Duration

	mu        sync.RWMutex
	cache     *lru.Cache[string, cacheEntry]   // known host -> its tenant
	hosts     map[ID]map[string]struct{}       // the cache's hosts of each tenant
	unknown   *lru.Cache[string, unknownEntry] // unknown host -> until when
	gen       uint64                           // bumped on every invalidation; see lookup
	listening atomic.Bool
	flight    singleflight.Group
}

type cacheEntry struct {
	tenant  *Tenant
	expires time.Time
}

// unknownEntry says a host had no tenant, until when, as of generation
// gen: any invalidation since (a tenant or domain created) voids it.
type unknownEntry struct {
	until time.Time
	gen   uint64
}

// Bounds of the caches of known and unknown hosts.
const (
	knownHosts     = 200_000
	unknownHosts   = 10_000
	unknownHostTTL = 5 * time.Second
)

// NewResolver returns a resolver reading the control plane through pool
// (gatehouse_app suffices) for hosts under baseDomain. Call Run to start
// its change subscription; until then it resolves without caching.
func NewResolver(pool *pgxpool.Pool, baseDomain string, log *slog.Logger) *Resolver {
	r := &Resolver{hosts: map[ID]map[string]struct{}{}}
	// The cache's index of hosts by tenant follows it (under r.mu, as
	// every change of the cache is).
	known, err := lru.NewWithEvict[string, cacheEntry](knownHosts, func(h string, e cacheEntry) {
		if hs := r.hosts[e.tenant.ID]; hs != nil {
			delete(hs, h)
			if len(hs) == 0 {
				delete(r.hosts, e.tenant.ID)
			}
		}
	})
	if err != nil {
		panic(err) // only for a size below 1
	}
	unknown, err := lru.New[string, unknownEntry](unknownHosts)
	if err != nil {
		panic(err)
	}
	r.pool, r.base, r.log = pool, strings.ToLower(baseDomain), log
	r.ttl, r.cache, r.unknown = 5*time.Minute, known, unknown
	return r
}

// BaseDomain returns the domain under which <slug>. hosts resolve.
func (r *Resolver) BaseDomain() string { return r.base }

// Resolve returns the tenant serving host (a Host header value). Returns
// Invalid for a malformed host, NotFound for an unknown or deleted tenant,
// Forbidden for a suspended one, Unavailable if the control plane cannot be
// read.
func (r *Resolver) Resolve(ctx context.Context, host string) (*Tenant, error) {
	h, err := NormalizeHost(host)
	if err != nil {
		return nil, err
	}
	// h becomes a key of the cache and of the flight group, which outlive
	// the request: it must not share memory with the caller's string (a
	// server's request buffer, say).
	h = strings.Clone(h)
	t, err := r.cached(ctx, h)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, problem.Errorf(problem.NotFound, "no tenant is served at %s", h)
	}
	if t.Status == Suspended {
		return nil, problem.Errorf(problem.Forbidden, "tenant %s is suspended", t.Slug)
	}
	return t, nil
}

func (r *Resolver) cached(ctx context.Context, h string) (*Tenant, error) {
	useCache := r.listening.Load()
	r.mu.RLock()
	e, ok := r.cache.Get(h)
	gen := r.gen
	r.mu.RUnlock()
	if useCache && ok && time.Now().Before(e.expires) {
		return e.tenant, nil
	}
	if u, ok := r.unknown.Get(h); useCache && ok && u.gen == gen && time.Now().Before(u.until) {
		return nil, nil
	}
	v, err, _ := r.flight.Do(h, func() (any, error) {
		t, err := r.lookup(ctx, h)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		// Store only if nothing was invalidated since before the read:
		// otherwise this answer may predate the change.
		if useCache && r.listening.Load() && r.gen == gen {
			if t == nil {
				r.unknown.Add(h, unknownEntry{until: time.Now().Add(unknownHostTTL), gen: gen})
			} else {
				r.cache.Add(h, cacheEntry{tenant: t, expires: time.Now().Add(r.ttl)})
				if r.hosts[t.ID] == nil {
					r.hosts[t.ID] = map[string]struct{}{}
				}
				r.hosts[t.ID][h] = struct{}{}
			}
		}
		r.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Tenant), nil
}

// lookup reads host h's tenant from the control plane; nil if none.
func (r *Resolver) lookup(ctx context.Context, h string) (*Tenant, error) {
	q := queries.New(r.pool)
	var row queries.ControlTenant
	var err error
	switch {
	case h == r.base:
		return nil, nil
	case strings.HasSuffix(h, "."+r.base):
		slug := strings.TrimSuffix(h, "."+r.base)
		if strings.Contains(slug, ".") || ValidateSlug(slug) != nil {
			return nil, nil
		}
		row, err = q.GetLiveTenantBySlug(ctx, slug)
	default:
		row, err = q.GetLiveTenantByDomain(ctx, h)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, problem.Wrap(problem.Unavailable, err, "tenant directory unavailable, try again later")
	}
	return tenantFromRow(row), nil
}

// Invalidate drops cached answers for tenant id, and voids every cached
// "no such tenant" (the change may have created the tenant or domain they
// denied). Its cost is the tenant's own hosts, not the cache's size: a
// rotation of every tenant's keys sends a notification each.
func (r *Resolver) Invalidate(id ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++ // voids the unknown hosts' entries
	for h := range r.hosts[id] {
		r.cache.Remove(h) // and, through the eviction hook, from r.hosts
	}
}

func (r *Resolver) invalidateAll() {
	r.mu.Lock()
	r.gen++
	r.cache.Purge()
	r.unknown.Purge()
	r.mu.Unlock()
}

// Listening reports whether the change subscription is up (and so whether
// the cache is in use).
func (r *Resolver) Listening() bool { return r.listening.Load() }

// Run keeps the change subscription up until ctx ends, reconnecting with
// backoff. It holds one connection of the pool for itself.
func (r *Resolver) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.listen(ctx)
		r.listening.Store(false)
		r.invalidateAll()
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("tenant change subscription lost; resolving without cache", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (r *Resolver) listen(ctx context.Context) error {
	pc, err := r.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // a listening connection must not go back to the pool
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "listen "+notifyChannel); err != nil {
		return err
	}
	// Anything cached before now may have missed a notification.
	r.invalidateAll()
	if r.OnResync != nil {
		r.OnResync()
	}
	r.listening.Store(true)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		id, err := ParseID(n.Payload)
		if err != nil {
			r.log.Warn("ignoring malformed tenant change notification", "payload", n.Payload)
			continue
		}
		r.Invalidate(id)
		if r.OnChange != nil {
			r.OnChange(id)
		}
	}
}

// ByID returns tenant id as the control plane records it now, bypassing
// the cache (DB.Relocated). Returns NotFound for an unknown or deleted
// tenant, Unavailable if the control plane cannot be read.
func (r *Resolver) ByID(ctx context.Context, id ID) (*Tenant, error) {
	row, err := queries.New(r.pool).GetTenantByID(ctx, id.UUID())
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && Status(row.Status) == Deleted) {
		return nil, problem.Errorf(problem.NotFound, "no tenant %s", id)
	}
	if err != nil {
		return nil, unavailable(err)
	}
	return tenantFromRow(row), nil
}

// Live returns every tenant that is not deleted, read afresh from the
// control plane (for background work that visits every tenant).
func (r *Resolver) Live(ctx context.Context) ([]*Tenant, error) {
	ts, err := listLive(ctx, r.pool)
	if err != nil {
		return nil, unavailable(err)
	}
	return ts, nil
}
