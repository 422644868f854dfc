package identity_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// testClock is a service clock that tests move by hand.
type testClock struct{ ns atomic.Int64 }

// newTestClock starts at the present, or early tomorrow (UTC) if the next
// few hours would cross midnight (throttles count some things per day).
func newTestClock() *testClock {
	start := time.Now()
	if start.Add(4*time.Hour).Truncate(24*time.Hour) != start.Truncate(24*time.Hour) {
		start = start.Truncate(24 * time.Hour).Add(24*time.Hour + 10*time.Minute)
	}
	c := &testClock{}
	c.ns.Store(start.UnixNano())
	return c
}

func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// withClock gives an env's service a testClock.
func (e *env) withClock() *testClock {
	c := newTestClock()
	e.svc.SetClock(c.now)
	return c
}

// from is a sign-in from a client address.
func (e *env) from(tn *tenancy.Tenant, addr, email, password string) error {
	e.t.Helper()
	_, err := e.svc.Login(context.Background(), tn, email, password, identity.Meta{IP: netip.MustParseAddr(addr)})
	if err != nil && problem.CodeOf(err) != problem.Unauthorized {
		e.t.Fatalf("sign-in from %s: %v", addr, err)
	}
	return err
}

// refused asserts that a sign-in from addr with the right password is
// refused exactly like a wrong password.
func (e *env) refused(tn *tenancy.Tenant, addr, email, password, why string) {
	e.t.Helper()
	err := e.from(tn, addr, email, password)
	wrong := e.from(tn, "192.0.2.250", "nobody-at-all@example.com", password)
	if err == nil || problem.CodeOf(err) != problem.CodeOf(wrong) || problem.MessageOf(err) != problem.MessageOf(wrong) {
		e.t.Fatalf("%s: the right password from %s answered %v; want exactly %v", why, addr, err, wrong)
	}
}

// admitted asserts that a sign-in from addr with the right password works.
func (e *env) admitted(tn *tenancy.Tenant, addr, email, password, why string) {
	e.t.Helper()
	if err := e.from(tn, addr, email, password); err != nil {
		e.t.Fatalf("%s: the right password from %s: %v", why, addr, err)
	}
}

// fail makes n wrong guesses from addr.
func (e *env) fail(tn *tenancy.Tenant, addr, email string, n int) {
	e.t.Helper()
	for range n {
		if err := e.from(tn, addr, email, "not-the-right-password"); err == nil {
			e.t.Fatalf("a wrong password from %s was accepted", addr)
		}
	}
}

func TestThrottledNetworkDoesNotLockOutTheOwner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	clock := e.withClock()
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "owner@throttle.test", goodPassword)
	const attacker, owner = "203.0.113.66", "198.51.100.7"

	e.fail(tn, attacker, "owner@throttle.test", 5)
	e.refused(tn, attacker, "owner@throttle.test", goodPassword, "after five failures")
	e.admitted(tn, owner, "owner@throttle.test", goodPassword, "the owner, from a network that has not failed")

	// The throttle lasts 15 minutes; five more failures throttle the
	// network for twice as long.
	clock.advance(14 * time.Minute)
	e.refused(tn, attacker, "owner@throttle.test", goodPassword, "14 minutes on")
	clock.advance(2 * time.Minute)
	e.fail(tn, attacker, "owner@throttle.test", 5)
	e.refused(tn, attacker, "owner@throttle.test", goodPassword, "after the second five failures")
	clock.advance(29 * time.Minute)
	e.refused(tn, attacker, "owner@throttle.test", goodPassword, "29 minutes into the second throttle")
	e.admitted(tn, owner, "owner@throttle.test", goodPassword, "the owner, meanwhile")
	clock.advance(2 * time.Minute)
	e.admitted(tn, attacker, "owner@throttle.test", goodPassword, "after the second throttle")

	var throttles int
	e.admin.QueryRow(context.Background(), "select count(*) from app.audit_events where action = 'login.throttle'").Scan(&throttles)
	if throttles != 2 {
		t.Fatalf("%d throttles audited, want 2", throttles)
	}
}

func TestNetworkThrottleCoversAnIPv6Slash64(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "six@throttle.test", goodPassword)
	e.fail(tn, "2001:db8:1:2::1", "six@throttle.test", 5)
	e.refused(tn, "2001:db8:1:2:ffff::9", "six@throttle.test", goodPassword, "another address of the failing /64")
	e.admitted(tn, "2001:db8:1:3::1", "six@throttle.test", goodPassword, "the next /64")
}

func TestGoodSignInClearsOnlyItsNetworksRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "clear@throttle.test", goodPassword)
	const a, b = "203.0.113.10", "203.0.113.20"
	e.fail(tn, a, "clear@throttle.test", 4)
	e.fail(tn, b, "clear@throttle.test", 4)
	e.admitted(tn, a, "clear@throttle.test", goodPassword, "after four failures")
	// a starts over: four more failures do not throttle it.
	e.fail(tn, a, "clear@throttle.test", 4)
	e.admitted(tn, a, "clear@throttle.test", goodPassword, "after four more")
	// b's record stands: its fifth failure throttles it.
	e.fail(tn, b, "clear@throttle.test", 1)
	e.refused(tn, b, "clear@throttle.test", goodPassword, "b after its fifth failure")
}

// TestGuessingFromManyNetworksGetsAtMostAHundredChecksAnHour spreads a
// guessing run over 500 client addresses for two hours (OWASP ASVS 4.0.3
// V2.2.1: at most 100 failed attempts an hour on one account), while the
// owner signs in from the network they used before.
func TestGuessingFromManyNetworksGetsAtMostAHundredChecksAnHour(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	clock := e.withClock()
	tn := e.tenant("acme", tenancy.Shared, "")
	const owner = "besieged@throttle.test"
	e.signup("acme", owner, goodPassword)
	const home = "198.51.100.80"
	e.admitted(tn, home, owner, goodPassword, "before the attack")

	const minutes, perMinute = 120, 15
	checks := make([]int64, minutes)
	guess := 0
	for m := range minutes {
		before := e.svc.PasswordChecks()
		var wg sync.WaitGroup
		for range perMinute {
			ip := netip.AddrFrom4([4]byte{10, byte(guess / 250 % 2), byte(guess % 250), 1})
			guess = (guess + 1) % 500
			wg.Go(func() {
				_, err := e.svc.Login(ctx, tn, owner, fmt.Sprintf("guess-number-%d", m), identity.Meta{IP: ip})
				if problem.CodeOf(err) != problem.Unauthorized {
					t.Errorf("guess from %s: %v", ip, err)
				}
			})
		}
		wg.Wait()
		checks[m] = e.svc.PasswordChecks() - before
		switch m {
		case 30, 90:
			e.admitted(tn, home, owner, goodPassword, fmt.Sprintf("the owner at home, minute %d of the attack", m))
		case 60:
			// From a network the account never signed in from, the owner
			// is slowed down like anyone: refused like a wrong password.
			e.refused(tn, "192.0.2.77", owner, goodPassword, "the owner away from home")
		}
		clock.advance(time.Minute)
	}
	worst, total := int64(0), int64(0)
	for m := range minutes {
		total += checks[m]
		if m+60 <= minutes {
			var hour int64
			for _, n := range checks[m : m+60] {
				hour += n
			}
			worst = max(worst, hour)
		}
	}
	if worst > 100 {
		t.Fatalf("%d passwords checked in one hour of guessing, want at most 100", worst)
	}
	if last := total - sum(checks[:60]); last < 30 {
		t.Fatalf("%d passwords checked in the second hour: slowed down to a standstill, want a slow trickle", last)
	}
	t.Logf("%d guesses, %d checked; at most %d in an hour", minutes*perMinute, total, worst)

	// The owner was told once, with a link that resets the password and
	// lifts the slow-down.
	var notice string
	for _, m := range e.mails(owner, 2) {
		if strings.Contains(m.Subject, "failing") {
			notice = m.Token(t, "reset-password")
		}
	}
	if notice == "" {
		t.Fatal("no mail told the owner that sign-ins fail")
	}
	if n := e.notices(); n != 1 {
		t.Fatalf("%d notices in one day, want 1", n)
	}
	e.must(204, "POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": notice, "new_password": "a-Fresh-start-for-2026"})
	e.admitted(tn, "192.0.2.77", owner, "a-Fresh-start-for-2026", "away from home after the reset")

	// A day later, another run gets another notice.
	clock.advance(24 * time.Hour)
	for i := range 25 {
		e.from(tn, fmt.Sprintf("10.9.0.%d", i), owner, "guess-again")
	}
	if n := e.notices(); n != 2 {
		t.Fatalf("%d notices after two days of guessing, want 2", n)
	}
}

func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}

// notices counts the sign-ins-failing mails the env has queued or sent.
func (e *env) notices() int {
	e.t.Helper()
	var n int
	if err := e.admin.QueryRow(context.Background(), "select count(*) from app.mail_outbox where kind = 'sign_ins_failing'").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestConcurrentGuessesFromManyNetworksStopAtTheBurst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "rushed@throttle.test", goodPassword)
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			e.svc.Login(ctx, tn, "rushed@throttle.test", "guess-guess-guess", identity.Meta{IP: netip.AddrFrom4([4]byte{10, 7, byte(i), 1})})
		})
	}
	wg.Wait()
	if n := e.svc.PasswordChecks(); n > 20 {
		t.Fatalf("60 concurrent guesses from 60 networks had %d passwords checked, want at most 20", n)
	}
}

func TestAdminUnlockLiftsEveryThrottle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@unlock.test")
	e.signup("acme", "victim@unlock.test", goodPassword)
	// Its network throttled (the HTTP client's), and its clock run out
	// by many others.
	bad := map[string]string{"email": "victim@unlock.test", "password": "not-the-right-password"}
	for range 5 {
		e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", bad), 401)
	}
	for i := range 25 {
		e.from(tn, fmt.Sprintf("10.8.0.%d", i), "victim@unlock.test", "guess-guess-guess")
	}
	e.refused(tn, "192.0.2.99", "victim@unlock.test", goodPassword, "a new network, the account slowed down")
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "victim@unlock.test", "password": goodPassword}), 401)

	var id string
	if err := e.admin.QueryRow(ctx, "select id from app.users where email = 'victim@unlock.test'").Scan(&id); err != nil {
		t.Fatal(err)
	}
	e.must(204, "POST", "acme", "/v1/admin/users/"+id+"/unlock", boss.AccessToken, nil)
	e.login("acme", "victim@unlock.test", goodPassword)
	e.admitted(tn, "192.0.2.99", "victim@unlock.test", goodPassword, "a new network after the unlock")
}

func TestCurrentPasswordGuessesCountPerNetwork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "stolen-token@throttle.test", goodPassword)
	tok := e.login("acme", "stolen-token@throttle.test", goodPassword)
	// Guesses on both endpoints add up.
	for range 3 {
		e.problemOf(e.do("POST", "acme", "/v1/me/password", tok.AccessToken, map[string]string{"current_password": "is-it-this-one", "new_password": "brand-new-Password-77"}), 401)
	}
	for range 2 {
		e.problemOf(e.do("POST", "acme", "/v1/me/email", tok.AccessToken, map[string]string{"email": "elsewhere@throttle.test", "current_password": "or-this-one"}), 401)
	}
	r := e.do("POST", "acme", "/v1/me/email", tok.AccessToken, map[string]string{"email": "elsewhere@throttle.test", "current_password": goodPassword})
	e.problemOf(r, 429)
	if r.header["Retry-After"] == "" {
		t.Fatal("no Retry-After")
	}
	// The same account signs in from another network.
	e.admitted(tn, "198.51.100.9", "stolen-token@throttle.test", goodPassword, "from another network")
}

func TestSlowedDownSignInAnswersLikeAWrongPassword(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "quiet@throttle.test", goodPassword)
	for i := range 20 {
		e.from(tn, fmt.Sprintf("10.6.0.%d", i), "quiet@throttle.test", "guess-guess-guess")
	}
	err := e.from(tn, "10.6.1.1", "quiet@throttle.test", goodPassword)
	if err == nil {
		t.Fatal("the 21st attempt within moments was admitted")
	}
	var p *problem.Error
	if !errors.As(err, &p) || p.RetryAfter != 0 {
		t.Fatalf("a slowed-down sign-in answered %#v: it must not tell a Retry-After", err)
	}
	e.refused(tn, "10.6.1.2", "quiet@throttle.test", goodPassword, "slowed down")
}
