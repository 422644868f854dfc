package identity_test

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
)

// TestRetiredKeyStopsVerifyingOnEveryServerAtOnce: a server keeps a
// tenant's published keys in memory for minutes, so that a database
// blip does not stop verification; a key retired on another server
// (an operator's emergency: rotate, then retire at once) must still stop
// verifying here within moments, through the tenant change notification.
func TestRetiredKeyStopsVerifyingOnEveryServerAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withCachingResolver())
	acme := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "kept@example.com", goodPassword)
	tok := e.login("acme", "kept@example.com", goodPassword)
	e.must(200, "GET", "acme", "/v1/me", tok.AccessToken, nil) // its key is in memory now

	// Another server: its own keys over the same database.
	ctx := context.Background()
	other := identity.NewKeys(e.data, e.sealer, secrets.AAD)
	if _, err := other.Rotate(ctx, acme); err != nil {
		t.Fatal(err)
	}
	if n, err := other.Retire(ctx, acme, 0); err != nil || n != 1 {
		t.Fatalf("Retire = %d, %v; want the replaced key", n, err)
	}
	start := time.Now()
	for e.do("GET", "acme", "/v1/me", tok.AccessToken, nil).status != 401 {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("a retired key still verifies here %v after its retirement (kept for %v)", time.Since(start), identity.KeySetTTL)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("refused %v after the retirement", time.Since(start))
}
