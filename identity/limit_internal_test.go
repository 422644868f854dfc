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
