package identity_test

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestRepeatedFailuresThrottleTheNetworkLongerEachTime(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	clock := e.withClock()
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "lock@example.com", goodPassword)
	e.signup("acme", "bystander@example.com", goodPassword)
	bad := map[string]string{"email": "lock@example.com", "password": "not-the-right-password"}
	good := map[string]string{"email": "lock@example.com", "password": goodPassword}
	fail := func() {
		t.Helper()
		for range 5 {
			e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", bad), 401)
		}
	}
	fail()
	// Throttled: even the right password fails, with the very same
	// answer as any failure (no telling throttled accounts from unknown
	// ones).
	throttled := e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", good), 401)
	unknown := e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": goodPassword}), 401)
	if throttled.Detail != unknown.Detail {
		t.Fatalf("throttled %q vs unknown %q", throttled.Detail, unknown.Detail)
	}
	e.login("acme", "bystander@example.com", goodPassword) // others are not affected
	// 15 minutes, then 30, then 60.
	for i, d := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour} {
		clock.advance(d - time.Minute)
		e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", good), 401)
		clock.advance(2 * time.Minute)
		if i < 2 {
			fail()
		}
	}
	// After it runs out, a good sign-in clears the record: the next
	// throttle is 15 minutes again.
	e.login("acme", "lock@example.com", goodPassword)
	fail()
	clock.advance(16 * time.Minute)
	e.login("acme", "lock@example.com", goodPassword)
	var throttles int
	e.admin.QueryRow(context.Background(), "select count(*) from app.audit_events where action = 'login.throttle'").Scan(&throttles)
	if throttles != 4 {
		t.Fatalf("%d throttles audited, want 4", throttles)
	}
}

func TestRateLimitsAnswerWithHeadersAndRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *app.Config) {
		c.Limits = map[string]identity.Limits{
			"login": {PerIP: identity.Limit{Requests: 3, Window: time.Hour}, PerTenant: identity.Limit{Requests: 100, Window: time.Hour}},
		}
	}))
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	body := map[string]string{"email": "x@example.com", "password": "whatever-password"}
	for i := range 3 {
		r := e.do("POST", "acme", "/v1/auth/login", "", body)
		if r.status != 401 || r.header["Ratelimit-Limit"] != "3" || r.header["Ratelimit-Remaining"] != strconv.Itoa(2-i) {
			t.Fatalf("attempt %d: %d, headers %v", i+1, r.status, r.header)
		}
		if reset, err := strconv.Atoi(r.header["Ratelimit-Reset"]); err != nil || reset < 1 || reset > 3600 {
			t.Fatalf("RateLimit-Reset %q", r.header["Ratelimit-Reset"])
		}
	}
	r := e.do("POST", "acme", "/v1/auth/login", "", body)
	e.problemOf(r, 429)
	if retry, err := strconv.Atoi(r.header["Retry-After"]); err != nil || retry < 1 || retry > 3600 || r.header["Ratelimit-Remaining"] != "0" {
		t.Fatalf("429 headers %v", r.header)
	}
	// Another tenant counts separately.
	if r := e.do("POST", "globex", "/v1/auth/login", "", body); r.status != 401 || r.header["Ratelimit-Remaining"] != "2" {
		t.Fatalf("globex after acme's limit: %d %v", r.status, r.header)
	}
}

func TestTenantWideRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *app.Config) {
		c.Limits = map[string]identity.Limits{
			"signup": {PerIP: identity.Limit{Requests: 100, Window: time.Hour}, PerTenant: identity.Limit{Requests: 2, Window: time.Hour}, Share: 100},
		}
	}))
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "one@example.com", goodPassword)
	e.signup("acme", "two@example.com", goodPassword)
	r := e.do("POST", "acme", "/v1/auth/signup", "", map[string]string{"email": "three@example.com", "password": goodPassword})
	e.problemOf(r, 429)
	if r.header["Retry-After"] == "" {
		t.Fatal("no Retry-After")
	}
}

func TestBurstOfGuessesStopsAtTheLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "burst@example.com", goodPassword)
	var wg sync.WaitGroup
	for range 15 {
		wg.Go(func() {
			e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "burst@example.com", "password": "guess-guess-guess"})
		})
	}
	wg.Wait()
	var checked int
	e.admin.QueryRow(ctx, "select count(*) from app.audit_events where action = 'login' and details->>'reason' = 'wrong password'").Scan(&checked)
	if checked > 5 {
		t.Fatalf("%d concurrent guesses had their password checked, want at most 5", checked)
	}
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "burst@example.com", "password": goodPassword}), 401)
}

func TestNetworkThrottleGrowthIsCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	clock := e.withClock()
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "old-foe@example.com", goodPassword)
	const foe = "203.0.113.40"
	// 15 minutes doubling: 15m, 30m, 1h, 2h, 4h, 8h, 16h, then a day.
	for _, d := range []time.Duration{15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 16 * time.Hour} {
		e.fail(tn, foe, "old-foe@example.com", 5)
		clock.advance(d + time.Minute)
	}
	for range 2 {
		e.fail(tn, foe, "old-foe@example.com", 5)
		clock.advance(24*time.Hour - time.Minute)
		e.refused(tn, foe, "old-foe@example.com", goodPassword, "a minute before a day")
		clock.advance(2 * time.Minute)
	}
	e.admitted(tn, foe, "old-foe@example.com", goodPassword, "after a day")
}

func TestPasswordChangeGuessesCountTowardsLockout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "stolen@example.com", goodPassword)
	tok := e.login("acme", "stolen@example.com", goodPassword)
	guess := map[string]string{"current_password": "is-it-this-one", "new_password": "brand-new-Password-77"}
	for range 5 {
		e.problemOf(e.do("POST", "acme", "/v1/me/password", tok.AccessToken, guess), 401)
	}
	r := e.do("POST", "acme", "/v1/me/password", tok.AccessToken, map[string]string{"current_password": goodPassword, "new_password": "brand-new-Password-77"})
	e.problemOf(r, 429)
	if r.header["Retry-After"] == "" {
		t.Fatal("no Retry-After on a locked password change")
	}
}

func TestHostileUserAgentIsStoredSafely(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "ua@example.com", goodPassword)
	body := `{"email":"ua@example.com","password":"` + goodPassword + `"}`
	r := e.send("POST", "acme", "/v1/auth/login", map[string]string{"Content-Type": "application/json", "User-Agent": "evil\xff\xfe\x00agent"}, body)
	if r.status != 200 {
		t.Fatalf("login with a hostile User-Agent: %d %s", r.status, r.body)
	}
	var ua string
	e.admin.QueryRow(context.Background(), "select user_agent from app.sessions order by created_at desc limit 1").Scan(&ua)
	if !strings.HasPrefix(ua, "evil") || strings.ContainsRune(ua, 0) {
		t.Fatalf("stored user agent %q", ua)
	}
}

func TestAFewDozenClientsCannotSpendTheTenantLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, withConfig(func(c *app.Config) {
		c.Limits = map[string]identity.Limits{"login": identity.DefaultLimits["login"]}
	}))
	e.withClock() // one window for the whole test
	tn := e.tenant("acme", tenancy.Shared, "")
	// Sixty clients, each up to its own limit and one past it: as many
	// sign-ins as the tenant's limit.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for c := range 60 {
		ip := netip.AddrFrom4([4]byte{10, 5, byte(c), 1})
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			for i := range 21 {
				_, err := e.svc.Allow(ctx, tn, "login", ip)
				if spent := problem.CodeOf(err) == problem.TooMany; spent != (i == 20) {
					t.Errorf("request %d of %s: %v", i+1, ip, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, err := e.svc.Allow(ctx, tn, "login", netip.MustParseAddr("198.51.100.1")); err != nil {
		t.Fatalf("sixty clients spent the tenant's limit: %v", err)
	}
}

func TestTenantLimitStillBindsManyClients(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, withConfig(func(c *app.Config) {
		c.Limits = map[string]identity.Limits{"login": {PerIP: identity.Limit{Requests: 10, Window: time.Hour}, PerTenant: identity.Limit{Requests: 20, Window: time.Hour}}}
	}))
	tn := e.tenant("acme", tenancy.Shared, "")
	for c := range 20 {
		if _, err := e.svc.Allow(ctx, tn, "login", netip.AddrFrom4([4]byte{10, 4, byte(c), 1})); err != nil {
			t.Fatalf("client %d: %v", c, err)
		}
	}
	// Spent: for a new client, and for one past its share.
	for _, ip := range []string{"10.4.99.1", "10.4.0.1"} {
		st, err := e.svc.Allow(ctx, tn, "login", netip.MustParseAddr(ip))
		if pe, ok := errors.AsType[*problem.Error](err); !ok || pe.Code != problem.TooMany || pe.RetryAfter <= 0 {
			t.Fatalf("%s after the tenant's limit: %v (%+v)", ip, err, st)
		}
	}
}

func TestSuccessfulSignInsDoNotSpendTheTenantLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *app.Config) {
		c.Limits = map[string]identity.Limits{"login": {
			PerIP: identity.Limit{Requests: 100, Window: time.Hour}, PerTenant: identity.Limit{Requests: 3, Window: time.Hour},
			Share: 100, OnlyFailures: true,
		}}
	}))
	e.withClock()
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "regular@example.com", goodPassword)
	for range 5 {
		e.login("acme", "regular@example.com", goodPassword)
	}
	bad := map[string]string{"email": "nobody@example.com", "password": "whatever-password"}
	for range 3 {
		e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", bad), 401)
	}
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", bad), 429)
}

func TestUnauthenticatedEndpointsAreRateLimited(t *testing.T) {
	t.Parallel()
	two := identity.Limits{PerIP: identity.Limit{Requests: 2, Window: time.Hour}, PerTenant: identity.Limit{Requests: 100, Window: time.Hour}}
	e := newEnv(t, withConfig(func(c *app.Config) {
		c.Limits = map[string]identity.Limits{"revoke": two, "verify": two, "password": two}
	}))
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	jsonBody := map[string]string{"Content-Type": "application/json"}
	for _, tt := range []struct {
		slug, path string
		headers    map[string]string
		body       string
		page       bool
	}{
		{"revoke", "/v1/auth/token/revoke", jsonBody, `{"token":"not-a-token"}`, false},
		{"verify", "/v1/auth/email/verify", jsonBody, `{"token":"not-a-token"}`, false},
		{"verify-page", "/account/verify-email", form, "token=not-a-token", true},
		{"reset-page", "/account/reset-password", form, "token=not-a-token&password=a-New-password-11&confirm=a-New-password-11", true},
		{"invite-page", "/account/accept-invite", form, "token=not-a-token&password=a-New-password-11&confirm=a-New-password-11", true},
	} {
		e.tenant(tt.slug, tenancy.Shared, "") // each endpoint with limits of its own
		for i := range 2 {
			if r := e.send("POST", tt.slug, tt.path, tt.headers, tt.body); r.status == 429 || r.header["Ratelimit-Remaining"] != strconv.Itoa(1-i) {
				t.Fatalf("%s, request %d: %d %v", tt.path, i+1, r.status, r.header)
			}
		}
		r := e.send("POST", tt.slug, tt.path, tt.headers, tt.body)
		if tt.page {
			if r.status != 429 || !strings.HasPrefix(r.header["Content-Type"], "text/html") || !strings.Contains(string(r.body), "try again") {
				t.Fatalf("%s once spent: %d %q %s", tt.path, r.status, r.header["Content-Type"], r.body)
			}
		} else {
			e.problemOf(r, 429)
		}
		if retry, err := strconv.Atoi(r.header["Retry-After"]); err != nil || retry < 1 || r.header["Ratelimit-Limit"] != "2" || r.header["Ratelimit-Remaining"] != "0" {
			t.Fatalf("%s once spent: headers %v", tt.path, r.header)
		}
	}
}
