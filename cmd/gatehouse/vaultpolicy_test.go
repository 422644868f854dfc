package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// servePolicyHeading is the README heading the server's Vault policy
// follows, as the first hcl block under it.
const servePolicyHeading = "#### Vault policy of `gatehouse serve`"

// readmePolicy returns the Vault policy README.md gives for serve, so
// that what operators copy is what this test proves.
func readmePolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+servePolicyHeading+"\n")
	if !ok {
		t.Fatalf("README.md has no heading %q", servePolicyHeading)
	}
	start := strings.Index(section, "\n```hcl\n")
	if start < 0 || strings.Contains(section[:start], "\n#") {
		t.Fatalf("README.md has no hcl block right under %q", servePolicyHeading)
	}
	body := section[start+len("\n```hcl\n"):]
	end := strings.Index(body, "\n```")
	if end < 0 {
		t.Fatal("README.md's policy block does not end")
	}
	return body[:end+1]
}

// startServeAppRole runs a server instance for the test on c's database,
// logged in to Vault v by AppRole only, and returns its address and its
// log.
func startServeAppRole(t *testing.T, c *cli, v *vaulttest.Server, roleID, secretID string, spicedb []string) (string, *syncBuffer) {
	t.Helper()
	var cfg config
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.flags(fs)
	args := []string{"--database-url", c.url, "--addr", "127.0.0.1:0", "--log-level", "info", "--rate-limits", "off", "--vault-addr", v.Addr}
	if err := fs.Parse(append(args, spicedb...)); err != nil {
		t.Fatal(err)
	}
	// Nothing else may log it in: no token from the environment.
	cfg.Vault.Token, cfg.VaultTokenFile = "", ""
	cfg.Vault.RoleID, cfg.Vault.SecretID = roleID, secretID
	return serveForTest(t, cfg)
}

// send sends a JSON request for tenant slug with an optional bearer token.
func send(t *testing.T, addr, slug, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = slug + ".localhost"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func TestServeWorksUnderTheREADMEVaultPolicyAlone(t *testing.T) {
	t.Parallel()
	policy := readmePolicy(t)
	v := vaulttest.Start(t)
	db := pgtest.Primary(t)
	c := &cli{t: t, url: db.URL(db.NewDatabase(t, "")), vault: vaultFlags(t, v)}
	// Operators' commands run with the administrator's token.
	c.must("migrate")
	c.must("tenant", "create", "--slug", "globex", "--name", "Globex", "--placement", "silo")
	id := tenantID(t, c, "globex")
	var ref string
	if err := pgxQueryRow(t, c.url, "select silo_ref from control.tenants where slug = 'globex'", &ref); err != nil {
		t.Fatal(err)
	}
	siloPath := strings.TrimPrefix(strings.TrimSuffix(ref, "#dsn"), "vault:kv/")
	if siloPath == ref || !strings.HasPrefix(siloPath, "tenants/"+id.String()+"/silo/") {
		t.Fatalf("globex's silo reference: %q", ref)
	}
	adminPath := strings.Replace(siloPath, "/silo/", "/silo-admin/", 1)

	// The server's role has the README's policy and nothing else, not
	// even Vault's default policy; its tokens live 10 seconds, so the
	// server must renew them while the test runs.
	roleID, secretID := v.AppRole(t, "gatehouse-serve", policy, 10*time.Second, time.Hour)
	root := v.API()
	if _, err := root.Logical().Write("auth/approle/role/gatehouse-serve", map[string]any{"token_no_default_policy": true}); err != nil {
		t.Fatal(err)
	}

	// What a token of the role may do.
	login, err := root.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil {
		t.Fatal(err)
	}
	if got := login.Auth.Policies; !slices.Equal(got, []string{"gatehouse-serve"}) {
		t.Fatalf("the role's token has policies %q", got)
	}
	role, err := root.Clone()
	if err != nil {
		t.Fatal(err)
	}
	role.SetToken(login.Auth.ClientToken)
	// Asked by the root token: the role's own may not even ask.
	tenant := "tenants/" + id.String()
	key := "tenant-" + id.String()
	for path, want := range map[string]string{
		"kv/data/" + siloPath:                   "read",
		"kv/data/" + tenant + "/silo":           "read", // where older silos keep theirs
		"kv/data/" + tenant + "/smtp":           "read",
		"kv/data/" + adminPath:                  "deny",
		"kv/data/" + tenant + "/silo-admin":     "deny",
		"kv/metadata/" + adminPath:              "deny",
		"kv/metadata/" + tenant + "/silo-admin": "deny",
		"kv/metadata/" + siloPath:               "deny",
		"kv/delete/" + siloPath:                 "deny",
		"kv/destroy/" + siloPath:                "deny",
		"kv/undelete/" + siloPath:               "deny",
		"kv/data/" + tenant:                     "deny",
		"kv/data/elsewhere":                     "deny",
		"transit/datakey/plaintext/" + key:      "update",
		"transit/decrypt/" + key:                "update",
		"transit/decrypt/" + key + "-g2":        "update",
		"transit/encrypt/" + key:                "deny",
		"transit/rewrap/" + key:                 "deny",
		"transit/keys/" + key:                   "deny",
		"transit/keys/" + key + "/rotate":       "deny",
		"transit/export/encryption-key/" + key:  "deny",
		"sys/mounts/kv":                         "deny",
		"sys/policies/acl/gatehouse-serve":      "deny",
		"auth/token/renew-self":                 "update",
	} {
		got, err := root.Sys().Capabilities(login.Auth.ClientToken, path)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []string{want}) {
			t.Errorf("the policy gives %s %q, want only %q", path, got, want)
		}
	}
	if _, err := role.KVv2("kv").Get(context.Background(), siloPath); err != nil {
		t.Errorf("reading the silo's connection string: %v", err)
	}
	if _, err := role.KVv2("kv").Get(context.Background(), adminPath); !isForbidden(err) {
		t.Errorf("reading the silo's administrator credentials: %v, want 403", err)
	}
	if _, err := role.KVv2("kv").Put(context.Background(), siloPath, map[string]any{"dsn": "postgres://evil.example/x"}); !isForbidden(err) {
		t.Errorf("writing the silo's connection string: %v, want 403", err)
	}
	if _, err := role.KVv2("kv").Patch(context.Background(), siloPath, map[string]any{"dsn": "postgres://evil.example/x"}); !isForbidden(err) {
		t.Errorf("patching the silo's connection string: %v, want 403", err)
	}
	if err := role.KVv2("kv").DeleteMetadata(context.Background(), siloPath); !isForbidden(err) {
		t.Errorf("deleting the silo's connection string: %v, want 403", err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Two servers under the policy: one signs a user up and in, the other
	// (which has sealed nothing, so it must have Transit decrypt what
	// the first sealed) refreshes and serves the account.
	spicedb := spicedbFlags(t)
	one, oneLogs := startServeAppRole(t, c, v, roleID, secretID, spicedb)
	two, twoLogs := startServeAppRole(t, c, v, roleID, secretID, spicedb)
	const email, password = "ada@globex.test", "violet-Harbor-93-lantern"
	if code, body := send(t, one, "globex", "POST", "/v1/auth/signup", "", map[string]string{"email": email, "password": password, "display_name": "Ada"}); code != 202 {
		t.Fatalf("signup: %d %v\n%s", code, body, oneLogs.String())
	}
	code, tokens := send(t, one, "globex", "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": password})
	if code != 200 || tokens["access_token"] == nil || tokens["refresh_token"] == nil {
		t.Fatalf("login: %d %v\n%s", code, tokens, oneLogs.String())
	}
	if code, me := send(t, one, "globex", "GET", "/v1/me", tokens["access_token"].(string), nil); code != 200 || me["email"] != email {
		t.Fatalf("me on the first server: %d %v", code, me)
	}
	code, refreshed := send(t, two, "globex", "POST", "/v1/auth/token/refresh", "", map[string]string{"refresh_token": tokens["refresh_token"].(string)})
	if code != 200 || refreshed["access_token"] == nil {
		t.Fatalf("refresh on the second server: %d %v\n%s", code, refreshed, twoLogs.String())
	}
	if code, me := send(t, two, "globex", "GET", "/v1/me", refreshed["access_token"].(string), nil); code != 200 || me["email"] != email {
		t.Fatalf("me on the second server: %d %v\n%s", code, me, twoLogs.String())
	}
	for _, addr := range []string{one, two} {
		if code, body := send(t, addr, "globex", "GET", "/readyz", "", nil); code != 200 {
			t.Fatalf("readyz: %d %v", code, body)
		}
	}
	// The account lives in globex's silo, which the servers found through
	// the connection string they read from Vault.
	admin, err := root.KVv2("kv").Get(context.Background(), adminPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := usersIn(t, admin.Data["dsn"].(string), id.String()); got[email] != 1 {
		t.Fatalf("globex's silo holds %v", got)
	}
	if got := usersIn(t, c.url, id.String()); len(got) != 0 {
		t.Fatalf("the shared database holds %v of globex's", got)
	}

	// The servers renew their tokens under the policy alone.
	eventually(t, 30*time.Second, "the servers renewed their Vault tokens", func() bool {
		return renewed(t, root, "gatehouse-serve") >= 2
	})
	for _, logs := range []*syncBuffer{oneLogs, twoLogs} {
		// The policy may not manage mounts: the server said so and went on.
		if !strings.Contains(logs.String(), "could not check Vault's secrets engines") {
			t.Errorf("the server checked Vault's mounts under the policy:\n%s", logs.String())
		}
		if strings.Contains(logs.String(), "vault token renewal ended") {
			t.Errorf("the server's Vault token:\n%s", logs.String())
		}
	}
}

// renewed counts the live tokens of policy that have been renewed.
func renewed(t *testing.T, root *api.Client, policy string) int {
	t.Helper()
	list, err := root.Logical().List("auth/token/accessors")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	keys, _ := list.Data["keys"].([]any)
	for _, k := range keys {
		s, err := root.Logical().Write("auth/token/lookup-accessor", map[string]any{"accessor": k})
		if err != nil {
			continue // expired meanwhile
		}
		policies, _ := s.Data["policies"].([]any)
		last, _ := s.Data["last_renewal_time"].(json.Number)
		if slices.Contains(policies, any(policy)) && last != "" && last != "0" {
			n++
		}
	}
	return n
}

func isForbidden(err error) bool {
	re, ok := errors.AsType[*api.ResponseError](err)
	return ok && re.StatusCode == http.StatusForbidden
}

func pgxQueryRow(t *testing.T, url, sql string, dst ...any) error {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dst...)
}
