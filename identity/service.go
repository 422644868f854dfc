package identity

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	netmail "net/mail"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/text/unicode/norm"

	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Config holds identity's settings that are not per tenant.
type Config struct {
	// Issuer returns the issuer URL of a tenant's tokens.
	Issuer func(t *tenancy.Tenant) string
	// RefreshLifetime is the absolute lifetime of a session and its
	// refresh-token family; default 30 days.
	RefreshLifetime time.Duration
	// RefreshIdle ends a family unused this long; default 7 days.
	RefreshIdle time.Duration
	// Limits are the rate limits by action (login, signup, refresh,
	// forgot); default DefaultLimits.
	Limits map[string]Limits

	// Outbox is where mails wait until the relay sends them; required.
	Outbox *mail.Outbox
	// Authorizer decides admin rights; required.
	Authorizer Authorizer
	// MailFrom is the From address of tenants that set none of their
	// own; default no-reply@gatehouse.invalid.
	MailFrom string
	// How long mailed links work: password reset (default 30 minutes),
	// address confirmation (default 24 hours), invitation (default 7
	// days).
	ResetTTL, VerifyTTL, InviteTTL time.Duration
}

// Service is identity's business logic: accounts, sign-in, sessions. It
// knows nothing of HTTP (HTTP serves it). Every method works inside the
// tenant the caller resolved; none takes a tenant from user input.
type Service struct {
	db      *tenancy.DB
	hasher  *Hasher
	keys    *Keys
	clients *clients
	cfg     Config
	now     func() time.Time
}

// NewService returns the identity service.
func NewService(db *tenancy.DB, hasher *Hasher, keys *Keys, cfg Config) *Service {
	if cfg.RefreshLifetime <= 0 {
		cfg.RefreshLifetime = 30 * 24 * time.Hour
	}
	if cfg.RefreshIdle <= 0 {
		cfg.RefreshIdle = 7 * 24 * time.Hour
	}
	if cfg.Limits == nil {
		cfg.Limits = DefaultLimits
	}
	if cfg.Outbox == nil || cfg.Authorizer == nil {
		panic("identity: Config.Outbox and Config.Authorizer are required")
	}
	cfg.MailFrom = cmp.Or(cfg.MailFrom, "no-reply@gatehouse.invalid")
	cfg.ResetTTL = cmp.Or(cfg.ResetTTL, 30*time.Minute)
	cfg.VerifyTTL = cmp.Or(cfg.VerifyTTL, 24*time.Hour)
	cfg.InviteTTL = cmp.Or(cfg.InviteTTL, 7*24*time.Hour)
	s := &Service{db: db, hasher: hasher, keys: keys, cfg: cfg, now: time.Now}
	s.clients = newClients(db, func() time.Time { return s.now() })
	return s
}

// Keys returns the signing-key store.
func (s *Service) Keys() *Keys { return s.keys }

// User is an account as its owner and admins see it.
type User struct {
	ID            uuid.UUID  `json:"id"`
	Email         string     `json:"email"`
	DisplayName   string     `json:"display_name"`
	Status        string     `json:"status"`
	Role          string     `json:"role"`
	EmailVerified bool       `json:"email_verified"`
	CreatedAt     time.Time  `json:"created_at"`
	LastLoginAt   *time.Time `json:"last_login_at,omitempty"`
}

func userFromRow(r queries.AppUser) *User {
	return &User{
		ID: r.ID, Email: r.Email, DisplayName: r.DisplayName, Status: r.Status, Role: r.Role,
		EmailVerified: r.EmailVerifiedAt != nil, CreatedAt: r.CreatedAt, LastLoginAt: r.LastLoginAt,
	}
}

// Tokens is what a successful sign-in returns, in OAuth's shape.
type Tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
}

// NormalizeEmail trims and lower-cases an email address and checks that it
// is a plain address (no display name, no comments), at most 254 bytes.
// Returns Invalid otherwise.
func NormalizeEmail(email string) (string, error) {
	e := strings.ToLower(strings.TrimSpace(email))
	if e == "" {
		return "", problem.InvalidField("email", "is required")
	}
	if len(e) > 254 || !utf8.ValidString(e) {
		return "", problem.InvalidField("email", "must be a valid email address of at most 254 characters")
	}
	// Invisible characters (bidirectional overrides, zero widths) and
	// compatibility forms (full-width letters) make an address look like
	// another one.
	if strings.ContainsFunc(e, func(r rune) bool { return unicode.Is(unicode.Cf, r) || unicode.IsControl(r) }) {
		return "", problem.InvalidField("email", "must not contain invisible or control characters")
	}
	if norm.NFKC.String(e) != e {
		return "", problem.InvalidField("email", "must be written in plain characters (no full-width or other compatibility forms)")
	}
	a, err := netmail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return "", problem.InvalidField("email", "must be a valid email address")
	}
	if at := strings.LastIndexByte(e, '@'); at < 1 || !strings.Contains(e[at+1:], ".") {
		return "", problem.InvalidField("email", "must be a valid email address")
	}
	return e, nil
}

// SignupInput is what a new account needs.
type SignupInput struct {
	Email       string
	Password    string
	DisplayName string
}

// errBadLogin is the one answer to every failed sign-in: the same status
// and body whether the account exists or not.
var errBadLogin = problem.Errorf(problem.Unauthorized, "invalid email or password")

// Login signs a user in with email and password: a new session, an access
// token and the first refresh token of the session's family. Every
// failure is Unauthorized with the same message, and an unknown email
// costs the same password hashing as a wrong password, so neither the
// answer nor its timing tells whether an account exists. Returns
// Unavailable when the password pool is saturated.
func (s *Service) Login(ctx context.Context, t *tenancy.Tenant, email, password string, meta Meta) (*Tokens, error) {
	user, sess, refresh, err := s.signIn(ctx, t, email, password, meta, nil)
	if err != nil {
		return nil, err
	}
	return s.tokens(ctx, t, user, sess, refresh)
}

// BrowserSession is what a browser sign-in hands out: the session cookie's
// value and the CSRF token every state-changing request must echo in
// X-CSRF-Token. Both are 256 random bits; the database keeps their hashes.
type BrowserSession struct {
	Cookie    string    `json:"-"`
	CSRFToken string    `json:"csrf_token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// BrowserLogin is Login for a browser: the session travels in a cookie
// rather than as tokens. Same errors as Login.
func (s *Service) BrowserLogin(ctx context.Context, t *tenancy.Tenant, email, password string, meta Meta) (*BrowserSession, error) {
	cookie, _ := newRefreshToken()
	csrf, _ := newRefreshToken()
	b := &BrowserSession{Cookie: cookie, CSRFToken: csrf, ExpiresAt: s.now().Add(s.cfg.RefreshLifetime)}
	if _, _, _, err := s.signIn(ctx, t, email, password, meta, b); err != nil {
		return nil, err
	}
	return b, nil
}

// signIn checks email and password and starts a session: for a browser
// (b set) one carried by b's cookie. Returns the user, the session and its
// first refresh token. The attempt is counted against the account's
// throttles (lockout.go) before the password is checked.
func (s *Service) signIn(ctx context.Context, t *tenancy.Tenant, email, password string, meta Meta, b *BrowserSession) (uuid.UUID, uuid.UUID, string, error) {
	fail := func(err error) (uuid.UUID, uuid.UUID, string, error) { return uuid.Nil, uuid.Nil, "", err }
	// The hashing pool serves each tenant's sign-ins in turn. A full pool
	// refuses before anything is read or counted: a 503 is no guess.
	ctx, cancel, err := s.hasher.book(tenancy.WithTenant(ctx, t))
	if err != nil {
		return fail(err)
	}
	defer cancel()
	pw := NormalizePassword(password)
	var u queries.AppUser
	var at attempt
	found := true
	normalized, err := NormalizeEmail(email)
	if err != nil {
		// Answered like an unknown account, hashing time included.
		found, normalized = false, ""
	}
	err = s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		if normalized == "" {
			return nil
		}
		u, err = q.LockSignInAccount(ctx, queries.LockSignInAccountParams{TenantID: t.ID.UUID(), Email: normalized})
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		if err != nil {
			return err
		}
		at, err = s.countAttempt(ctx, q, t, u, meta.IP)
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("login: %w", err))
	}
	// Hash outside any transaction: 20-odd milliseconds of CPU must not
	// hold a database connection. A refused attempt is hashed too, so
	// that its answer takes as long as any other.
	var ok, rehash bool
	if found && u.PasswordHash != nil && at.admitted {
		ok, rehash, err = s.hasher.Verify(ctx, *u.PasswordHash, pw)
	} else {
		err = s.hasher.VerifyNobody(ctx, pw)
	}
	if err != nil {
		if found {
			if uerr := s.uncount(ctx, t, at); uerr != nil {
				return fail(fmt.Errorf("login: %w", errors.Join(err, uerr)))
			}
		}
		return fail(err)
	}
	reason := ""
	switch {
	case !found:
		reason = "unknown account"
	case !at.admitted:
		// The same answer as any failure: a distinct one would tell an
		// attacker which accounts exist.
		reason = at.reason
	case !ok:
		reason = "wrong password"
	case u.Status != "active":
		reason = "account " + u.Status
	case t.RequireVerifiedEmail && u.EmailVerifiedAt == nil:
		reason = "email not verified"
	}
	if reason != "" {
		ev := Event{Action: "login", Outcome: Failure, Details: map[string]string{"reason": reason}, Meta: meta}
		if found {
			ev.Actor, ev.Target = u.ID, "user:"+u.ID.String()
		}
		if err := s.db.Tx(ctx, t, func(q *queries.Queries) error {
			// A right password of an account that may not sign in is
			// no guess.
			if ok {
				if err := s.attemptSucceeded(ctx, q, t, at); err != nil {
					return err
				}
			} else if found {
				if err := s.attemptFailed(ctx, q, t, at, meta); err != nil {
					return err
				}
			}
			return appendAudit(ctx, q, t.ID.UUID(), s.now(), ev)
		}); err != nil {
			return fail(fmt.Errorf("login: %w", err))
		}
		if at.slowed {
			// The answer must not depend on the notice, or it would tell
			// slowed-down accounts apart; a notice that failed is tried
			// again at the next refused attempt.
			_ = s.noticeSlowdown(ctx, t, u, meta)
		}
		// An unconfirmed account answers like a wrong password too: whoever
		// signed up an address with a password of their choosing would
		// otherwise learn from this answer whether it had an account.
		return fail(errBadLogin)
	}
	var newHash string
	if rehash {
		if newHash, err = s.hasher.Hash(ctx, pw); err != nil {
			newHash = "" // a busy pool must not fail a good login; rehash next time
		}
	}
	var sess uuid.UUID
	var refresh string
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if newHash != "" {
			if err := q.SetPasswordHash(ctx, queries.SetPasswordHashParams{TenantID: t.ID.UUID(), ID: u.ID, PasswordHash: &newHash}); err != nil {
				return err
			}
		}
		if err := q.RecordLogin(ctx, queries.RecordLoginParams{TenantID: t.ID.UUID(), ID: u.ID}); err != nil {
			return err
		}
		if err := s.attemptSucceeded(ctx, q, t, at); err != nil {
			return err
		}
		var err error
		if sess, refresh, err = s.startSession(ctx, q, t, u.ID, meta); err != nil {
			return err
		}
		if b != nil {
			if err := q.SetSessionCookie(ctx, queries.SetSessionCookieParams{
				TenantID: t.ID.UUID(), ID: sess, CookieHash: hashToken(b.Cookie), CsrfHash: hashToken(b.CSRFToken),
			}); err != nil {
				return err
			}
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: u.ID, Action: "login", Target: "session:" + sess.String(), Outcome: Success, Meta: meta,
		})
	})
	if err != nil {
		return fail(fmt.Errorf("login: %w", err))
	}
	return u.ID, sess, refresh, nil
}

// tokens issues an access token for user's session and returns it with
// the session's refresh token. Signing happens after the session's
// transaction committed: it may need the database and Vault itself.
func (s *Service) tokens(ctx context.Context, t *tenancy.Tenant, user, sess uuid.UUID, refresh string) (*Tokens, error) {
	sg, err := s.keys.signer(ctx, t)
	if err != nil {
		return nil, err
	}
	return s.tokensSignedBy(sg, t, user, sess, refresh)
}

// tokensSignedBy is tokens with the signing key at hand: it cannot fail
// but on a broken key.
func (s *Service) tokensSignedBy(sg *signer, t *tenancy.Tenant, user, sess uuid.UUID, refresh string) (*Tokens, error) {
	iss := s.cfg.Issuer(t)
	access, err := s.keys.sign(sg, t, TokenParams{Issuer: iss, Audience: iss, User: user, Session: sess, TTL: t.AccessTokenTTL})
	if err != nil {
		return nil, err
	}
	return &Tokens{AccessToken: access, TokenType: "Bearer", ExpiresIn: int(t.AccessTokenTTL / time.Second), RefreshToken: refresh}, nil
}

// startSession creates a session for user with the first refresh token of
// its family, and returns both.
func (s *Service) startSession(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, meta Meta) (uuid.UUID, string, error) {
	now := s.now()
	p := queries.CreateSessionParams{TenantID: t.ID.UUID(), UserID: user, ExpiresAt: now.Add(s.cfg.RefreshLifetime)}
	if meta.IP.IsValid() {
		p.Ip = &meta.IP
	}
	if meta.UserAgent != "" {
		ua := truncate(meta.UserAgent, 512)
		p.UserAgent = &ua
	}
	sess, err := q.CreateSession(ctx, p)
	if err != nil {
		return uuid.Nil, "", err
	}
	refresh, hash := newRefreshToken()
	if err := q.CreateRefreshToken(ctx, queries.CreateRefreshTokenParams{
		TenantID: t.ID.UUID(), TokenHash: hash, SessionID: sess.ID,
		IdleExpiresAt: minTime(now.Add(s.cfg.RefreshIdle), sess.ExpiresAt),
	}); err != nil {
		return uuid.Nil, "", err
	}
	return sess.ID, refresh, nil
}

// newRefreshToken returns a fresh refresh token (256 random bits) and the
// hash that is all Postgres ever sees of it.
func newRefreshToken() (string, []byte) {
	b := make([]byte, 32)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	return tok, hashToken(tok)
}

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// Principal is who a verified access token speaks for: a user in a
// session, or a machine app acting as itself (App set, User zero; only
// the endpoints behind RequireUserOrApp admit one).
type Principal struct {
	User    uuid.UUID
	Session uuid.UUID
	App     uuid.UUID

	// account is the user as Authenticate found it, with its session
	// standing, for the rest of the same request.
	account *queries.AppUser
}

// Authenticate verifies an access token presented to tenant t's host and
// that its session still stands (not ended by logout, revocation, a
// password reset or the account being disabled), and returns its
// principal. Returns Unauthorized for a token that is invalid, expired,
// of another tenant, or of a session that ended.
func (s *Service) Authenticate(ctx context.Context, t *tenancy.Tenant, token string) (*Principal, error) {
	iss := s.cfg.Issuer(t)
	c, err := VerifyAccessToken(ctx, token, s.keys.TenantKeys(t), Expect{Issuer: iss, Audience: iss, Tenant: t.ID})
	if err != nil {
		return nil, err
	}
	user, err1 := uuid.Parse(c.Subject)
	sess, err2 := uuid.Parse(c.Session)
	if err1 != nil || err2 != nil {
		return nil, problem.Errorf(problem.Unauthorized, "invalid or expired access token")
	}
	p := &Principal{User: user, Session: sess}
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		u, err := s.liveSession(ctx, q, t, p)
		p.account = &u
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// liveSession checks, inside a transaction, that p's session still stands
// (not revoked, not expired) and its user is active, and returns the user.
// Endpoints that call it see a revocation at once, not at the access
// token's expiry. Returns Unauthorized otherwise.
func (s *Service) liveSession(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, p *Principal) (queries.AppUser, error) {
	row, err := q.GetLiveSession(ctx, queries.GetLiveSessionParams{TenantID: t.ID.UUID(), ID: p.Session, UserID: p.User})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !s.now().Before(row.SessionExpiresAt)) {
		return queries.AppUser{}, problem.Errorf(problem.Unauthorized, "the session has ended; sign in again")
	}
	return row.AppUser, err
}

// Me returns the signed-in user. Returns Unauthorized if the session ended.
func (s *Service) Me(ctx context.Context, t *tenancy.Tenant, p *Principal) (*User, error) {
	if p.account != nil { // Authenticate checked the session in this request
		return userFromRow(*p.account), nil
	}
	var u queries.AppUser
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		u, err = s.liveSession(ctx, q, t, p)
		return err
	})
	if err != nil {
		return nil, err
	}
	return userFromRow(u), nil
}

// UpdateMe changes the signed-in user's display name. Returns Invalid for
// a name over 200 characters, Unauthorized if the session ended.
func (s *Service) UpdateMe(ctx context.Context, t *tenancy.Tenant, p *Principal, newName string, meta Meta) (*User, error) {
	name, err := displayName(newName)
	if err != nil {
		return nil, err
	}
	var u queries.AppUser
	err = s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		if _, err = s.liveSession(ctx, q, t, p); err != nil {
			return err
		}
		if u, err = q.UpdateDisplayName(ctx, queries.UpdateDisplayNameParams{TenantID: t.ID.UUID(), ID: p.User, DisplayName: name}); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "user.update", Target: "user:" + p.User.String(), Outcome: Success, Meta: meta,
		})
	})
	if err != nil {
		return nil, err
	}
	return userFromRow(u), nil
}

// ChangePassword replaces the signed-in user's password after checking the
// current one, and ends every other session of the user. Returns
// Unauthorized for a wrong current password or an ended session, Invalid
// if the new password breaks the policy.
func (s *Service) ChangePassword(ctx context.Context, t *tenancy.Tenant, p *Principal, current, next string, meta Meta) error {
	var pw string
	_, err := s.confirmPassword(ctx, t, p, current, "password.change", meta, func(u queries.AppUser) (err error) {
		pw, err = CheckPassword(next, u.Email)
		return asField(err, "new_password")
	})
	if err != nil {
		return err
	}
	hash, err := s.hasher.Hash(ctx, pw)
	if err != nil {
		return err
	}
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if err := q.SetPasswordHash(ctx, queries.SetPasswordHashParams{TenantID: t.ID.UUID(), ID: p.User, PasswordHash: &hash}); err != nil {
			return err
		}
		if err := spendAllTokens(ctx, q, t, p.User); err != nil {
			return err
		}
		reason := "password changed"
		if _, err := q.RevokeOtherSessions(ctx, queries.RevokeOtherSessionsParams{
			TenantID: t.ID.UUID(), UserID: p.User, ID: p.Session, RevokedReason: &reason,
		}); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "password.change", Target: "user:" + p.User.String(), Outcome: Success, Meta: meta,
		})
	})
}

// confirmPassword checks the signed-in user's current password before a
// sensitive change (action, for the audit trail), after check has
// accepted the request itself: a request that is refused on its own
// merits is no guess and is not counted. Guesses count like sign-ins:
// the same throttles apply (lockout.go), so a stolen access token cannot
// brute-force the password. A good password clears the record of the
// caller's network. Returns Unauthorized for a wrong password or an ended
// session, TooMany (with a Retry-After) while the caller's network or the
// account is throttled, or check's error.
func (s *Service) confirmPassword(ctx context.Context, t *tenancy.Tenant, p *Principal, current, action string, meta Meta, check func(queries.AppUser) error) (queries.AppUser, error) {
	ctx = tenancy.WithTenant(ctx, t)
	var u queries.AppUser
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		u, err = s.liveSession(ctx, q, t, p)
		return err
	})
	if err != nil {
		return u, err
	}
	if err := check(u); err != nil {
		return u, err
	}
	ctx, cancel, err := s.hasher.book(ctx)
	if err != nil {
		return u, err
	}
	defer cancel()
	var at attempt
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		locked, err := q.LockUser(ctx, queries.LockUserParams{TenantID: t.ID.UUID(), ID: p.User})
		if err != nil {
			return queries.NotFound(err, "no such user")
		}
		at, err = s.countAttempt(ctx, q, t, locked, meta.IP)
		return err
	})
	if err != nil {
		return u, fmt.Errorf("%s: %w", action, err)
	}
	if !at.admitted {
		return u, tooMany(at.retry)
	}
	ok := false
	if u.PasswordHash != nil {
		if ok, _, err = s.hasher.Verify(ctx, *u.PasswordHash, NormalizePassword(current)); err != nil {
			if uerr := s.uncount(ctx, t, at); uerr != nil {
				return u, fmt.Errorf("%s: %w", action, errors.Join(err, uerr))
			}
			return u, err
		}
	}
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if ok {
			return s.attemptSucceeded(ctx, q, t, at)
		}
		if err := s.attemptFailed(ctx, q, t, at, meta); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: action, Target: "user:" + p.User.String(), Outcome: Failure,
			Details: map[string]string{"reason": "wrong current password"}, Meta: meta,
		})
	})
	if err != nil {
		return u, fmt.Errorf("%s: %w", action, err)
	}
	if !ok {
		return u, problem.Errorf(problem.Unauthorized, "the current password is wrong")
	}
	return u, nil
}

// Logout ends the session the access token belongs to: its refresh
// tokens stop working at once; access tokens already issued stop at
// endpoints that check the session, and elsewhere at their expiry.
func (s *Service) Logout(ctx context.Context, t *tenancy.Tenant, p *Principal, meta Meta) error {
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		reason := "logout"
		n, err := q.RevokeSession(ctx, queries.RevokeSessionParams{
			TenantID: t.ID.UUID(), ID: p.Session, UserID: p.User, RevokedReason: &reason,
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return problem.Errorf(problem.Unauthorized, "the session has ended; sign in again")
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "logout", Target: "session:" + p.Session.String(), Outcome: Success, Meta: meta,
		})
	})
}

// AuthenticateCookie checks a browser's session cookie on tenant t and
// returns its principal and the hash of the session's CSRF token. Returns
// Unauthorized for an unknown cookie or an ended session.
func (s *Service) AuthenticateCookie(ctx context.Context, t *tenancy.Tenant, cookie string) (*Principal, []byte, error) {
	if cookie == "" || len(cookie) > 128 {
		return nil, nil, problem.Errorf(problem.Unauthorized, "the session has ended; sign in again")
	}
	var sess queries.AppSession
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		sess, err = q.GetSessionByCookie(ctx, queries.GetSessionByCookieParams{TenantID: t.ID.UUID(), CookieHash: hashToken(cookie)})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (sess.RevokedAt != nil || !s.now().Before(sess.ExpiresAt))) {
		return nil, nil, problem.Errorf(problem.Unauthorized, "the session has ended; sign in again")
	}
	if err != nil {
		return nil, nil, err
	}
	return &Principal{User: sess.UserID, Session: sess.ID}, sess.CsrfHash, nil
}
