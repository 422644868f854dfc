package identity

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Password guessing is throttled at two levels, neither of which lets a
// stranger lock an owner out of their account.
//
// Per account and client network (clientKey): networkFailures wrong
// passwords within networkWindow of the first one throttle that network's
// attempts on the account for networkThrottle, twice as long at each
// throttle in a row (at most a day; a day without one starts over). An
// attacker's network is refused while the owner's, which has not failed,
// is not. A good password clears the network's record.
//
// Per account, across networks: a clock (a generic cell rate algorithm)
// lets a burst of accountBurst attempts through, then one per
// accountInterval. Past it, attempts from networks the account has not
// signed in from within knownFor are refused; networks it has signed in
// from have accountKnown more before they are refused too. Whatever the
// number of networks, no account gets more than accountBurst+accountKnown
// checks at once and one per accountInterval after: at most 81 in any
// hour (OWASP ASVS 4.0.3 V2.2.1 asks for at most 100). When the clock
// refuses an attempt from an unknown network, the owner is mailed, at most
// once per noticeEvery, that sign-ins are failing, with a link to reset
// the password (which lifts every throttle, as an admin's unlock does).
//
// Attempts are counted before the password is checked, so concurrent
// guesses get no more checks than these numbers allow; an attempt that
// succeeds, or whose password was never checked, is given back. A refused
// sign-in answers exactly like a wrong password (and costs the same
// hashing), so throttling tells nothing about which accounts exist.
const (
	networkFailures = 5
	networkWindow   = 15 * time.Minute
	networkThrottle = 15 * time.Minute
	maxThrottle     = 24 * time.Hour

	accountBurst    = 20
	accountKnown    = 20
	accountInterval = 90 * time.Second
	knownFor        = 30 * 24 * time.Hour
	noticeEvery     = 24 * time.Hour
)

// attempt is one password attempt on an account, counted before the
// password is checked.
type attempt struct {
	user     uuid.UUID
	admitted bool          // the password may be checked
	reason   string        // why not, for the audit trail
	retry    time.Duration // until an attempt refused now may be admitted
	slowed   bool          // refused by the account's clock: tell the owner

	network string    // clientKey of the attempt's client
	window  time.Time // the network's counting window: its first attempt
	count   int       // attempts of the network on the account in window, this one included
	repeats int       // throttles in a row of the network on the account so far
}

// Keys of the rate-limit rows that keep a network's record on an account,
// all under "signin/<account id>/" (ClearLoginFailures clears them).
func (a attempt) key() string         { return "signin/" + a.user.String() + "/" + a.network }
func (a attempt) throttleKey() string { return a.key() + "/throttle" }
func noticeKey(user uuid.UUID) string { return "signin/" + user.String() + "/notice" }

// countAttempt counts an attempt on account u (locked in q's transaction)
// from ip, and decides whether its password may be checked.
func (s *Service) countAttempt(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, u queries.AppUser, ip netip.Addr) (attempt, error) {
	now := s.now()
	a := attempt{user: u.ID, network: clientKey(ip)}
	// The account's clock: unknown networks wait until it, known ones
	// until accountKnown intervals before it.
	clock := now.Add(-(accountBurst - 1) * accountInterval)
	if u.LockedUntil != nil && u.LockedUntil.After(clock) {
		clock = *u.LockedUntil
	}
	if clock.After(now) {
		known, err := s.knownNetwork(ctx, q, t, u.ID, ip, now)
		if err != nil {
			return a, err
		}
		gate := clock
		if known {
			gate = clock.Add(-accountKnown * accountInterval)
		}
		if gate.After(now) {
			a.reason, a.retry, a.slowed = "account slowed down", gate.Sub(now), !known
			return a, nil
		}
	}
	row, err := q.CountNetworkAttempt(ctx, queries.CountNetworkAttemptParams{
		TenantID: t.ID.UUID(), Key: a.key(), ThrottleKey: a.throttleKey(), Since: now.Add(-networkWindow), Now: now,
	})
	if err != nil {
		return a, err
	}
	a.window = row.WindowStart
	if row.Repeats > 0 && now.Sub(row.ThrottledUntil) < maxThrottle {
		a.repeats = int(row.Repeats)
	}
	a.count = int(row.Attempts)
	switch {
	case row.Attempts == 0: // not counted: throttled
		a.reason, a.retry = "network throttled", row.ThrottledUntil.Sub(now)
		return a, nil
	case a.count > networkFailures: // ahead of the throttle its last failure sets
		a.reason, a.retry = "network throttled", a.window.Add(networkWindow).Sub(now)
		return a, nil
	}
	next := clock.Add(accountInterval)
	if err := q.SetSignInClock(ctx, queries.SetSignInClockParams{TenantID: t.ID.UUID(), ID: u.ID, LockedUntil: &next}); err != nil {
		return a, err
	}
	a.admitted = true
	return a, nil
}

// knownNetwork reports whether user started a session from ip's client
// network within knownFor.
func (s *Service) knownNetwork(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, ip netip.Addr, now time.Time) (bool, error) {
	if !ip.IsValid() {
		return false, nil
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	network, err := ip.Prefix(bits)
	if err != nil {
		return false, err
	}
	return q.SignedInFromNetwork(ctx, queries.SignedInFromNetworkParams{
		TenantID: t.ID.UUID(), UserID: user, Network: network, Since: now.Add(-knownFor),
	})
}

// attemptFailed records that a's password was wrong: the network's last allowed
// failure of its window throttles it.
func (s *Service) attemptFailed(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, a attempt, meta Meta) error {
	if !a.admitted || a.count < networkFailures {
		return nil
	}
	repeats := a.repeats + 1
	d := networkThrottle << min(repeats-1, 7)
	until := s.now().Add(min(d, maxThrottle))
	if err := q.ThrottleNetwork(ctx, queries.ThrottleNetworkParams{
		TenantID: t.ID.UUID(), Key: a.throttleKey(), WindowStart: until, Hits: int32(repeats),
	}); err != nil {
		return err
	}
	return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
		Action: "login.throttle", Target: "user:" + a.user.String(), Outcome: Success, Meta: meta,
		Details: map[string]string{"failures": fmt.Sprint(a.count), "repeat": fmt.Sprint(repeats), "until": until.UTC().Format(time.RFC3339)},
	})
}

// attemptSucceeded records that a's password was right: the network's record on
// the account is cleared, and the attempt given back to the account's
// clock.
func (s *Service) attemptSucceeded(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, a attempt) error {
	if !a.admitted {
		return nil
	}
	if err := q.ClearNetworkFailures(ctx, queries.ClearNetworkFailuresParams{TenantID: t.ID.UUID(), Key: a.key(), ThrottleKey: a.throttleKey()}); err != nil {
		return err
	}
	return q.RefundSignInAttempt(ctx, queries.RefundSignInAttemptParams{TenantID: t.ID.UUID(), ID: a.user, Seconds: int32(accountInterval / time.Second)})
}

// uncount gives back an attempt whose password was never checked (the
// hashing pool was full): it was no guess.
func (s *Service) uncount(ctx context.Context, t *tenancy.Tenant, a attempt) error {
	if !a.admitted {
		return nil
	}
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if err := q.RefundRateLimit(ctx, queries.RefundRateLimitParams{TenantID: t.ID.UUID(), Key: a.key(), WindowStart: a.window}); err != nil {
			return err
		}
		return q.RefundSignInAttempt(ctx, queries.RefundSignInAttemptParams{TenantID: t.ID.UUID(), ID: a.user, Seconds: int32(accountInterval / time.Second)})
	})
}

// noticeSlowdown mails the owner of u, at most once per noticeEvery, that
// sign-ins to the account are failing, with a link to reset its password.
func (s *Service) noticeSlowdown(ctx context.Context, t *tenancy.Tenant, u queries.AppUser, meta Meta) error {
	if u.Status != "active" {
		return nil
	}
	period := s.now().Truncate(noticeEvery)
	p := queries.PeekRateLimitParams{TenantID: t.ID.UUID(), Key: noticeKey(u.ID), WindowStart: period}
	var sent int32
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		sent, err = q.PeekRateLimit(ctx, p)
		return err
	})
	if err != nil || sent > 0 {
		return err
	}
	// Sealed before the transaction: no Vault call holds a connection.
	m, err := s.newTokenMail(ctx, t, mail.SignInsFailing, purposeReset, pageReset, u.Email)
	if err != nil {
		return err
	}
	mailed := false
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		n, err := q.HitRateLimit(ctx, queries.HitRateLimitParams(p))
		if err != nil || n > 1 { // another attempt mailed it first
			return err
		}
		if err := m.write(ctx, q, t, u.ID); err != nil {
			return err
		}
		mailed = true
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Action: "login.slowdown", Target: "user:" + u.ID.String(), Outcome: Success, Meta: meta,
			Details: map[string]string{"notice": "mailed to the owner"},
		})
	})
	if err != nil {
		return fmt.Errorf("sign-in notice: %w", err)
	}
	if mailed {
		s.cfg.Outbox.Notify(t)
	}
	return nil
}
