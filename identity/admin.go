package identity

import (
	"context"
	"errors"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Account roles. An admin of a tenant may do everything in it; the role
// is kept on the account (what admins see) and mirrored to SpiceDB,
// which decides every admin request (Authorizer), custom roles and
// groups included.
const (
	RoleMember = "member"
	RoleAdmin  = "admin"
)

// Authorizer decides and records admin rights (rebac.Service, over
// SpiceDB).
type Authorizer interface {
	// Allowed reports whether user holds permission on the object
	// objectType:objectID of tenant t (the tenant itself when both are
	// empty), seeing every change made so far; Unavailable when it
	// cannot tell.
	Allowed(ctx context.Context, t *tenancy.Tenant, user uuid.UUID, objectType, objectID, permission string) (bool, error)
	// SetAdmin records, in q's transaction, that user is or is no
	// longer an admin of t.
	SetAdmin(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, admin bool) error
	// SetDisabled records, in q's transaction, that user is or is no
	// longer disabled: a disabled account holds no right of t.
	SetDisabled(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, disabled bool) error
	// MayRestore refuses, in q's transaction, enabling user again on the
	// authority of by when that gives back a right by does not hold.
	MayRestore(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, by, user uuid.UUID) error
	// ForgetUser removes, in q's transaction, every grant of a deleted
	// user.
	ForgetUser(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID) error
	// ForgetApp removes, in q's transaction, every grant of a deleted
	// machine app.
	ForgetApp(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, app uuid.UUID) error
	// Flush makes t's recorded changes take effect now (after commit).
	Flush(ctx context.Context, t *tenancy.Tenant)
}

// adminPermission is the authorizer's name for what admins hold (the
// admin relation of an account that is not disabled).
const adminPermission = "administer"

// permissionFor is the tenant permission an admin action needs.
func permissionFor(action string) string {
	switch {
	case strings.HasPrefix(action, "audit."):
		return "view_audit"
	case strings.HasPrefix(action, "role."):
		return "manage_roles"
	case strings.HasPrefix(action, "branding."):
		return adminPermission // how the tenant's pages look is its admins' to say
	case action == "user.role":
		// Making admins is for admins: a custom role that manages users
		// must not be a way to become one.
		return adminPermission
	}
	return "manage_users"
}

// AdminTx runs fn in a transaction of tenant t after checking that p's
// session stands and that its user holds the permission action needs.
// Every decision is audited. Returns Unauthorized if the session ended,
// Forbidden when the permission is missing, Unavailable when it cannot
// be checked (never allowing by default).
func (s *Service) AdminTx(ctx context.Context, t *tenancy.Tenant, p *Principal, action string, meta Meta, fn func(q *queries.Queries) error) error {
	return s.GuardedTx(ctx, t, p, action, "", "", permissionFor(action), meta, fn)
}

// GuardedTx is AdminTx for an action that needs permission perm on one
// object of the tenant, objectType:objectID (a group's manage, say),
// rather than on the tenant (both empty).
func (s *Service) GuardedTx(ctx context.Context, t *tenancy.Tenant, p *Principal, action, objectType, objectID, perm string, meta Meta, fn func(q *queries.Queries) error) error {
	on := objectType != "" || objectID != ""
	allowed, err := s.cfg.Authorizer.Allowed(ctx, t, p.User, objectType, objectID, perm)
	if err != nil {
		return err
	}
	err = s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if _, err := s.liveSession(ctx, q, t, p); err != nil {
			return err
		}
		details := map[string]string{"permission": perm}
		if on {
			details["on"] = objectType + ":" + objectID
		}
		if !allowed {
			return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
				Actor: p.User, Action: action, Outcome: Denied, Meta: meta, Details: details,
			})
		}
		details["for"] = action
		if err := appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "authz.check", Outcome: Success, Meta: meta, Details: details,
		}); err != nil {
			return err
		}
		return fn(q)
	})
	if err == nil && !allowed {
		if on {
			return problem.Errorf(problem.Forbidden, "you lack the %s permission on this %s", perm, objectType)
		}
		return problem.Errorf(problem.Forbidden, "you lack the %s permission of this tenant", perm)
	}
	return err
}

// errUnconfirmedAdmin refuses admin rights to an account whose owner
// never proved the address: whoever signed it up may not be whoever the
// address belongs to.
var errUnconfirmedAdmin = problem.Errorf(problem.Conflict,
	"the account's email address is not confirmed: it can be given admin rights once its owner confirms it (or invite the address as an admin instead)")

// onUser reads user id of tenant t for an action by p in q's
// transaction, and refuses the action when the target is an admin and p
// is not one: only admins act on admins. Returns NotFound or Forbidden.
func (s *Service) onUser(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, p *Principal, id uuid.UUID) (queries.AppUser, error) {
	u, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: id})
	if err = queries.NotFound(err, "no such user"); err != nil {
		return u, err
	}
	if u.Role != RoleAdmin || id == p.User {
		return u, nil
	}
	caller, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: p.User})
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return u, err
	}
	if err != nil || caller.Role != RoleAdmin || caller.Status != "active" {
		return u, problem.Errorf(problem.Forbidden, "only admins may act on an admin")
	}
	return u, nil
}

// keepAdmin refuses, in q's transaction, to delete, disable or demote u
// if u is tenant t's last active admin. Admin changes of a tenant run
// one at a time (AdminTx audits first, and the audit chain's head is
// locked until commit), so two changes that each leave one admin cannot
// both pass. Returns Conflict.
func keepAdmin(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, u queries.AppUser) error {
	if u.Role != RoleAdmin || u.Status != "active" {
		return nil
	}
	admins, err := q.ActiveAdmins(ctx, t.ID.UUID())
	if err != nil {
		return err
	}
	for _, id := range admins {
		if id != u.ID {
			return nil
		}
	}
	return problem.Errorf(problem.Conflict, "this is the tenant's last active admin: make another admin first")
}

// UserPage is a page of users and the cursor of the next one ("" at the
// end).
type UserPage struct {
	Users []*User `json:"users"`
	Next  string  `json:"next,omitempty"`
}

// ListUsers returns a page of tenant t's users ordered by email, after the
// cursor, optionally only those whose email contains search. Admins only.
func (s *Service) ListUsers(ctx context.Context, t *tenancy.Tenant, p *Principal, search, cursor string, limit int, meta Meta) (*UserPage, error) {
	if limit <= 0 || limit > 200 {
		return nil, problem.InvalidField("limit", "must be between 1 and 200")
	}
	if len(search) > 254 || len(cursor) > 254 {
		return nil, problem.Errorf(problem.Invalid, "search and cursor are at most 254 characters")
	}
	page := &UserPage{Users: []*User{}}
	err := s.AdminTx(ctx, t, p, "user.list", meta, func(q *queries.Queries) error {
		rows, err := q.ListUsersPage(ctx, queries.ListUsersPageParams{
			TenantID: t.ID.UUID(), After: cursor, Search: strings.ToLower(search), PageSize: int32(limit + 1),
		})
		if err != nil {
			return err
		}
		for i, r := range rows {
			if i == limit {
				page.Next = rows[i-1].Email
				break
			}
			page.Users = append(page.Users, userFromRow(r))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return page, nil
}

// GetUser returns one of tenant t's users. Admins only. Returns NotFound
// if t has no such user (another tenant's users included).
func (s *Service) GetUser(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) (*User, error) {
	var u queries.AppUser
	err := s.AdminTx(ctx, t, p, "user.get", meta, func(q *queries.Queries) (err error) {
		u, err = q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: id})
		return queries.NotFound(err, "no such user")
	})
	if err != nil {
		return nil, err
	}
	return userFromRow(u), nil
}

// CreateUserInput is what an admin gives for a new account.
type CreateUserInput struct {
	Email       string
	DisplayName string
	Role        string
}

// CreateUser creates an account without a password in tenant t and
// mails its owner an invitation to choose one. Admins only. Returns
// Invalid for a bad email, name or role, Conflict if the email is taken.
func (s *Service) CreateUser(ctx context.Context, t *tenancy.Tenant, p *Principal, in CreateUserInput, meta Meta) (*User, error) {
	var u *User
	action := "user.create"
	if in.Role == RoleAdmin {
		action = "user.role"
	}
	err := s.createInvited(ctx, t, in, func(fn func(q *queries.Queries) error) error {
		return s.AdminTx(ctx, t, p, action, meta, fn)
	}, func(created queries.AppUser) Event {
		u = userFromRow(created)
		return Event{Actor: p.User, Action: "user.create", Target: "user:" + created.ID.String(), Outcome: Success, Meta: meta,
			Details: map[string]string{"role": created.Role}}
	})
	return u, err
}

// InviteAdmin creates the first admin of tenant t on a platform
// operator's authority and mails them an invitation. Audited with no
// actor. An account of the address whose owner never confirmed it is
// taken over for the invited person (whoever signed it up may not own
// the address): its password, sessions and mailed links are void, and
// it waits for the invitation as a new account would. Returns Invalid
// for a bad email or name, Conflict if the email has a confirmed account
// (grant it the role with SetRole instead).
func (s *Service) InviteAdmin(ctx context.Context, t *tenancy.Tenant, email, name string) (*User, error) {
	var u *User
	err := s.createInvited(ctx, t, CreateUserInput{Email: email, DisplayName: name, Role: RoleAdmin}, func(fn func(q *queries.Queries) error) error {
		return s.db.Tx(ctx, t, fn)
	}, func(created queries.AppUser) Event {
		u = userFromRow(created)
		return Event{Action: "user.create", Target: "user:" + created.ID.String(), Outcome: Success,
			Details: map[string]string{"role": RoleAdmin, "by": "operator"}}
	})
	if problem.CodeOf(err) == problem.Conflict {
		return s.takeOverForAdmin(ctx, t, email, name)
	}
	return u, err
}

// takeOverForAdmin gives the unconfirmed account of email to the admin
// an operator invites (see InviteAdmin).
func (s *Service) takeOverForAdmin(ctx context.Context, t *tenancy.Tenant, email, name string) (*User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	name, err = displayName(name)
	if err != nil {
		return nil, err
	}
	invite, err := s.newTokenMail(ctx, t, mail.Invite, purposeInvite, pageInvite, e)
	if err != nil {
		return nil, err
	}
	var u queries.AppUser
	err = s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		u, err = q.TakeOverUnconfirmedAccount(ctx, queries.TakeOverUnconfirmedAccountParams{TenantID: t.ID.UUID(), Email: e, DisplayName: name})
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.Errorf(problem.Conflict, "an account with this email already exists and its address is confirmed: grant it the role instead")
		}
		if err != nil {
			return err
		}
		reason := "taken over by an admin invitation"
		if _, err := q.RevokeUserSessions(ctx, queries.RevokeUserSessionsParams{TenantID: t.ID.UUID(), UserID: u.ID, RevokedReason: &reason}); err != nil {
			return err
		}
		if err := spendAllTokens(ctx, q, t, u.ID); err != nil {
			return err
		}
		// Nothing the squatter was given or gathered stays with the
		// account: groups, roles, what apps granted it.
		if err := s.cfg.Authorizer.ForgetUser(ctx, q, t, u.ID); err != nil {
			return err
		}
		if err := s.cfg.Authorizer.SetAdmin(ctx, q, t, u.ID, true); err != nil {
			return err
		}
		if err := invite.write(ctx, q, t, u.ID); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Action: "user.take_over", Target: "user:" + u.ID.String(), Outcome: Success,
			Details: map[string]string{"role": RoleAdmin, "by": "operator", "reason": "unconfirmed address invited as admin"},
		})
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Outbox.Notify(t)
	s.cfg.Authorizer.Flush(ctx, t)
	return userFromRow(u), nil
}

// createInvited creates an invited account in a transaction that tx
// opens, with its invitation mail and the audit event that event makes.
func (s *Service) createInvited(ctx context.Context, t *tenancy.Tenant, in CreateUserInput, tx func(func(*queries.Queries) error) error, event func(queries.AppUser) Event) error {
	email, err := NormalizeEmail(in.Email)
	if err != nil {
		return err
	}
	name, err := displayName(in.DisplayName)
	if err != nil {
		return err
	}
	if in.Role == "" {
		in.Role = RoleMember
	}
	if in.Role != RoleMember && in.Role != RoleAdmin {
		return problem.InvalidField("role", "must be member or admin")
	}
	invite, err := s.newTokenMail(ctx, t, mail.Invite, purposeInvite, pageInvite, email)
	if err != nil {
		return err
	}
	err = tx(func(q *queries.Queries) error {
		u, err := q.AdminCreateUser(ctx, queries.AdminCreateUserParams{TenantID: t.ID.UUID(), Email: email, DisplayName: name, Role: in.Role})
		if err != nil {
			return err
		}
		if in.Role == RoleAdmin {
			if err := s.cfg.Authorizer.SetAdmin(ctx, q, t, u.ID, true); err != nil {
				return err
			}
		}
		if err := invite.write(ctx, q, t, u.ID); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), event(u))
	})
	if queries.IsUniqueViolation(err) {
		return problem.Errorf(problem.Conflict, "an account with this email already exists")
	}
	if err != nil {
		return err
	}
	s.cfg.Outbox.Notify(t)
	if in.Role == RoleAdmin {
		s.cfg.Authorizer.Flush(ctx, t)
	}
	return nil
}

// SendPasswordReset mails one of tenant t's users a link to choose a new
// password (an invitation again, if they never chose one). Their password
// stays valid until the link is used. Admins only. Returns NotFound, or
// Conflict for a disabled account.
func (s *Service) SendPasswordReset(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) error {
	var u queries.AppUser
	err := s.AdminTx(ctx, t, p, "user.reset_password", meta, func(q *queries.Queries) (err error) {
		u, err = s.onUser(ctx, q, t, p, id)
		return err
	})
	if err != nil {
		return err
	}
	if u.Status != "active" {
		return problem.Errorf(problem.Conflict, "the account is disabled; enable it first")
	}
	kind, purpose, page := mail.ResetPassword, purposeReset, pageReset
	if u.PasswordHash == nil {
		kind, purpose, page = mail.Invite, purposeInvite, pageInvite
	}
	m, err := s.newTokenMail(ctx, t, kind, purpose, page, u.Email)
	if err != nil {
		return err
	}
	err = s.AdminTx(ctx, t, p, "user.reset_password", meta, func(q *queries.Queries) error {
		// The address may have changed since it was read: the mail must
		// go to the current one.
		now, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: id})
		if err = queries.NotFound(err, "no such user"); err != nil {
			return err
		}
		if now.Email != u.Email || now.Status != "active" {
			return problem.Errorf(problem.Conflict, "the account changed meanwhile; try again")
		}
		if err := m.write(ctx, q, t, id); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "user.reset_password", Target: "user:" + id.String(), Outcome: Success, Meta: meta,
		})
	})
	if err != nil {
		return err
	}
	s.cfg.Outbox.Notify(t)
	return nil
}

// UpdateUserInput changes what is set.
type UpdateUserInput struct {
	DisplayName *string
	Status      *string // active or disabled; disabling ends every session
	Role        *string
}

// UpdateUser changes one of tenant t's users. Admins only; an admin cannot
// disable or demote themselves (a tenant must not lock out its last admin
// by accident). Returns NotFound, Invalid, or Conflict for a change to
// oneself.
func (s *Service) UpdateUser(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, in UpdateUserInput, meta Meta) (*User, error) {
	if in.DisplayName == nil && in.Status == nil && in.Role == nil {
		return nil, problem.Errorf(problem.Invalid, "nothing to change: give display_name, status or role")
	}
	if in.DisplayName != nil {
		name, err := displayName(*in.DisplayName)
		if err != nil {
			return nil, err
		}
		in.DisplayName = &name
	}
	if in.Status != nil && *in.Status != "active" && *in.Status != "disabled" {
		return nil, problem.InvalidField("status", "must be active or disabled")
	}
	if in.Role != nil && *in.Role != RoleMember && *in.Role != RoleAdmin {
		return nil, problem.InvalidField("role", "must be member or admin")
	}
	if id == p.User && ((in.Status != nil && *in.Status != "active") || (in.Role != nil && *in.Role != RoleAdmin)) {
		return nil, problem.Errorf(problem.Conflict, "admins cannot disable or demote themselves; ask another admin")
	}
	var u queries.AppUser
	action := "user.update"
	if in.Role != nil {
		action = "user.role"
	}
	err := s.AdminTx(ctx, t, p, action, meta, func(q *queries.Queries) (err error) {
		was, err := s.onUser(ctx, q, t, p, id)
		if err != nil {
			return err
		}
		if (in.Status != nil && *in.Status != "active") || (in.Role != nil && *in.Role != RoleAdmin) {
			if err := keepAdmin(ctx, q, t, was); err != nil {
				return err
			}
		}
		if in.Role != nil && *in.Role == RoleAdmin && was.Role != RoleAdmin && was.EmailVerifiedAt == nil {
			return errUnconfirmedAdmin
		}
		if in.Status != nil && *in.Status == "active" && was.Status != "active" {
			if err := s.cfg.Authorizer.MayRestore(ctx, q, t, p.User, id); err != nil {
				return err
			}
		}
		u, err = q.AdminUpdateUser(ctx, queries.AdminUpdateUserParams{
			TenantID: t.ID.UUID(), ID: id, DisplayName: in.DisplayName, Status: in.Status, Role: in.Role,
		})
		if err = queries.NotFound(err, "no such user"); err != nil {
			return err
		}
		if in.Role != nil {
			if err := s.cfg.Authorizer.SetAdmin(ctx, q, t, id, *in.Role == RoleAdmin); err != nil {
				return err
			}
		}
		if in.Status != nil && *in.Status != was.Status {
			if err := s.cfg.Authorizer.SetDisabled(ctx, q, t, id, *in.Status == "disabled"); err != nil {
				return err
			}
		}
		if in.Status != nil && *in.Status == "disabled" {
			reason := "account disabled"
			if _, err := q.RevokeUserSessions(ctx, queries.RevokeUserSessionsParams{TenantID: t.ID.UUID(), UserID: id, RevokedReason: &reason}); err != nil {
				return err
			}
		}
		details := map[string]string{}
		for k, v := range map[string]*string{"display_name": in.DisplayName, "status": in.Status, "role": in.Role} {
			if v != nil {
				details[k] = *v
			}
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "user.update", Target: "user:" + id.String(), Outcome: Success, Meta: meta, Details: details,
		})
	})
	if err != nil {
		return nil, err
	}
	if in.Role != nil || in.Status != nil {
		s.cfg.Authorizer.Flush(ctx, t)
	}
	return userFromRow(u), nil
}

// Unlock lifts a lockout of one of tenant t's users. Admins only.
func (s *Service) Unlock(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) error {
	return s.AdminTx(ctx, t, p, "user.unlock", meta, func(q *queries.Queries) error {
		if _, err := s.onUser(ctx, q, t, p, id); err != nil {
			return err
		}
		if err := q.ClearLoginFailures(ctx, queries.ClearLoginFailuresParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "user.unlock", Target: "user:" + id.String(), Outcome: Success, Meta: meta,
		})
	})
}

// DeleteUser deletes one of tenant t's users with their sessions and
// tokens. The audit trail keeps the user's id (no personal data) so the
// chain stays whole. Admins only; not oneself.
func (s *Service) DeleteUser(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) error {
	if id == p.User {
		return problem.Errorf(problem.Conflict, "admins cannot delete themselves; ask another admin")
	}
	err := s.AdminTx(ctx, t, p, "user.delete", meta, func(q *queries.Queries) error {
		u, err := s.onUser(ctx, q, t, p, id)
		if err != nil {
			return err
		}
		if err := keepAdmin(ctx, q, t, u); err != nil {
			return err
		}
		n, err := q.DeleteUser(ctx, queries.DeleteUserParams{TenantID: t.ID.UUID(), ID: id})
		if err != nil {
			return err
		}
		if n == 0 {
			return problem.Errorf(problem.NotFound, "no such user")
		}
		if err := s.cfg.Authorizer.ForgetUser(ctx, q, t, id); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "user.delete", Target: "user:" + id.String(), Outcome: Success, Meta: meta,
		})
	})
	if err != nil {
		return err
	}
	s.cfg.Authorizer.Flush(ctx, t)
	return nil
}

// UserSessions lists one of tenant t's users' active sessions. Admins only.
func (s *Service) UserSessions(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) ([]Session, error) {
	var rows []queries.AppSession
	err := s.AdminTx(ctx, t, p, "session.list", meta, func(q *queries.Queries) (err error) {
		if _, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return queries.NotFound(err, "no such user")
		}
		rows, err = q.ListUserSessions(ctx, queries.ListUserSessionsParams{TenantID: t.ID.UUID(), UserID: id})
		return err
	})
	if err != nil {
		return nil, err
	}
	return sessionsFromRows(rows, p.Session), nil
}

// RevokeUserSession ends one session of one of tenant t's users. Admins
// only. Returns NotFound if that user has no such active session.
func (s *Service) RevokeUserSession(ctx context.Context, t *tenancy.Tenant, p *Principal, user, session uuid.UUID, meta Meta) error {
	return s.AdminTx(ctx, t, p, "session.revoke", meta, func(q *queries.Queries) error {
		if _, err := s.onUser(ctx, q, t, p, user); err != nil {
			if problem.CodeOf(err) == problem.NotFound {
				return problem.Errorf(problem.NotFound, "no such session")
			}
			return err
		}
		reason := "ended by an admin"
		n, err := q.RevokeSession(ctx, queries.RevokeSessionParams{TenantID: t.ID.UUID(), ID: session, UserID: user, RevokedReason: &reason})
		if err != nil {
			return err
		}
		if n == 0 {
			return problem.Errorf(problem.NotFound, "no such session")
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Actor: p.User, Action: "session.revoke", Target: "session:" + session.String(), Outcome: Success, Meta: meta,
			Details: map[string]string{"reason": reason, "user": user.String()},
		})
	})
}

// AuditFilter narrows an audit listing.
type AuditFilter struct {
	Actor        *uuid.UUID
	Action       string
	Since, Until time.Time // zero: unbounded
	Before       int64     // cursor: events before this seq; 0 for the newest
	Limit        int
}

// AuditPage is a page of audit events, newest first, and the cursor of
// the next (older) page; 0 at the end.
type AuditPage struct {
	Events []AuditRecord `json:"events"`
	Next   int64         `json:"next,omitempty"`
}

// ListAudit returns a page of tenant t's audit trail. Admins only.
func (s *Service) ListAudit(ctx context.Context, t *tenancy.Tenant, p *Principal, f AuditFilter, meta Meta) (*AuditPage, error) {
	if f.Limit <= 0 || f.Limit > 500 {
		return nil, problem.InvalidField("limit", "must be between 1 and 500")
	}
	if f.Before <= 0 {
		f.Before = math.MaxInt64
	}
	if f.Until.IsZero() {
		f.Until = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if !f.Until.After(f.Since) {
		return nil, problem.InvalidField("until", "must be after since")
	}
	if len(f.Action) > 100 {
		return nil, problem.InvalidField("action", "must be at most 100 characters")
	}
	page := &AuditPage{Events: []AuditRecord{}}
	err := s.AdminTx(ctx, t, p, "audit.list", meta, func(q *queries.Queries) error {
		rows, err := q.ListAuditPage(ctx, queries.ListAuditPageParams{
			TenantID: t.ID.UUID(), Before: f.Before, Actor: f.Actor, Action: f.Action,
			Since: f.Since, Until: f.Until, PageSize: int32(f.Limit + 1),
		})
		if err != nil {
			return err
		}
		for i, r := range rows {
			if i == f.Limit {
				page.Next = rows[i-1].Seq
				break
			}
			rec, err := exportRecord(r)
			if err != nil {
				return err
			}
			page.Events = append(page.Events, rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return page, nil
}

func sessionsFromRows(rows []queries.AppSession, current uuid.UUID) []Session {
	out := make([]Session, len(rows))
	for i, r := range rows {
		out[i] = Session{ID: r.ID, Current: r.ID == current, CreatedAt: r.CreatedAt, LastSeenAt: r.LastSeenAt, ExpiresAt: r.ExpiresAt, IP: r.Ip}
		if r.UserAgent != nil {
			out[i].UserAgent = *r.UserAgent
		}
	}
	return out
}

func displayName(s string) (string, error) {
	name := strings.TrimSpace(s)
	if utf8.RuneCountInString(name) > 200 || !utf8.ValidString(name) {
		return "", problem.InvalidField("display_name", "must be at most 200 characters")
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return "", problem.InvalidField("display_name", "must not contain control characters")
	}
	return name, nil
}

// SetRole gives the account with email in tenant t the role, on a
// platform operator's authority (the first admin of a tenant, or a
// tenant that lost its admins). Audited with no actor. Returns NotFound
// if t has no such account, Invalid for a bad email or role.
func (s *Service) SetRole(ctx context.Context, t *tenancy.Tenant, email, role string) (*User, error) {
	e, err := NormalizeEmail(email)
	if err != nil {
		return nil, err
	}
	if role != RoleMember && role != RoleAdmin {
		return nil, problem.InvalidField("role", "must be member or admin")
	}
	var u queries.AppUser
	err = s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		u, err = q.SetRoleByEmail(ctx, queries.SetRoleByEmailParams{TenantID: t.ID.UUID(), Email: e, Role: role})
		if err = queries.NotFound(err, "no account with this email"); err != nil {
			return err
		}
		if role == RoleAdmin && u.EmailVerifiedAt == nil {
			return errUnconfirmedAdmin
		}
		if err := s.cfg.Authorizer.SetAdmin(ctx, q, t, u.ID, role == RoleAdmin); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), Event{
			Action: "user.role", Target: "user:" + u.ID.String(), Outcome: Success,
			Details: map[string]string{"role": role, "by": "operator"},
		})
	})
	if err != nil {
		return nil, err
	}
	s.cfg.Authorizer.Flush(ctx, t)
	return userFromRow(u), nil
}
