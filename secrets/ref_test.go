package secrets

import (
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestParseRefRoundTrips(t *testing.T) {
	id := tenancy.ID(uuid.New())
	s := "vault:kv/tenants/" + id.String() + "/smtp#password"
	r, err := ParseRef(s)
	if err != nil {
		t.Fatal(err)
	}
	if r.Mount != "kv" || r.Path != "tenants/"+id.String()+"/smtp" || r.Key != "password" {
		t.Fatalf("parsed %+v", r)
	}
	if r.String() != s {
		t.Fatalf("String() = %q, want %q", r.String(), s)
	}
	if got, ok := r.Tenant(); !ok || got != id {
		t.Fatalf("Tenant() = %v, %v", got, ok)
	}
}

func TestParseRefRefusesMalformed(t *testing.T) {
	for _, s := range []string{
		"", "kv/tenants/x/smtp#password", "vault:kv/tenants/x/smtp", "vault:kv#password",
		"vault:kv/tenants/../other#password", "vault:kv/tenants//smtp#password",
		"vault:kv/tenants/x/smtp#pass word", "vault:sys/../kv/x#y", "vault:kv/a/b#",
		"vault:/tenants/x#y", "vault:kv/tenants/x/smtp#a#b",
	} {
		if _, err := ParseRef(s); problem.CodeOf(err) != problem.Invalid {
			t.Errorf("ParseRef(%q) = %v, want Invalid", s, err)
		}
	}
}

func TestRefTenantNeedsCanonicalID(t *testing.T) {
	id := uuid.New()
	for _, path := range []string{
		"platform/silo",
		"tenants/" + id.String(), // the folder itself, no secret
		"tenants/" + strings.ToUpper(id.String()) + "/smtp", // not canonical
		"tenants/not-a-uuid/smtp",
	} {
		if _, ok := (Ref{Mount: "kv", Path: path, Key: "k"}).Tenant(); ok {
			t.Errorf("Tenant() of %q succeeded", path)
		}
	}
}

func TestOwnedRefusesOtherTenantsAndMounts(t *testing.T) {
	a, b := tenancy.ID(uuid.New()), tenancy.ID(uuid.New())
	ra, err := refFor("kv", a, "smtp#password")
	if err != nil {
		t.Fatal(err)
	}
	if err := owned("kv", a, ra); err != nil {
		t.Fatalf("own ref refused: %v", err)
	}
	if err := owned("kv", b, ra); problem.CodeOf(err) != problem.Forbidden {
		t.Fatalf("other tenant's ref: %v, want Forbidden", err)
	}
	other := ra
	other.Mount = "secret"
	if err := owned("kv", a, other); problem.CodeOf(err) != problem.Forbidden {
		t.Fatalf("ref in another mount: %v, want Forbidden", err)
	}
}

func TestRefForNames(t *testing.T) {
	id := tenancy.ID(uuid.New())
	r, err := refFor("kv", id, "webhooks/signing")
	if err != nil || r.Path != "tenants/"+id.String()+"/webhooks/signing" || r.Key != "value" {
		t.Fatalf("refFor = %+v, %v", r, err)
	}
	for _, bad := range []string{"", "#x", "../x", "a//b", "a#b c"} {
		if _, err := refFor("kv", id, bad); problem.CodeOf(err) != problem.Invalid {
			t.Errorf("refFor(%q) = %v, want Invalid", bad, err)
		}
	}
}
