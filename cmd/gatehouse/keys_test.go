package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestKeyCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme")
	c.must("tenant", "create", "--slug", "globex", "--name", "Globex", "--placement", "silo")
	if out := c.must("tenant", "show", "globex"); !strings.Contains(out, "vault:kv/tenants/") {
		t.Fatalf("show does not give the silo's Vault reference:\n%s", out)
	}

	out := c.must("keys", "rotate", "--tenant", "acme", "--settle", "0s")
	if !strings.Contains(out, "acme: new key version made") || !strings.Contains(out, "acme: done") ||
		!strings.Contains(out, "acme: token signing key ") {
		t.Fatalf("rotate output:\n%s", out)
	}
	out = c.must("keys", "rotate", "--all", "--settle", "0s")
	if !strings.Contains(out, "[1/2] acme") || !strings.Contains(out, "[2/2] globex") || strings.Count(out, ": done") != 2 {
		t.Fatalf("rotate --all output:\n%s", out)
	}

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "acme.key")
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = c.must("tenant", "byok", "import", "--tenant", "acme", "--key-file", keyFile, "--settle", "0s")
	if !strings.Contains(out, "acme: key imported") || !strings.Contains(out, "acme: done") {
		t.Fatalf("byok output:\n%s", out)
	}
	// Rotation goes on working on top of the tenant's own key.
	c.must("keys", "rotate", "--tenant", "acme", "--settle", "0s")

	shortKey := filepath.Join(dir, "short.key")
	os.WriteFile(shortKey, []byte("c2hvcnQ=\n"), 0o600)
	c.fails(1, "the key must be 32 bytes", "tenant", "byok", "import", "--tenant", "acme", "--key-file", shortKey)
	c.fails(1, "cannot read the key file", "tenant", "byok", "import", "--tenant", "acme", "--key-file", filepath.Join(dir, "missing"))
	c.fails(1, `no tenant "nobody"`, "tenant", "byok", "import", "--tenant", "nobody", "--key-file", keyFile)
	c.fails(2, "give --tenant SLUG or --all", "keys", "rotate")
	c.fails(2, "give --tenant SLUG or --all", "keys", "rotate", "--tenant", "acme", "--all")
	c.fails(2, "keys: want rotate", "keys", "spin")
	c.fails(1, `no tenant "nobody"`, "keys", "rotate", "--tenant", "nobody")
}

func TestAuditCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme")
	if out := c.must("audit", "verify", "--tenant", "acme"); !strings.Contains(out, "0 events, chain intact") {
		t.Fatalf("verify of an empty trail:\n%s", out)
	}
	file := filepath.Join(t.TempDir(), "audit.ndjson")
	c.must("audit", "export", "--tenant", "acme", "--out", file)
	if b, err := os.ReadFile(file); err != nil || len(b) != 0 {
		t.Fatalf("export of an empty trail: %q, %v", b, err)
	}
	// Someone with database access forges an event: verify says so and
	// exits 1.
	pool := pgtest.Pool(t, c.url, 1)
	_, err := pool.Exec(t.Context(), `insert into app.audit_events (tenant_id, seq, at, action, outcome, prev_hash, hash)
		select id, 1, now(), 'login', 'success', sha256('x'), sha256('y') from control.tenants where slug = 'acme'`)
	if err != nil {
		t.Fatal(err)
	}
	c.fails(1, "audit trail of acme is broken at event 1", "audit", "verify", "--tenant", "acme")
	c.fails(2, "give --tenant SLUG", "audit", "verify")
	c.fails(2, "audit: want verify or export", "audit", "mend")
}

func TestTenantAdminGrant(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme")
	pool := pgtest.Pool(t, c.url, 1)
	if _, err := pool.Exec(t.Context(), `insert into app.users (tenant_id, email) select id, 'ada@example.com' from control.tenants where slug = 'acme'`); err != nil {
		t.Fatal(err)
	}
	// Admin rights only for an address its owner confirmed.
	c.fails(1, "email address is not confirmed", "tenant", "admin", "grant", "--tenant", "acme", "--email", "ada@example.com")
	if _, err := pool.Exec(t.Context(), `update app.users set email_verified_at = now() where email = 'ada@example.com'`); err != nil {
		t.Fatal(err)
	}
	if out := c.must("tenant", "admin", "grant", "--tenant", "acme", "--email", "Ada@Example.com"); !strings.Contains(out, "ada@example.com is now an admin of acme") {
		t.Fatalf("grant output: %s", out)
	}
	var role string
	pool.QueryRow(t.Context(), "select role from app.users where email = 'ada@example.com'").Scan(&role)
	if role != "admin" {
		t.Fatalf("role %q after grant", role)
	}
	c.must("tenant", "admin", "revoke", "--tenant", "acme", "--email", "ada@example.com")
	pool.QueryRow(t.Context(), "select role from app.users where email = 'ada@example.com'").Scan(&role)
	if role != "member" {
		t.Fatalf("role %q after revoke", role)
	}
	c.fails(1, "no account with this email", "tenant", "admin", "grant", "--tenant", "acme", "--email", "nobody@example.com")
	c.fails(2, "give --tenant SLUG and --email EMAIL", "tenant", "admin", "grant", "--tenant", "acme")
	c.fails(2, "want grant, revoke or invite", "tenant", "admin", "crown")
}
