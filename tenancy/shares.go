package tenancy

import (
	"context"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/problem"
)

// shares bounds how many connections of a pool each tenant's transactions
// hold at once in this process: one tenant's pile of waiting requests can
// then take only its own share, and the rest of the pool stays free for
// everyone else.
type shares struct {
	each int           // connections one tenant may hold
	wait time.Duration // how long a transaction waits for its share

	mu    sync.Mutex
	slots map[ID]*share
}

type share struct {
	sem   chan struct{} // a token held per connection in use
	users int           // transactions holding or waiting for a token
}

func newShares(each int, wait time.Duration) *shares {
	return &shares{each: each, wait: wait, slots: map[ID]*share{}}
}

// take waits for one of tenant id's connections and returns the function
// that gives it back. Returns Unavailable with Retry-After when the wait
// runs out.
func (s *shares) take(ctx context.Context, id ID) (func(), error) {
	s.mu.Lock()
	sh := s.slots[id]
	if sh == nil {
		sh = &share{sem: make(chan struct{}, s.each)}
		s.slots[id] = sh
	}
	sh.users++
	s.mu.Unlock()

	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	select {
	case sh.sem <- struct{}{}:
		return func() { <-sh.sem; s.leave(id, sh) }, nil
	case <-ctx.Done():
		s.leave(id, sh)
		return nil, ctx.Err()
	case <-timer.C:
		s.leave(id, sh)
		e := problem.Errorf(problem.Unavailable, "too many requests of this organisation are waiting for the database; try again in a moment")
		e.RetryAfter = time.Second
		return nil, e
	}
}

// leave drops a transaction's interest in sh, forgetting the tenant's
// share when nobody holds or waits for it.
func (s *shares) leave(id ID, sh *share) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sh.users--; sh.users == 0 {
		delete(s.slots, id)
	}
}
