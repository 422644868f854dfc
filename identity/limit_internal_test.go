package identity

import (
	"net/netip"
	"testing"
)

func TestClientKeyGroupsIPv6By64(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"192.0.2.1", "192.0.2.2", false},
		{"::ffff:192.0.2.1", "192.0.2.1", true},
	} {
		same := clientKey(netip.MustParseAddr(tt.a)) == clientKey(netip.MustParseAddr(tt.b))
		if same != tt.same {
			t.Errorf("%s and %s share a limit: %v, want %v", tt.a, tt.b, same, tt.same)
		}
	}
}

func TestSpendingATenantLimitTakesManyClients(t *testing.T) {
	// Every default tenant limit takes over a hundred clients to spend.
	// A client's share is a two-hundredth of it, at least one request.
	for action, l := range DefaultLimits {
		if clients := (l.PerTenant.Requests + l.share() - 1) / l.share(); clients < 120 || l.share() > l.PerIP.Requests {
			t.Errorf("%s: %d clients spend the tenant's limit (a share of %d each)", action, clients, l.share())
		}
	}
	if got := (Limits{PerTenant: Limit{Requests: 10}}).share(); got != 1 {
		t.Errorf("a small tenant limit's share is %d, want at least one request", got)
	}
	if got := (Limits{PerTenant: Limit{Requests: 1000}, Share: 50}).share(); got != 50 {
		t.Errorf("an explicit share became %d", got)
	}
}
