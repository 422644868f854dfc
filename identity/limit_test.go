package identity_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestRepeatedFailuresLockTheAccount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "lock@example.com", goodPassword)
	e.signup("acme", "bystander@example.com", goodPassword)
	bad := map[string]string{"email": "lock@example.com", "password": "not-the-right-password"}
	for range 5 {
		e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", bad), 401)
	}
	// Locked: even the right password fails, with the very same answer
	// as any failure (no telling locked accounts from unknown ones).
	locked := e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "lock@example.com", "password": goodPassword}), 401)
	unknown := e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "nobody@example.com", "password": goodPassword}), 401)
	if locked.Detail != unknown.Detail {
		t.Fatalf("locked %q vs unknown %q", locked.Detail, unknown.Detail)
	}
	e.login("acme", "bystander@example.com", goodPassword) // others are not affected
	var until time.Time
	var lockouts int
	if err := e.admin.QueryRow(ctx, "select locked_until, lockouts from app.users where email = 'lock@example.com'").Scan(&until, &lockouts); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(until); lockouts != 1 || d < 14*time.Minute || d > 16*time.Minute {
		t.Fatalf("locked for %s (%d lockouts), want about 15 minutes, 1", d, lockouts)
	}
	// The lock runs out; five more failures lock it again, for twice as long.
	e.admin.Exec(ctx, "update app.users set locked_until = now() - interval '1 second' where email = 'lock@example.com'")
	for range 5 {
		e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", bad), 401)
	}
	e.admin.QueryRow(ctx, "select locked_until, lockouts from app.users where email = 'lock@example.com'").Scan(&until, &lockouts)
	if d := time.Until(until); lockouts != 2 || d < 29*time.Minute || d > 31*time.Minute {
		t.Fatalf("second lock for %s (%d lockouts), want about 30 minutes, 2", d, lockouts)
	}
	// After it runs out, a good login clears the record.
	e.admin.Exec(ctx, "update app.users set locked_until = now() - interval '1 second' where email = 'lock@example.com'")
	e.login("acme", "lock@example.com", goodPassword)
	var failed int
	e.admin.QueryRow(ctx, "select failed_logins, lockouts from app.users where email = 'lock@example.com'").Scan(&failed, &lockouts)
	if failed != 0 || lockouts != 0 {
		t.Fatalf("after a good login: %d failures, %d lockouts", failed, lockouts)
	}
	var locks int
	e.admin.QueryRow(ctx, "select count(*) from app.audit_events where action = 'account.lock'").Scan(&locks)
	if locks != 2 {
		t.Fatalf("%d lock events audited, want 2", locks)
	}
}

func TestRateLimitsAnswerWithHeadersAndRetryAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *identity.Config) {
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
	e := newEnv(t, withConfig(func(c *identity.Config) {
		c.Limits = map[string]identity.Limits{
			"signup": {PerIP: identity.Limit{Requests: 100, Window: time.Hour}, PerTenant: identity.Limit{Requests: 2, Window: time.Hour}},
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

func TestLockoutGrowthIsCapped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "old-foe@example.com", goodPassword)
	e.admin.Exec(ctx, "update app.users set lockouts = 40 where email = 'old-foe@example.com'")
	for range 5 {
		e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "old-foe@example.com", "password": "wrong-wrong-wrong"}), 401)
	}
	var until time.Time
	e.admin.QueryRow(ctx, "select locked_until from app.users where email = 'old-foe@example.com'").Scan(&until)
	if d := time.Until(until); d < 23*time.Hour || d > 25*time.Hour {
		t.Fatalf("locked for %s after 40 earlier lockouts, want the one-day cap", d)
	}
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
