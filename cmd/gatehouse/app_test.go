package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// TestAppCommands: an operator registers, lists, shows, rotates and
// deletes a tenant's apps; a secret is printed once and stored as its
// SHA-256; bad input fails with the field at fault; every change is in
// the tenant's audit trail, whose chain stays whole.
func TestAppCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme")
	c.must("tenant", "create", "--slug", "globex", "--name", "Globex")
	pool := pgtest.Pool(t, c.url, 1)

	out := c.must("app", "create", "--tenant", "acme", "--name", "Portal", "--kind", "web",
		"--redirect-uri", "https://portal.acme.test/callback", "--redirect-uri", "http://localhost:3000/callback",
		"--grant-types", "authorization_code,refresh_token", "--scopes", "openid,email,offline_access", "--access-token-ttl", "10m")
	secret := regexp.MustCompile(`client secret:\s+(\S+)`).FindStringSubmatch(out)
	clientID := regexp.MustCompile(`client id:\s+(\S+)`).FindStringSubmatch(out)
	id := regexp.MustCompile(`(?m)^id:\s+(\S+)`).FindStringSubmatch(out)
	if secret == nil || clientID == nil || id == nil || !regexp.MustCompile(`access token ttl:\s+10m0s`).MatchString(out) ||
		!regexp.MustCompile(`redirect uri:\s+http://localhost:3000/callback`).MatchString(out) {
		t.Fatalf("create output:\n%s", out)
	}
	var stored []byte
	if err := pool.QueryRow(t.Context(), "select secret_hash from app.oidc_app_secrets where app_id = $1", id[1]).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if h := sha256.Sum256([]byte(secret[1])); string(stored) != string(h[:]) {
		t.Fatal("the stored hash is not the printed secret's SHA-256")
	}

	var apps []struct {
		ClientID string `json:"client_id"`
		Name     string
		Kind     string
	}
	list := c.must("app", "list", "--tenant", "acme", "--json")
	if err := json.Unmarshal([]byte(list), &apps); err != nil || len(apps) != 1 || apps[0].ClientID != clientID[1] {
		t.Fatalf("list: %v %s", err, list)
	}
	if empty := c.must("app", "list", "--tenant", "globex", "--json"); strings.TrimSpace(empty) != "[]" {
		t.Fatalf("another tenant lists %s", empty)
	}
	for _, ref := range []string{id[1], clientID[1]} {
		show := c.must("app", "show", "--tenant", "acme", ref)
		if !strings.Contains(show, clientID[1]) || strings.Contains(show, secret[1]) || !strings.Contains(show, "valid until rotated") {
			t.Fatalf("show %s:\n%s", ref, show)
		}
	}
	c.fails(1, "no such app", "app", "show", "--tenant", "globex", id[1])
	c.fails(1, "no such app", "app", "show", "--tenant", "globex", clientID[1])

	code, rotated, errOut := c.run("", "app", "rotate-secret", "--tenant", "acme", clientID[1], "--overlap", "1h")
	if code != 0 || !strings.Contains(errOut, "the previous one stays valid until") || len(strings.TrimSpace(rotated)) != 43 {
		t.Fatalf("rotate-secret: exit %d, %q, %q", code, rotated, errOut)
	}
	var n int
	pool.QueryRow(t.Context(), "select count(*) from app.oidc_app_secrets where app_id = $1 and expires_at is not null", id[1]).Scan(&n)
	if n != 1 {
		t.Fatalf("%d replaced secrets kept for the overlap; want 1", n)
	}

	machineJWKS := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(machineJWKS, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}]}`), 0o600)
	out = c.must("app", "create", "--tenant", "acme", "--name", "Nightly", "--kind", "machine", "--auth-method", "private_key_jwt", "--jwks-file", machineJWKS)
	machine := regexp.MustCompile(`client id:\s+(\S+)`).FindStringSubmatch(out)
	if machine == nil || strings.Contains(out, "client secret:") || !strings.Contains(out, `"kid": "k1"`) && !strings.Contains(out, `"kid":"k1"`) {
		t.Fatalf("private_key_jwt create output:\n%s", out)
	}

	// Bad input: the field at fault, exit 1, nothing made.
	c.fails(1, "redirect_uris[0]: must use https", "app", "create", "--tenant", "acme", "--name", "X", "--kind", "web", "--redirect-uri", "http://portal.acme.test/cb")
	c.fails(1, "redirect_uris[0]: must not contain wildcards", "app", "create", "--tenant", "acme", "--name", "X", "--kind", "spa", "--redirect-uri", "https://*.acme.test/cb")
	c.fails(1, "kind: must be web, spa, native or machine", "app", "create", "--tenant", "acme", "--name", "X", "--kind", "desktop")
	c.fails(1, "grant_types: a machine app has client_credentials alone", "app", "create", "--tenant", "acme", "--name", "X", "--kind", "machine", "--grant-types", "authorization_code")
	c.fails(1, "jwks.keys[0].d: is private key material", "app", "create", "--tenant", "acme", "--name", "X", "--kind", "machine", "--auth-method", "private_key_jwt",
		"--jwks-file", writeFile(t, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}`))
	c.fails(1, "cannot read the JWKS file", "app", "create", "--tenant", "acme", "--name", "X", "--kind", "machine", "--auth-method", "private_key_jwt", "--jwks-file", "/nonexistent")
	c.fails(1, "overlap_seconds: must be whole seconds from 0 to 604800", "app", "rotate-secret", "--tenant", "acme", id[1], "--overlap", "200h")
	c.fails(1, "authenticates with private_key_jwt", "app", "rotate-secret", "--tenant", "acme", machine[1])
	c.fails(1, "no such app", "app", "rotate-secret", "--tenant", "acme", "not-a-client-id")
	c.fails(1, `no tenant "nobody"`, "app", "list", "--tenant", "nobody")
	c.fails(2, "app list: give --tenant SLUG", "app", "list")
	c.fails(2, "want 1 argument", "app", "show", "--tenant", "acme")
	c.fails(2, "unknown subcommand", "app", "launch", "--tenant", "acme")
	if list = c.must("app", "list", "--tenant", "acme"); strings.Count(list, "\n") != 3 {
		t.Fatalf("after the refusals:\n%s", list)
	}

	// Deleting asks for the client id unless told --yes.
	code, _, errOut = c.run("nope\n", "app", "delete", "--tenant", "acme", id[1])
	if code != 1 || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("unconfirmed delete: exit %d %q", code, errOut)
	}
	code, out, _ = c.run(clientID[1]+"\n", "app", "delete", "--tenant", "acme", id[1])
	if code != 0 || !strings.Contains(out, "deleted app Portal") {
		t.Fatalf("confirmed delete: exit %d %q", code, out)
	}
	pool.QueryRow(t.Context(), "select count(*) from app.oidc_app_secrets where app_id = $1", id[1]).Scan(&n)
	if n != 0 {
		t.Fatalf("%d secrets of a deleted app left", n)
	}

	var actions []string
	rows, err := pool.Query(t.Context(), `select action || ' by ' || coalesce(details->>'by', '?') from app.audit_events
		where tenant_id = (select id from control.tenants where slug = 'acme') order by seq`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var a string
		rows.Scan(&a)
		actions = append(actions, a)
	}
	if want := "[app.create by operator app.secret.rotate by operator app.create by operator app.delete by operator]"; fmt.Sprint(actions) != want {
		t.Fatalf("audited %v; want %s", actions, want)
	}
	if out := c.must("audit", "verify", "--tenant", "acme"); !strings.Contains(out, "4 events, chain intact") {
		t.Fatalf("audit verify:\n%s", out)
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAppUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"app"}, stdio{nil, &out, &errOut}); code != 2 || !strings.Contains(errOut.String(), "app: want create, list, show, delete or rotate-secret") {
		t.Fatalf("app alone: exit %d, %q", code, errOut.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"help"}, stdio{nil, &out, &errOut}); code != 0 || !strings.Contains(out.String(), "gatehouse app rotate-secret --tenant SLUG") {
		t.Fatalf("help does not tell of the app commands:\n%s", out.String())
	}
}

// TestAppsMoveWithTheirTenant: a promotion copies and verifies the apps
// (arrays, JWKS, secrets) with the rest of the tenant, and they work on
// in the silo.
func TestAppsMoveWithTheirTenant(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	c.must("tenant", "create", "--slug", "mover", "--name", "Mover")
	out := c.must("app", "create", "--tenant", "mover", "--name", "Portal", "--kind", "native",
		"--redirect-uri", "com.mover.app:/cb", "--redirect-uri", "http://127.0.0.1/cb", "--scopes", "openid")
	native := regexp.MustCompile(`client id:\s+(\S+)`).FindStringSubmatch(out)
	out = c.must("app", "create", "--tenant", "mover", "--name", "Nightly", "--kind", "machine", "--auth-method", "private_key_jwt",
		"--jwks-file", writeFile(t, `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1"}]}`))
	machine := regexp.MustCompile(`client id:\s+(\S+)`).FindStringSubmatch(out)
	out = c.must("app", "create", "--tenant", "mover", "--name", "Backend", "--kind", "web", "--redirect-uri", "https://mover.test/cb")
	web := regexp.MustCompile(`client id:\s+(\S+)`).FindStringSubmatch(out)
	c.must("app", "rotate-secret", "--tenant", "mover", web[1])

	c.must("tenant", "promote", "mover", "--silo-cluster", pgtest.Second(t).URL("postgres"), "--max-pause", "1s", "--purge")
	if show := c.must("tenant", "show", "mover"); !regexp.MustCompile(`placement:\s+silo`).MatchString(show) {
		t.Fatalf("after promote:\n%s", show)
	}
	if show := c.must("app", "show", "--tenant", "mover", native[1]); !strings.Contains(show, "http://127.0.0.1/cb") || !strings.Contains(show, "com.mover.app:/cb") {
		t.Fatalf("the native app in the silo:\n%s", show)
	}
	if show := c.must("app", "show", "--tenant", "mover", machine[1]); !strings.Contains(show, "k1") {
		t.Fatalf("the machine app in the silo:\n%s", show)
	}
	if show := c.must("app", "show", "--tenant", "mover", web[1]); strings.Count(show, "secret:") != 2 {
		t.Fatalf("the web app's two secrets in the silo:\n%s", show)
	}
	c.must("app", "rotate-secret", "--tenant", "mover", web[1], "--overlap", "0s")
	if show := c.must("app", "show", "--tenant", "mover", web[1]); strings.Count(show, "secret:") != 1 {
		t.Fatalf("after a rotation in the silo:\n%s", show)
	}
}
