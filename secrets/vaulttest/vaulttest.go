// Package vaulttest starts real Vault servers for tests, the way
// net/http/httptest starts HTTP servers: a Vault on a free loopback port,
// initialised with one unseal key, unsealed, with the KV v2 (kv) and
// Transit (transit) engines mounted, and a root token.
//
// Storage is a file folder rather than dev mode's memory, so a test can
// stop and restart Vault (or seal and unseal it) mid-test and find its keys
// again, as after a real outage.
//
// The vault binary comes from GATEHOUSE_VAULT_BIN, or from the project's
// tool cache (.cache/tools/vault-*), which tools/test.sh fills.
//
// Shared returns one server per test binary, stopped when the tests end
// (the test binary's TestMain is proctest.Main).
package vaulttest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/secrets"
)

// Server is a running Vault.
type Server struct {
	Addr  string // http://127.0.0.1:<port>
	Token string // root token

	bin, dir   string
	port, cprt int
	unsealKey  string

	mu   sync.Mutex
	proc *proctest.Process
	logs proctest.Log
}

var shared = proctest.NewShared("vaulttest", Launch)

// Shared returns the test binary's shared Vault, starting it on first use.
// Tests that stop, seal or break Vault start their own with Start.
func Shared(t testing.TB) *Server { return shared.Get(t) }

// Start starts a Vault of the test's own, stopped when the test ends.
func Start(t testing.TB) *Server { return proctest.Own(t, "vaulttest", Launch) }

// Launch starts a new Vault; the caller closes it.
func Launch() (*Server, error) {
	bin, err := proctest.Binary("GATEHOUSE_VAULT_BIN", "vault")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gatehouse-vaulttest-")
	if err != nil {
		return nil, err
	}
	ports, err := proctest.FreePorts(2)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	s := &Server{bin: bin, dir: dir, port: ports[0], cprt: ports[1]}
	s.Addr = "http://127.0.0.1:" + strconv.Itoa(s.port)
	if err := s.writeConfig(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.run(); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.initialise(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) writeConfig() error {
	cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "http://127.0.0.1:%d"
disable_mlock = true
log_level     = "warn"
`, filepath.Join(s.dir, "data"), s.port, s.cprt, s.port, s.cprt)
	return os.WriteFile(filepath.Join(s.dir, "vault.hcl"), []byte(cfg), 0o600)
}

// run starts the server process and waits until it answers.
func (s *Server) run() error {
	proc, err := proctest.Start(&s.logs, []string{"VAULT_LOG_FORMAT=standard"}, s.bin, "server", "-config", filepath.Join(s.dir, "vault.hcl"))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.proc = proc
	s.mu.Unlock()
	c := s.client("")
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-proc.Exited():
			return fmt.Errorf("vault exited at start:\n%s", s.Logs())
		default:
		}
		if _, err := c.Sys().SealStatus(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault did not answer within a minute:\n%s", s.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// initialise initialises Vault on first start, unseals it and mounts the
// engines Gatehouse uses.
func (s *Server) initialise() error {
	c := s.client("")
	init, err := c.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("init vault: %w", err)
	}
	s.unsealKey, s.Token = init.KeysB64[0], init.RootToken
	if err := s.unseal(); err != nil {
		return err
	}
	c.SetToken(s.Token)
	for path, in := range map[string]*api.MountInput{
		"kv":      {Type: "kv", Options: map[string]string{"version": "2"}},
		"transit": {Type: "transit"},
	} {
		if err := c.Sys().Mount(path, in); err != nil {
			return fmt.Errorf("mount %s: %w", path, err)
		}
	}
	return nil
}

func (s *Server) unseal() error {
	c := s.client("")
	st, err := c.Sys().Unseal(s.unsealKey)
	if err != nil {
		return fmt.Errorf("unseal vault: %w", err)
	}
	if st.Sealed {
		return errors.New("vault is still sealed after unsealing")
	}
	// An unsealed Vault answers 503 until it is active.
	deadline := time.Now().Add(30 * time.Second)
	for {
		h, err := c.Sys().Health()
		if err == nil && !h.Sealed && !h.Standby {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("vault not active after unsealing: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) client(token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(err) // only a malformed address fails, and ours is not
	}
	c.ClearToken()
	if token != "" {
		c.SetToken(token)
	}
	return c
}

// API returns a Vault API client with the root token, for tests that
// inspect Vault directly.
func (s *Server) API() *api.Client { return s.client(s.Token) }

// Config returns the configuration that logs Gatehouse in with the root
// token.
func (s *Server) Config() secrets.Config {
	return secrets.Config{Addr: s.Addr, Token: s.Token}
}

// Connect returns a secrets.Vault logged in with the root token, closed
// when the test ends.
func (s *Server) Connect(t testing.TB) *secrets.Vault {
	t.Helper()
	v, err := secrets.Connect(context.Background(), s.Config(), nil)
	if err != nil {
		t.Fatalf("vaulttest: connect: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

// AppRole enables AppRole login (once) and creates a role with the given
// policy text and token TTLs, returning its role id and a secret id.
func (s *Server) AppRole(t testing.TB, role, policy string, ttl, maxTTL time.Duration) (roleID, secretID string) {
	t.Helper()
	c := s.API()
	mounts, err := c.Sys().ListAuth()
	if err != nil {
		t.Fatalf("vaulttest: list auth: %v", err)
	}
	if _, ok := mounts["approle/"]; !ok {
		if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
			t.Fatalf("vaulttest: enable approle: %v", err)
		}
	}
	if err := c.Sys().PutPolicy(role, policy); err != nil {
		t.Fatalf("vaulttest: policy: %v", err)
	}
	if _, err := c.Logical().Write("auth/approle/role/"+role, map[string]any{
		"token_policies": []string{role},
		"token_ttl":      int(ttl.Seconds()), "token_max_ttl": int(maxTTL.Seconds()),
	}); err != nil {
		t.Fatalf("vaulttest: role: %v", err)
	}
	r, err := c.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil {
		t.Fatalf("vaulttest: role id: %v", err)
	}
	sid, err := c.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		t.Fatalf("vaulttest: secret id: %v", err)
	}
	return r.Data["role_id"].(string), sid.Data["secret_id"].(string)
}

// Stop stops the Vault process; its data stays for Restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.stop()
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

// Restart starts a stopped Vault again on the same port and unseals it,
// as an operator would after an outage.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.run(); err != nil {
		t.Fatalf("vaulttest: restart: %v", err)
	}
	if err := s.unseal(); err != nil {
		t.Fatalf("vaulttest: restart: %v", err)
	}
}

// Seal seals Vault: it keeps running but answers every request with 503
// until Unseal.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.API().Sys().Seal(); err != nil {
		t.Fatalf("vaulttest: seal: %v", err)
	}
}

// Unseal unseals a sealed Vault.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	if err := s.unseal(); err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
}

// Logs returns what the Vault process printed.
func (s *Server) Logs() string { return s.logs.String() }

// Close stops Vault and removes its data.
func (s *Server) Close() {
	s.stop()
	os.RemoveAll(s.dir)
}
