package identity

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Limit allows Requests per Window.
type Limit struct {
	Requests int
	Window   time.Duration
}

// Limits bound one action per client (an IPv4 address or an IPv6 /64) and
// for the whole tenant.
type Limits struct {
	PerIP, PerTenant Limit
	// Share is how many of one client's requests in a PerIP window count
	// against PerTenant (0: PerTenant's requests / 200, at least one), so
	// that spending the tenant's limit takes two hundred clients, not the
	// few dozen that their own limits would allow. A client past its share
	// is still refused once the tenant's limit is spent.
	Share int
	// OnlyFailures gives the tenant's limit back the requests that
	// succeed: a good password is no attack on the tenant, and its
	// users signing in at once must not spend it.
	OnlyFailures bool
}

// share is l's Share, or its default.
func (l Limits) share() int {
	if l.Share > 0 {
		return l.Share
	}
	return max(1, l.PerTenant.Requests/200)
}

// DefaultLimits are the rate limits of the actions that invite abuse.
var DefaultLimits = map[string]Limits{
	"login":    {PerIP: Limit{20, time.Minute}, PerTenant: Limit{1200, time.Minute}, OnlyFailures: true},
	"signup":   {PerIP: Limit{5, time.Minute}, PerTenant: Limit{120, time.Minute}},
	"refresh":  {PerIP: Limit{60, time.Minute}, PerTenant: Limit{6000, time.Minute}},
	"revoke":   {PerIP: Limit{60, time.Minute}, PerTenant: Limit{6000, time.Minute}},
	"verify":   {PerIP: Limit{10, time.Minute}, PerTenant: Limit{600, time.Minute}},
	"forgot":   {PerIP: Limit{5, time.Minute}, PerTenant: Limit{120, time.Minute}},
	"password": {PerIP: Limit{10, time.Minute}, PerTenant: Limit{600, time.Minute}},
}

// RateState is where a client stands against a limit, for the
// RateLimit-* headers.
type RateState struct {
	Limit     int
	Remaining int
	Reset     time.Duration // until the window ends

	// tenantWindow is the window of the tenant's limit this request was
	// counted in; zero if it was not.
	tenantWindow time.Time
}

// allow counts one request of action from ip against tenant t's limits,
// in Postgres so that every instance shares the count. It returns the
// state of the per-IP limit (the one a client can act on) and TooMany with
// a Retry-After if either limit is spent. Only the client's first requests
// in its window (its share) count against the tenant's limit.
func (s *Service) allow(ctx context.Context, t *tenancy.Tenant, action string, ip netip.Addr) (RateState, error) {
	l, ok := s.cfg.Limits[action]
	if !ok {
		return RateState{}, nil
	}
	now := s.now()
	var ipHits, tenantHits int32
	ipWindow := now.Truncate(l.PerIP.Window)
	tenantWindow := now.Truncate(l.PerTenant.Window)
	tenantKey := action + "/tenant"
	counted := false
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		ipHits, err = q.HitRateLimit(ctx, queries.HitRateLimitParams{
			TenantID: t.ID.UUID(), Key: action + "/ip/" + clientKey(ip), WindowStart: ipWindow,
		})
		if err != nil {
			return err
		}
		if counted = int(ipHits) <= min(l.share(), l.PerIP.Requests); counted {
			tenantHits, err = q.HitRateLimit(ctx, queries.HitRateLimitParams{
				TenantID: t.ID.UUID(), Key: tenantKey, WindowStart: tenantWindow,
			})
		} else {
			tenantHits, err = q.PeekRateLimit(ctx, queries.PeekRateLimitParams{
				TenantID: t.ID.UUID(), Key: tenantKey, WindowStart: tenantWindow,
			})
		}
		if err != nil {
			return err
		}
		// Old windows are garbage; sweep them now and then.
		if rand.IntN(100) == 0 {
			return q.PruneRateLimits(ctx, queries.PruneRateLimitsParams{TenantID: t.ID.UUID(), WindowStart: now.Add(-24 * time.Hour)})
		}
		return nil
	})
	if err != nil {
		return RateState{}, err
	}
	st := RateState{
		Limit:     l.PerIP.Requests,
		Remaining: max(l.PerIP.Requests-int(ipHits), 0),
		Reset:     ipWindow.Add(l.PerIP.Window).Sub(now),
	}
	if counted {
		st.tenantWindow = tenantWindow
	}
	switch {
	case int(ipHits) > l.PerIP.Requests:
		return st, tooMany(st.Reset)
	case int(tenantHits) > l.PerTenant.Requests:
		return st, tooMany(tenantWindow.Add(l.PerTenant.Window).Sub(now))
	}
	return st, nil
}

// giveBack gives back to the tenant's limit of action a request that was
// counted against it (st) and succeeded, if the action counts failures
// only.
func (s *Service) giveBack(ctx context.Context, t *tenancy.Tenant, action string, st RateState) error {
	if l := s.cfg.Limits[action]; !l.OnlyFailures || st.tenantWindow.IsZero() {
		return nil
	}
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		return q.RefundRateLimit(ctx, queries.RefundRateLimitParams{TenantID: t.ID.UUID(), Key: action + "/tenant", WindowStart: st.tenantWindow})
	})
}

// clientKey is the unit a client is limited by: its IPv4 address, or its
// IPv6 /64 (one subscriber commonly holds a whole /64).
func clientKey(ip netip.Addr) string {
	if ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.Unmap().String()
}

func tooMany(retry time.Duration) error {
	e := problem.Errorf(problem.TooMany, "too many attempts; try again in %s", retry.Round(time.Second))
	e.RetryAfter = retry
	return e
}

func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}
