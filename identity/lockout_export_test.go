package identity

import (
	"context"
	"net/netip"
	"time"

	"github.com/gatehouse/gatehouse/tenancy"
)

// SetClock makes s read the time from now, for tests that span hours. Set
// it before s serves anything.
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// PasswordChecks is how many stored password hashes s has verified
// (VerifyNobody's stand-ins are not counted).
func (s *Service) PasswordChecks() int64 { return s.hasher.checks.Load() }

// Allow counts a request of action from ip against t's rate limits, as the
// limit middleware does, for tests of many clients.
func (s *Service) Allow(ctx context.Context, t *tenancy.Tenant, action string, ip netip.Addr) (RateState, error) {
	return s.allow(ctx, t, action, ip)
}
