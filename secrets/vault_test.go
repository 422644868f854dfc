package secrets_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestMain(m *testing.M) {
	proctest.Main(m)
}

func newTenant() tenancy.ID { return tenancy.ID(uuid.New()) }

func TestPutGetDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	a := newTenant()

	r, err := v.Put(ctx, a, "smtp#password", "hunter2-smtp")
	if err != nil {
		t.Fatal(err)
	}
	if want := "vault:kv/tenants/" + a.String() + "/smtp#password"; r.String() != want {
		t.Fatalf("ref %s, want %s", r, want)
	}
	if _, err := v.Put(ctx, a, "smtp#username", "mailer"); err != nil {
		t.Fatal(err)
	}
	// A second key of the same path keeps the first.
	if got, err := v.Get(ctx, a, r); err != nil || got != "hunter2-smtp" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if _, err := v.Put(ctx, a, "smtp#password", "changed"); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Get(ctx, a, r); got != "changed" {
		t.Fatalf("after overwrite Get = %q", got)
	}

	if err := v.Delete(ctx, a, r); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Get(ctx, a, r); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("Get after Delete: %v, want NotFound", err)
	}
	user, _ := secrets.ParseRef("vault:kv/tenants/" + a.String() + "/smtp#username")
	if got, err := v.Get(ctx, a, user); err != nil || got != "mailer" {
		t.Fatalf("sibling key after Delete = %q, %v", got, err)
	}
	// The deleted value is gone from the history too, not only from the
	// newest version.
	api := vaulttest.Shared(t).API()
	for version := 1; version <= 3; version++ {
		s, err := api.KVv2("kv").GetVersion(ctx, "tenants/"+a.String()+"/smtp", version)
		if err == nil && s.Data != nil {
			for _, val := range s.Data {
				if val == "hunter2-smtp" || val == "changed" {
					t.Fatalf("version %d still holds the deleted value", version)
				}
			}
		}
	}
	if err := v.Delete(ctx, a, r); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestTenantCannotReadAnotherTenantsSecret(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	a, b := newTenant(), newTenant()
	ra, err := v.Put(ctx, a, "idp#client_secret", "a-client-secret")
	if err != nil {
		t.Fatal(err)
	}
	// Even when B's own row holds A's ref (copied there by someone), B
	// cannot read, overwrite or delete it, and cannot tell whether it exists.
	_, errExisting := v.Get(ctx, b, ra)
	missing := ra
	missing.Path = "tenants/" + a.String() + "/nothing-here"
	_, errMissing := v.Get(ctx, b, missing)
	if problem.CodeOf(errExisting) != problem.Forbidden || problem.CodeOf(errMissing) != problem.Forbidden {
		t.Fatalf("B reading A's refs: %v / %v, want Forbidden for both", errExisting, errMissing)
	}
	if problem.MessageOf(errExisting) == "" || problem.CodeOf(errExisting) != problem.CodeOf(errMissing) {
		t.Fatalf("answers differ between existing and missing secrets")
	}
	if err := v.Delete(ctx, b, ra); problem.CodeOf(err) != problem.Forbidden {
		t.Fatalf("B deleting A's ref: %v, want Forbidden", err)
	}
	if got, err := v.Get(ctx, a, ra); err != nil || got != "a-client-secret" {
		t.Fatalf("A's secret after B's attempts = %q, %v", got, err)
	}
}

func TestSiloDSNsLiveInVault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	a, b := newTenant(), newTenant()
	dsns := tenancy.SiloDSNs{
		Admin: "postgres://owner:admin-pw@silo-host:5432/gatehouse_x",
		App:   "postgres://gatehouse_app:app-pw@silo-host:5432/gatehouse_x",
	}
	ref, err := v.StoreSilo(ctx, a, dsns)
	if err != nil {
		t.Fatal(err)
	}
	// (Words no tenant id, which is hex, can hold by chance.)
	for _, secret := range []string{"admin-pw", "app-pw", "silo-host"} {
		if strings.Contains(ref, secret) {
			t.Fatalf("ref %q holds %q", ref, secret)
		}
	}
	for role, want := range map[tenancy.Role]string{tenancy.AppRole: dsns.App, tenancy.AdminRole: dsns.Admin} {
		got, err := v.SiloDSN(ctx, a, ref, role)
		if err != nil || got != want {
			t.Fatalf("SiloDSN(%v) = %q, %v", role, got, err)
		}
	}
	if _, err := v.SiloDSN(ctx, b, ref, tenancy.AppRole); problem.CodeOf(err) != problem.Forbidden {
		t.Fatalf("B using A's silo ref: %v, want Forbidden", err)
	}
}

func TestEnsureMountsCreatesMissingEngines(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.Shared(t)
	cfg := srv.Config()
	suffix := uuid.NewString()[:8]
	cfg.KVMount, cfg.TransitMount = "kv-"+suffix, "transit-"+suffix
	v, err := secrets.Connect(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	a := newTenant()
	if _, err := v.Put(ctx, a, "x", "y"); err == nil {
		t.Fatal("Put into a missing mount succeeded")
	}
	for range 2 { // the second run finds everything in place
		if err := v.EnsureMounts(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Put(ctx, a, "x", "y"); err != nil {
		t.Fatalf("Put after EnsureMounts: %v", err)
	}
	if err := v.CreateTenantKey(ctx, a); err != nil {
		t.Fatalf("CreateTenantKey after EnsureMounts: %v", err)
	}
}

func TestConnectValidatesConfig(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for name, cfg := range map[string]secrets.Config{
		"no address":     {Token: "t"},
		"no credentials": {Addr: "http://127.0.0.1:1"},
		"half approle":   {Addr: "http://127.0.0.1:1", RoleID: "r"},
		"both":           {Addr: "http://127.0.0.1:1", Token: "t", RoleID: "r", SecretID: "s"},
		"bad mount":      {Addr: "http://127.0.0.1:1", Token: "t", KVMount: "kv/../sys"},
	} {
		if _, err := secrets.Connect(ctx, cfg, nil); problem.CodeOf(err) != problem.Invalid {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
	_, err := secrets.Connect(ctx, secrets.Config{Addr: "http://127.0.0.1:1", RoleID: "r", SecretID: "s"}, nil)
	if problem.CodeOf(err) != problem.Unavailable {
		t.Errorf("AppRole login to nothing: %v, want Unavailable", err)
	}
}

func TestAppRoleLoginRenewsAndLogsInAgain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.Shared(t)
	policy := `
path "kv/data/tenants/*"     { capabilities = ["create", "read", "update"] }
path "kv/metadata/tenants/*" { capabilities = ["read", "list", "delete"] }
path "transit/*"             { capabilities = ["create", "read", "update", "list"] }
`
	// Tokens live 2s and can be renewed up to 4s: within the test the
	// client must renew and then log in again to keep working.
	roleID, secretID := srv.AppRole(t, "gatehouse-test", policy, 2*time.Second, 4*time.Second)
	v, err := secrets.Connect(ctx, secrets.Config{Addr: srv.Addr, RoleID: roleID, SecretID: secretID}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	a := newTenant()
	r, err := v.Put(ctx, a, "smtp#password", "approle-secret")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(7 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := v.Get(ctx, a, r); err != nil || got != "approle-secret" {
			t.Fatalf("Get at %s: %q, %v", time.Until(deadline), got, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
