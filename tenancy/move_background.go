package tenancy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
)

// The Mover's background work, for a process that serves the operator API:
// moves run in goroutines of its own (Start, Stop, Close), and the old
// copies whose grace period is over are retired on a schedule
// (RetireDueEvery). A move interrupted by the process's end stays
// resumable.

// background is the Mover's record of the runs it started.
type background struct {
	once   sync.Once
	ctx    context.Context // the runs'; cancelled by Close
	cancel context.CancelFunc
	mu     sync.Mutex
	runs   map[uuid.UUID]*backgroundRun
	wg     sync.WaitGroup
}

type backgroundRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (m *Mover) bg() *background {
	m.background.once.Do(func() {
		m.background.ctx, m.background.cancel = context.WithCancel(context.Background())
		m.background.runs = map[uuid.UUID]*backgroundRun{}
	})
	return &m.background
}

func (m *Mover) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

// Start runs move id in the background, until it ends, Stop stops it or
// Close is called. Returns Conflict if this Mover runs it already.
func (m *Mover) Start(id uuid.UUID) error {
	b := m.bg()
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.runs[id]; ok {
		return problem.Errorf(problem.Conflict, "move %s is running", id)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	r := &backgroundRun{cancel: cancel, done: make(chan struct{})}
	b.runs[id] = r
	b.wg.Go(func() {
		defer func() {
			b.mu.Lock()
			delete(b.runs, id)
			b.mu.Unlock()
			cancel()
			close(r.done)
		}()
		mv, err := m.Run(ctx, id, nil)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log().Error("move stopped", "move", id, "err", err)
		case mv != nil:
			m.log().Info("move ran", "move", id, "state", mv.State, "phase", mv.Phase, "pause_ms", mv.Pause.Seconds()*1000)
		}
	})
	return nil
}

// Stop cancels this Mover's background run of move id, if any, and waits
// until it has let go of the move (or ctx ends).
func (m *Mover) Stop(ctx context.Context, id uuid.UUID) {
	b := m.bg()
	b.mu.Lock()
	r, ok := b.runs[id]
	b.mu.Unlock()
	if !ok {
		return
	}
	r.cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
	}
}

// Close stops every background run (they stay resumable) and waits for
// them to let go.
func (m *Mover) Close() {
	b := m.bg()
	b.cancel()
	b.wg.Wait()
}

// RetireDueEvery removes, every interval until ctx ends, the old copies
// of moved tenants whose grace period is over.
func (m *Mover) RetireDueEvery(ctx context.Context, interval time.Duration) {
	for {
		done, err := m.RetireDue(ctx)
		for _, mv := range done {
			m.log().Info("retired a moved tenant's old copy", "move", mv.ID, "tenant_id", mv.Tenant.String())
		}
		if err != nil && ctx.Err() == nil {
			m.log().Warn("retiring moved tenants' old copies", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
