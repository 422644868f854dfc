// Package spicedbtest starts real SpiceDB servers for tests, the way
// net/http/httptest starts HTTP servers.
//
// Start and Shared run `spicedb serve-testing`: an in-memory SpiceDB in
// which every preshared key sees a datastore of its own, so each test
// that connects with Connect (a fresh key each time) is alone in it and
// tests run in parallel. StartPostgres runs `spicedb serve` on a Postgres
// datastore instead, for tests that stop SpiceDB and start it again and
// expect their relationships back.
//
// The spicedb binary comes from GATEHOUSE_SPICEDB_BIN, or from the
// project's tool cache (.cache/tools/spicedb-*), which tools/test.sh
// fills. The shared server stops when the tests end (the test binary's
// TestMain is proctest.Main).
package spicedbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
)

// Server is a running SpiceDB.
type Server struct {
	Addr string // host:port of its gRPC API, plaintext
	// Key is the preshared key of a StartPostgres server; a serve-testing
	// server takes any key.
	Key string

	args []string
	mu   sync.Mutex
	proc *proctest.Process
	logs proctest.Log
}

var shared = proctest.NewShared("spicedbtest", Launch)

// Shared returns the test binary's shared serve-testing SpiceDB,
// starting it on first use.
func Shared(t testing.TB) *Server { return shared.Get(t) }

// Start starts a serve-testing SpiceDB of the test's own.
func Start(t testing.TB) *Server { return proctest.Own(t, "spicedbtest", Launch) }

// Launch starts a serve-testing SpiceDB; the caller closes it.
func Launch() (*Server, error) {
	ports, err := proctest.FreePorts(2)
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	s.args = []string{"serve-testing", "--grpc-addr", s.Addr,
		"--readonly-grpc-addr", "127.0.0.1:" + strconv.Itoa(ports[1]),
		"--http-enabled=false", "--readonly-http-enabled=false", "--log-level", "warn"}
	if err := s.run(); err != nil {
		return nil, err
	}
	return s, nil
}

// StartPostgres starts `spicedb serve` on the Postgres database at url,
// migrating its datastore first. It keeps its relationships across Stop
// and Restart.
func StartPostgres(t testing.TB, url string) *Server {
	t.Helper()
	bin, err := proctest.Binary("GATEHOUSE_SPICEDB_BIN", "spicedb")
	if err != nil {
		t.Fatalf("spicedbtest: %v", err)
	}
	if out, err := exec.Command(bin, "datastore", "migrate", "head", "--datastore-engine", "postgres",
		"--datastore-conn-uri", url, "--log-level", "warn").CombinedOutput(); err != nil {
		t.Fatalf("spicedbtest: migrate the datastore: %v\n%s", err, out)
	}
	ports, err := proctest.FreePorts(1)
	if err != nil {
		t.Fatalf("spicedbtest: %v", err)
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), Key: newKey()}
	s.args = []string{"serve", "--grpc-addr", s.Addr, "--grpc-preshared-key", s.Key,
		"--datastore-engine", "postgres", "--datastore-conn-uri", url,
		"--http-enabled=false", "--metrics-enabled=false", "--dispatch-cluster-enabled=false",
		"--telemetry-endpoint=", "--skip-release-check", "--log-level", "warn"}
	if err := s.run(); err != nil {
		t.Fatalf("spicedbtest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func newKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// run starts the process and waits until it answers.
func (s *Server) run() error {
	bin, err := proctest.Binary("GATEHOUSE_SPICEDB_BIN", "spicedb")
	if err != nil {
		return err
	}
	proc, err := proctest.Start(&s.logs, nil, bin, s.args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = proc
	s.mu.Unlock()
	key := s.Key
	if key == "" {
		key = newKey()
	}
	c, err := rebac.Connect(rebac.Config{Addr: s.Addr, Key: key, Plaintext: true, Timeout: time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-proc.Exited():
			return fmt.Errorf("spicedb exited at start:\n%s", s.logs.String())
		default:
		}
		// No schema yet is an answer too: the server is up.
		if err := c.Healthy(context.Background()); err == nil || problem.CodeOf(err) != problem.Unavailable {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("spicedb did not answer within a minute:\n%s", s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Config returns the configuration that reaches the server: with a key
// of its own, so that on a serve-testing server the caller sees a
// datastore no other caller sees.
func (s *Server) Config() rebac.Config {
	key := s.Key
	if key == "" {
		key = newKey()
	}
	return rebac.Config{Addr: s.Addr, Key: key, Plaintext: true}
}

// Connect returns a client of its own (see Config) with Gatehouse's
// schema applied, closed when the test ends.
func (s *Server) Connect(t testing.TB) *rebac.Client {
	t.Helper()
	c, err := rebac.Connect(s.Config())
	if err != nil {
		t.Fatalf("spicedbtest: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.EnsureSchema(context.Background()); err != nil {
		t.Fatalf("spicedbtest: schema: %v", err)
	}
	return c
}

// Stop stops SpiceDB, as an outage would.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
}

// Restart starts a stopped SpiceDB again on the same address.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.run(); err != nil {
		t.Fatalf("spicedbtest: restart: %v", err)
	}
}

func (s *Server) stop() {
	s.mu.Lock()
	proc := s.proc
	s.proc = nil
	s.mu.Unlock()
	if proc != nil {
		proc.Stop()
	}
}

// Logs returns what the server printed.
func (s *Server) Logs() string { return s.logs.String() }

// Close stops the server.
func (s *Server) Close() { s.stop() }
