package proctest

import (
	"log/slog"
	"os"
	"sync"
	"testing"
)

// Shared is a server that a test binary's tests share: started by the
// first test that asks for it, stopped by Main after the last.
type Shared[S interface{ Close() }] struct {
	name   string
	launch func() (S, error)

	mu      sync.Mutex
	server  S
	started bool
}

// NewShared returns the shared server that launch starts; name prefixes
// its failures.
func NewShared[S interface{ Close() }](name string, launch func() (S, error)) *Shared[S] {
	return &Shared[S]{name: name, launch: launch}
}

// Get returns the shared server, starting it on first use.
func (sh *Shared[S]) Get(t testing.TB) S {
	t.Helper()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.started {
		s, err := sh.launch()
		if err != nil {
			t.Fatalf("%s: %v", sh.name, err)
		}
		sh.server, sh.started = s, true
		AtExit(sh.stop)
	}
	return sh.server
}

func (sh *Shared[S]) stop() {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.started {
		sh.server.Close()
		var zero S
		sh.server, sh.started = zero, false
	}
}

// Own starts a server of the test's own with launch, closed when the
// test ends; name prefixes a failure to start.
func Own[S interface{ Close() }](t testing.TB, name string, launch func() (S, error)) S {
	t.Helper()
	s, err := launch()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(s.Close)
	return s
}

var (
	exitMu sync.Mutex
	atExit []func()
)

// AtExit registers f to run when Main ends, after the tests (latest
// first): how shared servers and clusters are stopped.
func AtExit(f func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	atExit = append(atExit, f)
}

// Main is every test binary's TestMain: it runs the tests, stops what
// they shared (AtExit), and exits with their status.
func Main(m *testing.M) {
	// What libraries log through slog's default is not the tests' output.
	slog.SetDefault(slog.New(slog.DiscardHandler))
	code := m.Run()
	exitMu.Lock()
	fs := atExit
	atExit = nil
	exitMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	os.Exit(code)
}
