package client

import (
	"context"
	"sync"
	"time"
)

// shared runs one fetch at a time for every caller that needs it, each
// beginning no sooner than interval after the previous one began: a
// stream of lookups costs one request per interval at most, however many
// there are and whatever they ask.
type shared[T any] struct {
	interval time.Duration
	timeout  time.Duration // of one fetch
	fetch    func(ctx context.Context) (T, error)

	mu   sync.Mutex
	cur  *call[T]  // the fetch under way or waiting for its turn
	last time.Time // when the last fetch began
}

// call is one fetch; its fields are set before done closes.
type call[T any] struct {
	done  chan struct{}
	began time.Time
	val   T
	err   error
}

// start returns the fetch under way, or starts one. ctx lends the fetch
// its values, not its end: the fetch is shared, and one caller's going
// away must not fail the others.
func (s *shared[T]) start(ctx context.Context) *call[T] {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		return s.cur
	}
	c := &call[T]{done: make(chan struct{})}
	s.cur = c
	go s.run(context.WithoutCancel(ctx), c, time.Until(s.last.Add(s.interval)))
	return c
}

func (s *shared[T]) run(ctx context.Context, c *call[T], wait time.Duration) {
	if wait > 0 {
		time.Sleep(wait)
	}
	s.mu.Lock()
	c.began = time.Now()
	s.last = c.began
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	c.val, c.err = s.fetch(ctx)
	cancel()
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
	close(c.done)
}

// wait returns the call's result, or ctx's error if ctx ends first.
func (c *call[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-c.done:
		return c.val, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
