package identity

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// clients is the memory of tenants' apps as the protocol endpoints need
// them at every request (client_credentials grants, introspection, the
// check API's service accounts): each app with its client secrets' hashes
// and expiries. A change of a tenant's apps drops them at once on this
// server and, through the tenant change notification, on every other
// (Forget); a missed notification is outlived by clientTTL at most.
type clients struct {
	db    *tenancy.DB
	cache *lru.Cache[appKey, *appEntry]
	now   func() time.Time

	mu     sync.Mutex
	epochs map[tenancy.ID]uint64 // bumped by Forget: older reads are stale
}

// clientTTL is how long an app is used as last read.
const clientTTL = 5 * time.Second

type appKey struct {
	t        tenancy.ID
	clientID string
}

// appEntry is an app as last read.
type appEntry struct {
	app     *App
	secrets []queries.ClientSecretsOfRow
	until   time.Time
	epoch   uint64
}

func newClients(db *tenancy.DB, now func() time.Time) *clients {
	return &clients{db: db, cache: newLRU[appKey, *appEntry](100_000), now: now, epochs: map[tenancy.ID]uint64{}}
}

func (cs *clients) epoch(t tenancy.ID) uint64 {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.epochs[t]
}

// get returns tenant t's app clientID with its secrets, from memory while
// fresh.
func (cs *clients) get(ctx context.Context, t *tenancy.Tenant, clientID string) (*appEntry, error) {
	key := appKey{t.ID, clientID}
	epoch := cs.epoch(t.ID)
	if c, ok := cs.cache.Get(key); ok && c.epoch == epoch && cs.now().Before(c.until) {
		return c, nil
	}
	c := &appEntry{until: cs.now().Add(clientTTL), epoch: epoch}
	err := cs.db.Tx(ctx, t, func(q *queries.Queries) error {
		row, err := q.GetAppByClientID(ctx, queries.GetAppByClientIDParams{TenantID: t.ID.UUID(), ClientID: clientID})
		if err = queries.NotFound(err, "no such app"); err != nil {
			return err
		}
		c.app = appFromRow(row)
		c.secrets, err = q.ClientSecretsOf(ctx, queries.ClientSecretsOfParams{TenantID: t.ID.UUID(), ClientID: clientID})
		return err
	})
	if err != nil {
		return nil, err
	}
	cs.cache.Add(key, c)
	return c, nil
}

// Forget drops what is kept of tenant t's apps.
func (cs *clients) Forget(t tenancy.ID) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.epochs[t]++
}

// ForgetAll drops what is kept of every tenant's apps.
func (cs *clients) ForgetAll() {
	cs.cache.Purge()
}

// appsChanged tells every server (this one at once) that tenant t's apps
// changed.
func (s *Service) appsChanged(ctx context.Context, t tenancy.ID) {
	s.clients.Forget(t)
	_ = s.db.NotifyChange(ctx, t)
}

// ForgetClients drops what this server keeps of tenant t's apps (when the
// tenant changed).
func (s *Service) ForgetClients(t tenancy.ID) { s.clients.Forget(t) }

// ForgetAllClients drops what this server keeps of every tenant's apps.
func (s *Service) ForgetAllClients() { s.clients.ForgetAll() }
