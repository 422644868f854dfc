package identity

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Purposes of mailed tokens (app.email_tokens.purpose).
const (
	purposeVerify = "verify_email"
	purposeReset  = "reset_password"
	purposeInvite = "invite"
)

// Pages that mailed links open, under the tenant's link base (its own
// app, or Gatehouse's hosted pages at <issuer>/account).
const (
	pageVerify = "verify-email"
	pageReset  = "reset-password"
	pageInvite = "accept-invite"
)

// errBadEmailToken answers every refused mailed token alike: unknown,
// spent, expired, or of another purpose or tenant.
var errBadEmailToken = problem.InvalidField("token", "is invalid, expired or already used; ask for a new link")

// mailLink is the link a mail of tenant t carries for page with token.
func (s *Service) mailLink(t *tenancy.Tenant, page, token string) string {
	base := t.LinkBaseURL
	if base == "" {
		base = s.cfg.Issuer(t) + "/account"
	}
	return strings.TrimRight(base, "/") + "/" + page + "?token=" + url.QueryEscape(token)
}

// sender is who tenant t's mail comes from: its own settings, or the
// server's address under the tenant's name.
func (s *Service) sender(t *tenancy.Tenant) (mail.Address, string) {
	from := mail.Address{Name: t.MailFromName, Email: t.MailFromAddress}
	if from.Name == "" {
		from.Name = t.Name
	}
	if from.Email == "" {
		from.Email = s.cfg.MailFrom
	}
	return from, t.MailReplyTo
}

// prepareMail renders and seals a mail of kind to the address to. It runs
// before the transaction that writes it, so that no Vault call holds a
// database connection.
func (s *Service) prepareMail(ctx context.Context, t *tenancy.Tenant, kind, to string, d mail.Data) (*mail.Pending, error) {
	d.Tenant, d.Email = t.Name, to
	from, replyTo := s.sender(t)
	m, err := mail.Render(kind, from, replyTo, to, d)
	if err != nil {
		return nil, err
	}
	return s.cfg.Outbox.Prepare(ctx, t, kind, m)
}

// tokenMail is a mail carrying a single-use token, sealed and ready to be
// written with its token in one transaction.
type tokenMail struct {
	hash    []byte
	purpose string
	email   string
	expires time.Time
	mail    *mail.Pending
}

// newTokenMail makes a fresh token of purpose for the address to and the
// mail of kind that carries its link to page.
func (s *Service) newTokenMail(ctx context.Context, t *tenancy.Tenant, kind, purpose, page, to string) (*tokenMail, error) {
	ttl := s.tokenTTL(purpose)
	tok, hash := newRefreshToken()
	p, err := s.prepareMail(ctx, t, kind, to, mail.Data{Link: s.mailLink(t, page, tok), Expires: inWords(ttl)})
	if err != nil {
		return nil, err
	}
	return &tokenMail{hash: hash, purpose: purpose, email: to, expires: s.now().Add(ttl), mail: p}, nil
}

// write stores the token for user and queues the mail, in q's transaction.
// Spent and expired tokens of the user are pruned on the way.
func (m *tokenMail) write(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID) error {
	if err := q.PruneEmailTokens(ctx, queries.PruneEmailTokensParams{TenantID: t.ID.UUID(), UserID: user}); err != nil {
		return err
	}
	if err := q.CreateEmailToken(ctx, queries.CreateEmailTokenParams{
		TenantID: t.ID.UUID(), TokenHash: m.hash, UserID: user, Purpose: m.purpose, Email: m.email, ExpiresAt: m.expires,
	}); err != nil {
		return err
	}
	return m.mail.Write(ctx, q, user)
}

func (s *Service) tokenTTL(purpose string) time.Duration {
	switch purpose {
	case purposeReset:
		return s.cfg.ResetTTL
	case purposeInvite:
		return s.cfg.InviteTTL
	}
	return s.cfg.VerifyTTL
}

// inWords says how long a link works, for the mail's text.
func inWords(d time.Duration) string {
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d >= 48*time.Hour && d%(24*time.Hour) == 0:
		return plural(int(d/(24*time.Hour)), "day")
	case d >= time.Hour && d%time.Hour == 0:
		return plural(int(d/time.Hour), "hour")
	}
	return plural(max(1, int(d/time.Minute)), "minute")
}

// Signup creates an account in tenant t and mails a link that confirms
// its address. If the address already has an account, nothing is created
// and its owner gets a mail saying so (with a password-reset link)
// instead: the answer, and its timing, are the same either way, so sign-up
// does not reveal which addresses have accounts. Returns Forbidden if the
// tenant does not allow self sign-up, Invalid for a bad email, name or
// password (naming the rule), Unavailable when the password pool is
// saturated or the mail cannot be sealed.
func (s *Service) Signup(ctx context.Context, t *tenancy.Tenant, in SignupInput, meta Meta) error {
	if t.Signup != tenancy.SignupOpen {
		return problem.Errorf(problem.Forbidden, "sign-up is by invitation only")
	}
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return err
	}
	name, err := displayName(in.DisplayName)
	if err != nil {
		return err
	}
	pw, err := CheckPassword(in.Password, email)
	if err != nil {
		return err
	}
	hash, err := s.hasher.Hash(ctx, pw)
	if err != nil {
		return err
	}
	verify, err := s.newTokenMail(ctx, t, mail.VerifyEmail, purposeVerify, pageVerify, email)
	if err != nil {
		return err
	}
	exists, err := s.newTokenMail(ctx, t, mail.AccountExists, purposeReset, pageReset, email)
	if err != nil {
		return err
	}
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		u, err := q.CreateAccountIfNew(ctx, queries.CreateAccountIfNewParams{
			TenantID: t.ID.UUID(), Email: email, DisplayName: name, PasswordHash: &hash,
		})
		if err == nil {
			if err := verify.write(ctx, q, t, u.ID); err != nil {
				return err
			}
			return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
				Actor: u.ID, Action: "signup", Target: "user:" + u.ID.String(), Outcome: Success, Meta: meta,
			})
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		u, err = q.GetUserByEmail(ctx, queries.GetUserByEmailParams{TenantID: t.ID.UUID(), Email: email})
		if err != nil {
			return err
		}
		if u.Status == "active" {
			if err := exists.write(ctx, q, t, u.ID); err != nil {
				return err
			}
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Action: "signup", Target: "user:" + u.ID.String(), Outcome: Failure, Meta: meta,
			Details: map[string]string{"reason": "the address has an account; its owner was told"},
		})
	})
	if err != nil {
		return fmt.Errorf("sign up: %w", err)
	}
	s.cfg.Outbox.Notify(t)
	return nil
}

// ResendVerification mails a new confirmation link to email if it is an
// active, unconfirmed account of tenant t. It answers the same whatever
// the address, so it reveals nothing about which accounts exist.
func (s *Service) ResendVerification(ctx context.Context, t *tenancy.Tenant, email string, meta Meta) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	m, err := s.newTokenMail(ctx, t, mail.VerifyEmail, purposeVerify, pageVerify, e)
	if err != nil {
		return err
	}
	sent := false
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		u, err := q.GetUserByEmail(ctx, queries.GetUserByEmailParams{TenantID: t.ID.UUID(), Email: e})
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (u.Status != "active" || u.EmailVerifiedAt != nil)) {
			return nil
		}
		if err != nil {
			return err
		}
		sent = true
		return m.write(ctx, q, t, u.ID)
	})
	if err != nil {
		return fmt.Errorf("resend verification: %w", err)
	}
	if sent {
		s.cfg.Outbox.Notify(t)
	}
	return nil
}

// VerifyEmail spends a confirmation token: the address it was sent to is
// confirmed, and, when it was sent for an email change, becomes the
// account's address (the old address is told). Returns Invalid naming
// the token for an unknown, spent or expired one, Conflict if the new
// address got an account of its own meanwhile.
func (s *Service) VerifyEmail(ctx context.Context, t *tenancy.Tenant, token string, meta Meta) error {
	tok, u, err := s.peekToken(ctx, t, token, purposeVerify)
	if err != nil {
		return err
	}
	var notice *mail.Pending
	if tok.Email != u.Email {
		if notice, err = s.prepareMail(ctx, t, mail.EmailChanged, u.Email, mail.Data{NewAddr: tok.Email}); err != nil {
			return err
		}
	}
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		locked, err := q.LockUser(ctx, queries.LockUserParams{TenantID: t.ID.UUID(), ID: u.ID})
		if err != nil {
			return queries.NotFound(err, "no such user")
		}
		if locked.Email != u.Email {
			return problem.Errorf(problem.Conflict, "the account's address changed meanwhile; ask for a new link")
		}
		if _, err := s.spendToken(ctx, q, t, token, purposeVerify); err != nil {
			return err
		}
		if _, err := q.SetEmailVerified(ctx, queries.SetEmailVerifiedParams{TenantID: t.ID.UUID(), ID: u.ID, Email: tok.Email}); err != nil {
			return err
		}
		action := "email.verify"
		if notice != nil {
			action = "email.change"
			// Links mailed to the old address must not work any more.
			if err := spendAllTokens(ctx, q, t, u.ID); err != nil {
				return err
			}
			if err := notice.Write(ctx, q, u.ID); err != nil {
				return err
			}
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: u.ID, Action: action, Target: "user:" + u.ID.String(), Outcome: Success, Meta: meta,
		})
	})
	if queries.IsUniqueViolation(err) {
		return problem.Errorf(problem.Conflict, "this address now belongs to another account")
	}
	if err != nil {
		return err
	}
	if notice != nil {
		s.cfg.Outbox.Notify(t)
	}
	return nil
}

// ForgotPassword mails a password-reset link to email if it is an active
// account of tenant t. It answers the same whatever the address, and
// costs the same (the mail is sealed either way), so it reveals nothing
// about which accounts exist.
func (s *Service) ForgotPassword(ctx context.Context, t *tenancy.Tenant, email string, meta Meta) error {
	e, err := NormalizeEmail(email)
	if err != nil {
		return err
	}
	m, err := s.newTokenMail(ctx, t, mail.ResetPassword, purposeReset, pageReset, e)
	if err != nil {
		return err
	}
	sent := false
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		ev := Event{Action: "password.forgot", Outcome: Success, Meta: meta}
		u, err := q.GetUserByEmail(ctx, queries.GetUserByEmailParams{TenantID: t.ID.UUID(), Email: e})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			ev.Outcome, ev.Details = Failure, map[string]string{"reason": "unknown account"}
		case err != nil:
			return err
		case u.Status != "active":
			ev.Outcome, ev.Target, ev.Details = Failure, "user:"+u.ID.String(), map[string]string{"reason": "account " + u.Status}
		default:
			ev.Target = "user:" + u.ID.String()
			if err := m.write(ctx, q, t, u.ID); err != nil {
				return err
			}
			sent = true
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), ev)
	})
	if err != nil {
		return fmt.Errorf("forgot password: %w", err)
	}
	if sent {
		s.cfg.Outbox.Notify(t)
	}
	return nil
}

// ResetPassword spends a password-reset or invitation token and sets the
// account's password: every session of the account ends, its lockout is
// lifted, every other mailed link of it stops working, and its address
// counts as confirmed (the token proved the mailbox). Returns Invalid
// naming the token for an unknown, spent or expired one, or naming the
// password rule it breaks; Unavailable when the password pool is
// saturated.
func (s *Service) ResetPassword(ctx context.Context, t *tenancy.Tenant, token, password string, meta Meta) error {
	_, u, err := s.peekToken(ctx, t, token, purposeReset, purposeInvite)
	if err != nil {
		return err
	}
	pw, err := CheckPassword(password, u.Email)
	if err != nil {
		return asField(err, "new_password")
	}
	hash, err := s.hasher.Hash(ctx, pw)
	if err != nil {
		return err
	}
	return s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if _, err := q.LockUser(ctx, queries.LockUserParams{TenantID: t.ID.UUID(), ID: u.ID}); err != nil {
			return queries.NotFound(err, "no such user")
		}
		tok, err := s.spendToken(ctx, q, t, token, purposeReset, purposeInvite)
		if err != nil {
			return err
		}
		if err := q.SetPasswordHash(ctx, queries.SetPasswordHashParams{TenantID: t.ID.UUID(), ID: u.ID, PasswordHash: &hash}); err != nil {
			return err
		}
		if tok.Email == u.Email {
			if _, err := q.SetEmailVerified(ctx, queries.SetEmailVerifiedParams{TenantID: t.ID.UUID(), ID: u.ID, Email: u.Email}); err != nil {
				return err
			}
		}
		if err := q.ClearLoginFailures(ctx, queries.ClearLoginFailuresParams{TenantID: t.ID.UUID(), ID: u.ID}); err != nil {
			return err
		}
		// Every other link too: a pending address change asked for by
		// whoever held the account before the reset must not complete.
		if err := spendAllTokens(ctx, q, t, u.ID); err != nil {
			return err
		}
		reason := "password reset"
		if _, err := q.RevokeUserSessions(ctx, queries.RevokeUserSessionsParams{TenantID: t.ID.UUID(), UserID: u.ID, RevokedReason: &reason}); err != nil {
			return err
		}
		action := "password.reset"
		if tok.Purpose == purposeInvite {
			action = "invite.accept"
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: u.ID, Action: action, Target: "user:" + u.ID.String(), Outcome: Success, Meta: meta,
		})
	})
}

// ChangeEmail starts changing the signed-in user's address: a link goes
// to the new address, and the change happens when it is opened
// (VerifyEmail). The account's other sessions end. The current password is required, and guesses of it count
// towards the account's lockout. An address that has an account gets no
// link, with the same answer. Returns Invalid for a bad address or the
// current one, Unauthorized for a wrong password or an ended session.
func (s *Service) ChangeEmail(ctx context.Context, t *tenancy.Tenant, p *Principal, newEmail, current string, meta Meta) error {
	var e string
	_, err := s.confirmPassword(ctx, t, p, current, "email.change", meta, func(u queries.AppUser) (err error) {
		if e, err = NormalizeEmail(newEmail); err != nil {
			return err
		}
		if e == u.Email {
			return problem.InvalidField("email", "is already the account's address")
		}
		return nil
	})
	if err != nil {
		return err
	}
	m, err := s.newTokenMail(ctx, t, mail.VerifyEmail, purposeVerify, pageVerify, e)
	if err != nil {
		return err
	}
	sent := false
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		// A change of address is a change of credentials, like one of
		// password: whoever else is signed in is signed out (whatever
		// becomes of the address, so that the answer tells nothing).
		reason := "email change requested"
		if _, err := q.RevokeOtherSessions(ctx, queries.RevokeOtherSessionsParams{
			TenantID: t.ID.UUID(), UserID: p.User, ID: p.Session, RevokedReason: &reason,
		}); err != nil {
			return err
		}
		ev := Event{Actor: p.User, Action: "email.change_request", Target: "user:" + p.User.String(), Outcome: Success, Meta: meta}
		// An address that has an account gets no link, and the answer is
		// the same: signed-in users cannot probe which addresses have
		// accounts either.
		if _, err := q.GetUserByEmail(ctx, queries.GetUserByEmailParams{TenantID: t.ID.UUID(), Email: e}); err == nil {
			ev.Outcome, ev.Details = Failure, map[string]string{"reason": "the address has an account"}
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return err
		} else {
			if err := m.write(ctx, q, t, p.User); err != nil {
				return err
			}
			sent = true
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), ev)
	})
	if err != nil {
		return err
	}
	if sent {
		s.cfg.Outbox.Notify(t)
	}
	return nil
}

// peekToken finds a live mailed token of one of purposes and its active
// user, without spending it: callers check what they must (the new
// password against the policy, say) before spending it in their write.
func (s *Service) peekToken(ctx context.Context, t *tenancy.Tenant, token string, purposes ...string) (queries.AppEmailToken, queries.AppUser, error) {
	var tok queries.AppEmailToken
	var u queries.AppUser
	if token == "" || len(token) > 128 {
		return tok, u, errBadEmailToken
	}
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		tok, err = q.PeekEmailToken(ctx, queries.PeekEmailTokenParams{TenantID: t.ID.UUID(), TokenHash: hashToken(token), Purposes: purposes})
		if errors.Is(err, pgx.ErrNoRows) {
			return errBadEmailToken
		}
		if err != nil {
			return err
		}
		u, err = q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: tok.UserID})
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && u.Status != "active") {
			return errBadEmailToken
		}
		return err
	})
	return tok, u, err
}

// spendToken spends a mailed token in q's transaction: of concurrent
// spends exactly one succeeds; the others get errBadEmailToken.
func (s *Service) spendToken(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, token string, purposes ...string) (queries.AppEmailToken, error) {
	tok, err := q.SpendEmailToken(ctx, queries.SpendEmailTokenParams{TenantID: t.ID.UUID(), TokenHash: hashToken(token), Purposes: purposes})
	if errors.Is(err, pgx.ErrNoRows) {
		return tok, errBadEmailToken
	}
	return tok, err
}

// asField returns err, a broken rule of one field, as the same rule
// broken by the request's field of that name.
func asField(err error, field string) error {
	if e, ok := errors.AsType[*problem.Error](err); ok && len(e.Fields) == 1 {
		return problem.InvalidField(field, e.Fields[0].Reason)
	}
	return err
}

// spendAllTokens spends every open mailed token of user.
func spendAllTokens(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID) error {
	return q.SpendUserEmailTokens(ctx, queries.SpendUserEmailTokensParams{
		TenantID: t.ID.UUID(), UserID: user, Purposes: []string{purposeReset, purposeInvite, purposeVerify},
	})
}
