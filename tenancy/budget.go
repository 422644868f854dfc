package tenancy

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/problem"
)

// A server's silo connections to one Postgres cluster come out of that
// cluster's budget: a slot is taken when a connection is dialled and given
// back when it closes, so that however many silos live on a cluster, this
// server never holds more than the budget's connections to it.
//
// When the budget is spent, a new connection waits for a slot, and meanwhile
// the connections that silo pools are not using are closed, least recently
// used pool first; a connection given back while others wait is closed
// rather than kept idle. A wait that runs out answers 503 with Retry-After.
type clusterBudget struct {
	slots   chan struct{} // a token per open connection
	waiting atomic.Int32  // dials waiting for a slot
}

// budgetOf returns cluster's budget, made on first use.
func (s *SiloPools) budgetOf(cluster string) *clusterBudget {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.budgets[cluster]
	if b == nil {
		n := max(1, s.clusterConns-s.reserve[cluster])
		b = &clusterBudget{slots: make(chan struct{}, n)}
		s.budgets[cluster] = b
	}
	return b
}

// backendExit is how long a slot stays taken after its connection closed:
// the time Postgres takes to end the connection's backend.
const backendExit = 50 * time.Millisecond

// errBudgetSpent refuses a connection the budget had no slot for in time.
func errBudgetSpent() error {
	e := problem.Errorf(problem.Unavailable, "the database is busy; try again in a moment")
	e.RetryAfter = time.Second
	return e
}

// dialer returns a DialFunc that takes a slot of cluster's budget before
// dialling with dial, and gives it back when the connection closes.
func (s *SiloPools) dialer(cluster string, dial pgconn.DialFunc) pgconn.DialFunc {
	b := s.budgetOf(cluster)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := s.take(ctx, cluster, b); err != nil {
			return nil, err
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			<-b.slots
			return nil, err
		}
		// The server's backend outlives the socket for a moment, and
		// counts against max_connections until it has gone.
		release := func() { time.AfterFunc(backendExit, func() { <-b.slots }) }
		return &budgetConn{Conn: c, release: sync.OnceFunc(release)}, nil
	}
}

// take waits up to s.wait for a slot of budget b (cluster's), freeing
// idle connections of the cluster's silo pools meanwhile.
func (s *SiloPools) take(ctx context.Context, cluster string, b *clusterBudget) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	// A slot freed by a closing pool may come back a moment later; look
	// for more idle connections while waiting, not only once.
	recheck := time.NewTicker(max(s.wait/20, 10*time.Millisecond))
	defer recheck.Stop()
	for {
		s.freeIdle(cluster)
		select {
		case b.slots <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return errBudgetSpent()
		case <-recheck.C:
		}
	}
}

// keepOnRelease is the silo pools' AfterRelease: a connection given back
// while another waits for its cluster's budget is closed, so the waiter
// gets its slot.
func keepOnRelease(b *clusterBudget) func(*pgx.Conn) bool {
	return func(*pgx.Conn) bool { return b.waiting.Load() == 0 }
}

// freeIdle closes the idle connections of the least recently used silo
// pool on cluster that has any: the whole pool if none of its
// connections is in use.
func (s *SiloPools) freeIdle(cluster string) {
	s.mu.Lock()
	var candidates []ID
	for id, p := range s.pools {
		if p.cluster == cluster && p.pool.Stat().IdleConns() > 0 {
			candidates = append(candidates, id)
		}
	}
	if len(candidates) == 0 {
		s.mu.Unlock()
		return
	}
	oldest := slices.MinFunc(candidates, func(a, b ID) int {
		return s.pools[a].lastUsed.Compare(s.pools[b].lastUsed)
	})
	p := s.pools[oldest]
	// Closing a pool cancels the connections it is making: only a pool
	// that is neither lending nor making one goes whole.
	if st := p.pool.Stat(); st.AcquiredConns() == 0 && st.ConstructingConns() == 0 {
		delete(s.pools, oldest)
		s.mu.Unlock()
		go p.pool.Close()
		return
	}
	s.mu.Unlock()
	// Taken and given back while someone waits, they are closed (see
	// keepOnRelease).
	go func() {
		for _, c := range p.pool.AcquireAllIdle(context.Background()) {
			c.Release()
		}
	}()
}

// budgetConn is a connection holding a slot of its cluster's budget until
// it closes.
type budgetConn struct {
	net.Conn
	release func()
}

func (c *budgetConn) Close() error {
	defer c.release()
	return c.Conn.Close()
}
