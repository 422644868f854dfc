package tenancy

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/singleflight"
)

// Role is a database role Gatehouse connects as.
type Role int

// Roles.
const (
	// AppRole is gatehouse_app: what the server uses; subject to RLS.
	AppRole Role = iota
	// AdminRole is the operator's role that creates databases and runs
	// migrations (as gatehouse_owner).
	AdminRole
)

// SiloDSNs are the connection strings of a silo database, one per role.
// They hold passwords, so they live in the secret store only.
type SiloDSNs struct {
	Admin string // the operator's role, which migrates and drops the database
	App   string // gatehouse_app, which the server uses
}

// SiloLocator keeps silo tenants' connection strings in a secret store; the
// control plane records only the reference StoreSilo returns.
type SiloLocator interface {
	StoreSilo(ctx context.Context, t ID, dsns SiloDSNs) (ref string, err error)
	SiloDSN(ctx context.Context, t ID, ref string, role Role) (string, error)
	// ForgetSilo destroys the connection strings behind ref, once their
	// database is gone.
	ForgetSilo(ctx context.Context, t ID, ref string) error
}

// Keyring creates a tenant's key material with the tenant and destroys it,
// with every secret of the tenant, when the tenant is deleted.
type Keyring interface {
	CreateTenantKey(ctx context.Context, t ID) error
	Shred(ctx context.Context, t ID) error
}

// Secrets is what the registry needs of the secret store.
type Secrets interface {
	SiloLocator
	Keyring
}

// AppURL returns adminURL with gatehouse_app's credentials in place of the
// administrator's: the server's connection to the same database.
func AppURL(adminURL, appPassword string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("not a postgres URL")
	}
	if appPassword != "" {
		u.User = url.UserPassword(AppRoleName, appPassword)
	} else {
		u.User = url.User(AppRoleName)
	}
	return u.String(), nil
}

// SiloPools holds one small connection pool per silo tenant, opened on first
// use and closed after idling, so that thousands of silo tenants do not mean
// thousands of open connections. Together the pools keep to a budget of
// connections per Postgres cluster (see clusterBudget).
type SiloPools struct {
	locator      SiloLocator
	maxConns     int32
	maxPools     int
	idle         time.Duration
	clusterConns int
	reserve      map[string]int
	wait         time.Duration

	mu      sync.Mutex
	pools   map[ID]*siloPool
	budgets map[string]*clusterBudget
	flight  singleflight.Group
	stop    chan struct{}
	done    chan struct{}
}

type siloPool struct {
	pool     *pgxpool.Pool
	ref      string
	cluster  string // host:port
	lastUsed time.Time
}

// SiloPoolOptions bounds the silo pools.
type SiloPoolOptions struct {
	MaxConns int32         // per silo; default 4
	MaxPools int           // open at once; least recently used beyond it are closed; default 500
	Idle     time.Duration // a pool unused this long is closed; default 5m
	// ClusterConns is how many connections the silo pools open to one
	// Postgres cluster at most, together; default 20. Clusters are told
	// apart by host and port as their connection strings write them.
	ClusterConns int
	// Reserve keeps connections of a cluster (host:port) out of the silo
	// pools' reach, for the server's other pools there: the shared
	// database's, on the primary cluster.
	Reserve map[string]int
	// Wait is how long a silo transaction waits for a connection of its
	// cluster's budget before it is refused with 503; default 3s.
	Wait time.Duration
}

// ClusterOf returns the key SiloPoolOptions.Reserve knows the cluster of
// the database at url by: its host and port.
func ClusterOf(url string) (string, error) {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		return "", fmt.Errorf("database URL is malformed")
	}
	return clusterKey(cfg), nil
}

func clusterKey(cfg *pgconn.Config) string {
	return net.JoinHostPort(strings.ToLower(cfg.Host), strconv.Itoa(int(cfg.Port)))
}

// NewSiloPools returns silo pools that connect through locator as the app
// role, and starts the janitor that closes idle pools. Call Close to stop it.
func NewSiloPools(locator SiloLocator, o SiloPoolOptions) *SiloPools {
	if o.MaxConns <= 0 {
		o.MaxConns = 4
	}
	if o.MaxPools <= 0 {
		o.MaxPools = 500
	}
	if o.Idle <= 0 {
		o.Idle = 5 * time.Minute
	}
	if o.ClusterConns <= 0 {
		o.ClusterConns = 20
	}
	if o.Wait <= 0 {
		o.Wait = 3 * time.Second
	}
	s := &SiloPools{
		locator: locator, maxConns: o.MaxConns, maxPools: o.MaxPools, idle: o.Idle,
		clusterConns: o.ClusterConns, reserve: o.Reserve, wait: o.Wait,
		pools: map[ID]*siloPool{}, budgets: map[string]*clusterBudget{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go s.janitor()
	return s
}

// Pool returns the pool of silo tenant t, opening it if needed: its
// connection string comes from the secret store (one lookup per pool, not
// per transaction). Opening does not connect: the first transaction does.
// Returns Unavailable if the secret store cannot be read.
func (s *SiloPools) Pool(ctx context.Context, t *Tenant) (*pgxpool.Pool, error) {
	if p := s.lookup(t); p != nil {
		return p, nil
	}
	// Fetch and open outside the lock: the secret store is a network hop,
	// and other silos' requests must not wait on it.
	v, err, _ := s.flight.Do(t.ID.String()+"\x00"+t.SiloRef, func() (any, error) {
		if p := s.lookup(t); p != nil {
			return p, nil
		}
		dsn, err := s.locator.SiloDSN(ctx, t.ID, t.SiloRef, AppRole)
		if err != nil {
			return nil, fmt.Errorf("tenant %s: %w", t.ID, err)
		}
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			// The parse error would quote the connection string.
			return nil, fmt.Errorf("tenant %s: silo connection settings are malformed", t.ID)
		}
		cfg.MaxConns = s.maxConns
		cfg.MinConns = 0
		cfg.MaxConnIdleTime = s.idle / 2
		cluster := clusterKey(&cfg.ConnConfig.Config)
		cfg.ConnConfig.DialFunc = s.dialer(cluster, cfg.ConnConfig.DialFunc)
		cfg.AfterRelease = keepOnRelease(s.budgetOf(cluster))
		pool, err := pgxpool.NewWithConfig(context.WithoutCancel(ctx), cfg)
		if err != nil {
			return nil, fmt.Errorf("tenant %s: open silo pool: %w", t.ID, err)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.pools) >= s.maxPools {
			s.evictOldestLocked()
		}
		s.pools[t.ID] = &siloPool{pool: pool, ref: t.SiloRef, cluster: cluster, lastUsed: time.Now()}
		return pool, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*pgxpool.Pool), nil
}

// Acquire takes a connection to silo tenant t's database. A pool closed
// under the caller (the tenant changed, or the pool was evicted for its
// cluster's budget) while the caller still wants a connection is opened
// again, once: its closing cancels connections being made, which says
// nothing of the caller's request. Returns Unavailable if the database
// or the secret store cannot be reached, or the budget had no connection
// in time.
func (s *SiloPools) Acquire(ctx context.Context, t *Tenant) (*pgxpool.Conn, error) {
	for attempt := 0; ; attempt++ {
		pool, err := s.Pool(ctx, t)
		if err != nil {
			return nil, err
		}
		conn, err := pool.Acquire(ctx)
		if err == nil {
			return conn, nil
		}
		if attempt > 0 || ctx.Err() != nil || s.current(t.ID) == pool {
			return nil, unavailable(err)
		}
	}
}

// current returns tenant id's open pool, nil if none.
func (s *SiloPools) current(id ID) *pgxpool.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pools[id]; ok {
		return p.pool
	}
	return nil
}

// lookup returns t's open pool if it points where t now lives, and retires
// a pool left from before the tenant moved.
func (s *SiloPools) lookup(t *Tenant) *pgxpool.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pools[t.ID]
	if !ok {
		return nil
	}
	if p.ref != t.SiloRef {
		delete(s.pools, t.ID)
		go p.pool.Close()
		return nil
	}
	p.lastUsed = time.Now()
	return p.pool
}

// Forget closes tenant id's pool, if open (after it was deleted or moved).
func (s *SiloPools) Forget(id ID) {
	s.mu.Lock()
	p, ok := s.pools[id]
	delete(s.pools, id)
	s.mu.Unlock()
	if ok {
		p.pool.Close()
	}
}

// Holds reports whether tenant id's pool is open with a connection in it.
func (s *SiloPools) Holds(id ID) bool {
	s.mu.Lock()
	p, ok := s.pools[id]
	s.mu.Unlock()
	return ok && p.pool.Stat().TotalConns() > 0
}

// Open reports how many silo pools are open.
func (s *SiloPools) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pools)
}

// Close stops the janitor and closes every pool.
func (s *SiloPools) Close() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	pools := s.pools
	s.pools = map[ID]*siloPool{}
	s.mu.Unlock()
	for _, p := range pools {
		p.pool.Close()
	}
}

func (s *SiloPools) evictOldestLocked() {
	var oldest ID
	var at time.Time
	for id, p := range s.pools {
		if at.IsZero() || p.lastUsed.Before(at) {
			oldest, at = id, p.lastUsed
		}
	}
	if p, ok := s.pools[oldest]; ok {
		delete(s.pools, oldest)
		// Close waits for borrowed connections to come back; do not hold
		// the lock meanwhile.
		go p.pool.Close()
	}
}

func (s *SiloPools) janitor() {
	defer close(s.done)
	tick := time.NewTicker(max(s.idle/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-tick.C:
			s.mu.Lock()
			for id, p := range s.pools {
				if st := p.pool.Stat(); now.Sub(p.lastUsed) > s.idle && st.AcquiredConns() == 0 && st.ConstructingConns() == 0 {
					delete(s.pools, id)
					go p.pool.Close()
				}
			}
			s.mu.Unlock()
		}
	}
}
