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

// Limits bound one action per client IP and for the whole tenant.
type Limits struct {
	PerIP, PerTenant Limit
}

// DefaultLimits are the rate limits of the actions that invite abuse.
var DefaultLimits = map[string]Limits{
	"login":    {PerIP: Limit{20, time.Minute}, PerTenant: Limit{1200, time.Minute}},
	"signup":   {PerIP: Limit{5, time.Minute}, PerTenant: Limit{120, time.Minute}},
	"refresh":  {PerIP: Limit{60, time.Minute}, PerTenant: Limit{6000, time.Minute}},
	"forgot":   {PerIP: Limit{5, time.Minute}, PerTenant: Limit{120, time.Minute}},
	"password": {PerIP: Limit{10, time.Minute}, PerTenant: Limit{600, time.Minute}},
}

// Lockout: this many failed passwords within lockoutWindow lock the
// account for lockoutBase, doubling at each repeat (at most a day).
const (
	lockoutFailures = 5
	lockoutBase     = 15 * time.Minute
)

// RateState is where a client stands against a limit, for the
// RateLimit-* headers.
type RateState struct {
	Limit     int
	Remaining int
	Reset     time.Duration // until the window ends
}

// allow counts one request of action from ip against tenant t's limits,
// in Postgres so that every instance shares the count. It returns the
// state of the per-IP limit (the one a client can act on) and TooMany with
// a Retry-After if either limit is spent.
func (s *Service) allow(ctx context.Context, t *tenancy.Tenant, action string, ip netip.Addr) (RateState, error) {
	l, ok := s.cfg.Limits[action]
	if !ok {
		return RateState{}, nil
	}
	now := s.now()
	var ipHits, tenantHits int32
	ipWindow := now.Truncate(l.PerIP.Window)
	tenantWindow := now.Truncate(l.PerTenant.Window)
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		ipHits, err = q.HitRateLimit(ctx, queries.HitRateLimitParams{
			TenantID: t.ID.UUID(), Key: action + "/ip/" + clientKey(ip), WindowStart: ipWindow,
		})
		if err != nil {
			return err
		}
		tenantHits, err = q.HitRateLimit(ctx, queries.HitRateLimitParams{
			TenantID: t.ID.UUID(), Key: action + "/tenant", WindowStart: tenantWindow,
		})
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
	switch {
	case int(ipHits) > l.PerIP.Requests:
		return st, tooMany(st.Reset)
	case int(tenantHits) > l.PerTenant.Requests:
		return st, tooMany(tenantWindow.Add(l.PerTenant.Window).Sub(now))
	}
	return st, nil
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
