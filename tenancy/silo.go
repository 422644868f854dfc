package tenancy

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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

// SiloLocator turns a silo tenant's stored location into a connection string
// for a role. The control plane stores only a password-free location;
// credentials come from here, so moving them into a secret store changes
// this one implementation.
type SiloLocator interface {
	ConnString(ctx context.Context, location string, role Role) (string, error)
}

// Credentials is the SiloLocator that takes credentials from configuration:
// the app role's password for server connections, and for admin connections
// the primary database's password when the silo is on the same cluster with
// the same user (otherwise the standard PGPASSFILE applies).
type Credentials struct {
	Primary     string // the primary database URL (admin)
	AppPassword string // gatehouse_app's password; empty for trust or pgpass
}

// ConnString implements SiloLocator.
func (c Credentials) ConnString(_ context.Context, location string, role Role) (string, error) {
	u, err := url.Parse(location)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", fmt.Errorf("silo location is not a postgres URL")
	}
	switch role {
	case AppRole:
		if c.AppPassword != "" {
			u.User = url.UserPassword(AppRoleName, c.AppPassword)
		} else {
			u.User = url.User(AppRoleName)
		}
	case AdminRole:
		p, err := url.Parse(c.Primary)
		if err == nil && p.Host == u.Host && p.User.Username() == u.User.Username() {
			if pw, ok := p.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), pw)
			}
		}
	}
	return u.String(), nil
}

// SiloPools holds one small connection pool per silo tenant, opened on first
// use and closed after idling, so that thousands of silo tenants do not mean
// thousands of open connections.
type SiloPools struct {
	locator  SiloLocator
	maxConns int32
	maxPools int
	idle     time.Duration

	mu    sync.Mutex
	pools map[ID]*siloPool
	stop  chan struct{}
	done  chan struct{}
}

type siloPool struct {
	pool     *pgxpool.Pool
	location string
	lastUsed time.Time
}

// SiloPoolOptions bounds the silo pools.
type SiloPoolOptions struct {
	MaxConns int32         // per silo; default 4
	MaxPools int           // open at once; least recently used beyond it are closed; default 500
	Idle     time.Duration // a pool unused this long is closed; default 5m
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
	s := &SiloPools{
		locator: locator, maxConns: o.MaxConns, maxPools: o.MaxPools, idle: o.Idle,
		pools: map[ID]*siloPool{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go s.janitor()
	return s
}

// Pool returns the pool of silo tenant t, opening it if needed. Opening does
// not connect: the first transaction does.
func (s *SiloPools) Pool(t *Tenant) (*pgxpool.Pool, error) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pools[t.ID]; ok {
		if p.location == t.SiloLocation {
			p.lastUsed = now
			return p.pool, nil
		}
		// The tenant moved: retire the old pool.
		delete(s.pools, t.ID)
		go p.pool.Close()
	}
	dsn, err := s.locator.ConnString(context.Background(), t.SiloLocation, AppRole)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", t.ID, err)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: silo connection settings: %w", t.ID, err)
	}
	cfg.MaxConns = s.maxConns
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = s.idle / 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: open silo pool: %w", t.ID, err)
	}
	if len(s.pools) >= s.maxPools {
		s.evictOldestLocked()
	}
	s.pools[t.ID] = &siloPool{pool: pool, location: t.SiloLocation, lastUsed: now}
	return pool, nil
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
				if now.Sub(p.lastUsed) > s.idle && p.pool.Stat().AcquiredConns() == 0 {
					delete(s.pools, id)
					go p.pool.Close()
				}
			}
			s.mu.Unlock()
		}
	}
}
