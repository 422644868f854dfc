package rebac

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// TenantObject is the local id of the tenant object of every tenant
// (whose full id is "<tenant id>|tenant").
const TenantObject = "tenant"

// Tenant permissions that roles may carry.
var TenantPermissions = []string{"manage_users", "manage_roles", "view_audit", "manage_apps"}

// Service is Gatehouse's authorization: tenant admins' groups and roles,
// kept in Postgres (what admins see) and mirrored to SpiceDB through the
// outbox, and the checks made against SpiceDB.
type Service struct {
	db     *tenancy.DB
	client *Client
	relay  *Relay
	log    *slog.Logger
}

// NewService returns the authorization service. Without a client and a
// relay (operators' commands away from SpiceDB) it only records changes,
// which the servers' relays deliver, and every check is Unavailable.
func NewService(db *tenancy.DB, client *Client, relay *Relay, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, client: client, relay: relay, log: log}
}

// Allowed reports whether user holds permission on the object
// objectType:objectID of tenant t (the tenant itself when both are
// empty), seeing every change made so far.
// On a group, whoever manages the tenant's users is allowed even when the
// group does not exist, so that they learn it does not. Returns
// Unavailable (and false) when SpiceDB cannot answer: never allows by
// default.
func (s *Service) Allowed(ctx context.Context, t *tenancy.Tenant, user uuid.UUID, objectType, objectID, permission string) (bool, error) {
	if objectType == "" && objectID == "" {
		return s.SubjectAllowed(ctx, t, userSubject(user), permission)
	}
	if s.client == nil {
		return false, problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	at, err := s.relay.Token(ctx, t)
	if err != nil {
		return false, err
	}
	items := []CheckItem{{Subject: userSubject(user), Permission: permission, Resource: Ref{Type: objectType, ID: objectID}}}
	if objectType == "group" {
		items = append(items, CheckItem{Subject: userSubject(user), Permission: "manage_users", Resource: tenantRef()})
	}
	allowed, _, err := s.CheckBulk(ctx, t, items, at)
	return err == nil && slices.Contains(allowed, true), err
}

// SubjectAllowed reports whether subject (a user or a machine app) holds
// permission on tenant t, seeing every change made so far.
func (s *Service) SubjectAllowed(ctx context.Context, t *tenancy.Tenant, subject SubjectRef, permission string) (bool, error) {
	if s.client == nil {
		return false, problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	at, err := s.relay.Token(ctx, t)
	if err != nil {
		return false, err
	}
	ok, _, err := s.client.Check(ctx, t.ID, subject, permission, tenantRef(), at)
	return ok && err == nil, err
}

func tenantRef() Ref { return Ref{Type: "tenant", ID: TenantObject} }

func userSubject(id uuid.UUID) SubjectRef { return SubjectRef{Ref: Ref{Type: "user", ID: id.String()}} }

func appSubject(id uuid.UUID) SubjectRef { return SubjectRef{Ref: Ref{Type: "app", ID: id.String()}} }

// AdminPermission is the tenant permission of its admins: the admin
// relation, unless the account is disabled.
const AdminPermission = "administer"

// SetDisabled records in q's transaction that user is, or is no longer,
// disabled: while disabled, nothing of tenant t grants them anything.
// Call Flush after the commit.
func (s *Service) SetDisabled(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, disabled bool) error {
	op := Delete
	if disabled {
		op = Touch
	}
	return Enqueue(ctx, q, t.ID, op, Relationship{Resource: tenantRef(), Relation: "disabled", Subject: userSubject(user)})
}

// SetAdmin records in q's transaction that user is, or is no longer, an
// admin of tenant t. Call Flush after the commit.
func (s *Service) SetAdmin(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, admin bool) error {
	op := Delete
	if admin {
		op = Touch
	}
	return Enqueue(ctx, q, t.ID, op, Relationship{Resource: tenantRef(), Relation: "admin", Subject: userSubject(user)})
}

// Token returns the consistency token checks of tenant t must be at least
// as fresh as (Relay.Token). Returns Unavailable when SpiceDB cannot be
// reached.
func (s *Service) Token(ctx context.Context, t *tenancy.Tenant) (ZedToken, error) {
	if s.client == nil {
		return "", problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	return s.relay.Token(ctx, t)
}

// Flush pushes tenant t's waiting changes to SpiceDB now, so that the
// next check sees them; when SpiceDB is down they wait for the relay, and
// checks deny until then.
func (s *Service) Flush(ctx context.Context, t *tenancy.Tenant) {
	if s.relay == nil {
		return
	}
	if _, err := s.relay.Deliver(ctx, t); err != nil {
		s.log.Warn("rebac: changes wait for SpiceDB", "tenant", t.Slug, "err", err)
	}
}

// ForgetApp removes, in q's transaction, the role assignments of a
// deleted machine app of tenant t. Call Flush after the commit.
func (s *Service) ForgetApp(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, app uuid.UUID) error {
	roles, err := q.AssignmentsOf(ctx, queries.AssignmentsOfParams{TenantID: t.ID.UUID(), SubjectType: "app", SubjectID: app})
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := s.unassign(ctx, q, t, r.ID, "app", app); err != nil {
			return err
		}
	}
	return nil
}

// ForgetUser removes, in q's transaction, everything that grants user
// anything in tenant t (admin rights, group memberships, role
// assignments, and whatever the apps granted them on their resources),
// for a deleted account. Call Flush after the commit.
func (s *Service) ForgetUser(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID) error {
	if err := s.SetAdmin(ctx, q, t, user, false); err != nil {
		return err
	}
	if err := s.SetDisabled(ctx, q, t, user, false); err != nil {
		return err
	}
	if err := Enqueue(ctx, q, t.ID, Delete, Relationship{Resource: tenantRef(), Relation: "member", Subject: userSubject(user)}); err != nil {
		return err
	}
	groups, err := q.GroupsContaining(ctx, queries.GroupsContainingParams{TenantID: t.ID.UUID(), MemberType: "user", MemberID: user})
	if err != nil {
		return err
	}
	for _, g := range groups {
		if err := s.removeMember(ctx, q, t, g.GroupID, "user", user); err != nil {
			return err
		}
	}
	roles, err := q.AssignmentsOf(ctx, queries.AssignmentsOfParams{TenantID: t.ID.UUID(), SubjectType: "user", SubjectID: user})
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := s.unassign(ctx, q, t, r.ID, "user", user); err != nil {
			return err
		}
	}
	return EnqueueForget(ctx, q, t.ID, userSubject(user))
}

// Giver is what the author of a change holds in a tenant. No change
// gives anyone, the author included, a permission its author does not
// hold; admins hold every one.
type Giver struct {
	Admin bool
	Holds map[string]bool // tenant permissions held (TenantPermissions)
}

// Holds returns what user holds in tenant t as Postgres records it, in
// q's transaction: every permission if they are an active admin, else
// those of the roles assigned to them directly or through any group they
// are in. SpiceDB mirrors the same rows; reading them in the change's own
// transaction (which admin changes of a tenant take one at a time, behind
// its audit chain) leaves no gap between what is checked and what is
// changed. A disabled account holds nothing, unless asIfEnabled.
func (s *Service) Holds(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, asIfEnabled bool) (Giver, error) {
	u, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: user})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && u.Status != "active" && !asIfEnabled) {
		return Giver{Holds: map[string]bool{}}, nil
	}
	if err != nil {
		return Giver{}, err
	}
	if u.Role == identity.RoleAdmin {
		return Giver{Admin: true}, nil
	}
	_, parents, err := groupGraph(ctx, q, t)
	if err != nil {
		return Giver{}, err
	}
	direct, err := q.GroupsContaining(ctx, queries.GroupsContainingParams{TenantID: t.ID.UUID(), MemberType: "user", MemberID: user})
	if err != nil {
		return Giver{}, err
	}
	subjects := []Member{{Type: "user", ID: user}}
	in := map[uuid.UUID]bool{}
	for _, d := range direct {
		for g := range reach(d.GroupID, parents) {
			if !in[g] {
				in[g] = true
				subjects = append(subjects, Member{Type: "group", ID: g})
			}
		}
	}
	g := Giver{Holds: map[string]bool{}}
	for _, m := range subjects {
		roles, err := q.AssignmentsOf(ctx, queries.AssignmentsOfParams{TenantID: t.ID.UUID(), SubjectType: m.Type, SubjectID: m.ID})
		if err != nil {
			return Giver{}, err
		}
		for _, r := range roles {
			for _, p := range r.Permissions {
				g.Holds[p] = true
			}
		}
	}
	return g, nil
}

// MayRestore refuses, in q's transaction, to enable user again on the
// authority of by when that would give back a permission by does not
// hold (enabling restores every right the account had). Returns Forbidden.
func (s *Service) MayRestore(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, by, user uuid.UUID) error {
	giver, err := s.Holds(ctx, q, t, by, false)
	if err != nil {
		return err
	}
	target, err := s.Holds(ctx, q, t, user, true)
	if err != nil {
		return err
	}
	if target.Admin && !giver.Admin {
		return problem.Errorf(problem.Forbidden, "only admins may enable an admin")
	}
	var perms []string
	for p, ok := range target.Holds {
		if ok {
			perms = append(perms, p)
		}
	}
	slices.Sort(perms)
	return giver.mayGive(perms)
}

// mayGive refuses permissions the giver does not hold.
func (g Giver) mayGive(perms []string) error {
	if g.Admin {
		return nil
	}
	for _, p := range perms {
		if !g.Holds[p] {
			return problem.Errorf(problem.Forbidden, "you cannot give the %s permission: you do not hold it", p)
		}
	}
	return nil
}

// managing reports whether perms hold a manage_* permission: rights over
// other accounts, which only confirmed addresses may hold.
func managing(perms []string) bool {
	return slices.ContainsFunc(perms, func(p string) bool { return strings.HasPrefix(p, "manage_") })
}

// carried returns the tenant permissions that members of group id gain:
// those of the roles assigned to it or to any group containing it.
func (s *Service) carried(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID) ([]string, error) {
	_, parents, err := groupGraph(ctx, q, t)
	if err != nil {
		return nil, err
	}
	var perms []string
	for g := range reach(id, parents) {
		roles, err := q.AssignmentsOf(ctx, queries.AssignmentsOfParams{TenantID: t.ID.UUID(), SubjectType: "group", SubjectID: g})
		if err != nil {
			return nil, err
		}
		for _, r := range roles {
			perms = append(perms, r.Permissions...)
		}
	}
	slices.Sort(perms)
	return slices.Compact(perms), nil
}

// groupGraph returns tenant t's groups that contain groups: the groups
// each contains (children) and the groups each is in (parents).
func groupGraph(ctx context.Context, q *queries.Queries, t *tenancy.Tenant) (children, parents map[uuid.UUID][]uuid.UUID, err error) {
	edges, err := q.GroupMembershipsOfGroups(ctx, t.ID.UUID())
	if err != nil {
		return nil, nil, err
	}
	children, parents = map[uuid.UUID][]uuid.UUID{}, map[uuid.UUID][]uuid.UUID{}
	for _, e := range edges {
		children[e.GroupID] = append(children[e.GroupID], e.MemberID)
		parents[e.MemberID] = append(parents[e.MemberID], e.GroupID)
	}
	return children, parents, nil
}

// reach returns from and every node reachable from it along next.
func reach(from uuid.UUID, next map[uuid.UUID][]uuid.UUID) map[uuid.UUID]bool {
	seen := map[uuid.UUID]bool{from: true}
	queue := []uuid.UUID{from}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, m := range next[n] {
			if !seen[m] {
				seen[m] = true
				queue = append(queue, m)
			}
		}
	}
	return seen
}

// requireConfirmed refuses when an account that m stands for (the user,
// or every user in the group and the groups it contains) has an address
// its owner never confirmed. Returns Conflict.
func (s *Service) requireConfirmed(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, m Member) error {
	users := []uuid.UUID{m.ID}
	if m.Type == "group" {
		children, _, err := groupGraph(ctx, q, t)
		if err != nil {
			return err
		}
		users = nil
		for g := range reach(m.ID, children) {
			members, err := q.ListGroupMembers(ctx, queries.ListGroupMembersParams{TenantID: t.ID.UUID(), GroupID: g})
			if err != nil {
				return err
			}
			for _, mm := range members {
				if mm.MemberType == "user" {
					users = append(users, mm.MemberID)
				}
			}
		}
	}
	for _, id := range users {
		u, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: id})
		if err != nil {
			return queries.NotFound(err, "no such user")
		}
		if u.EmailVerifiedAt == nil {
			return problem.Errorf(problem.Conflict,
				"the email address of %s is not confirmed: it cannot hold a manage_ permission until its owner confirms it", u.Email)
		}
	}
	return nil
}

// Group is a group as admins see it.
type Group struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
}

// Member is a member of a group: a user, or a group whose members belong.
type Member struct {
	Type    string    `json:"type"` // user or group
	ID      uuid.UUID `json:"id"`
	Manager bool      `json:"manager,omitempty"`
}

// Role is a custom role as admins see it.
type Role struct {
	ID          uuid.UUID `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Permissions []string  `json:"permissions"`
}

func groupFromRow(r queries.AppGroup) *Group {
	return &Group{ID: r.ID, Name: r.Name, Description: r.Description}
}

func roleFromRow(r queries.AppRole) *Role {
	return &Role{ID: r.ID, Name: r.Name, Description: r.Description, Permissions: r.Permissions}
}

// memberSubject is the SpiceDB subject a member stands for.
func memberSubject(typ string, id uuid.UUID) SubjectRef {
	switch typ {
	case "group":
		return SubjectRef{Ref: Ref{Type: "group", ID: id.String()}, Relation: "member"}
	case "app":
		return SubjectRef{Ref: Ref{Type: "app", ID: id.String()}}
	}
	return userSubject(id)
}

// createGroup creates a group in q's transaction. Returns Invalid for a
// bad name or description, Conflict if the name is taken.
func (s *Service) createGroup(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, name, description string) (*Group, error) {
	if err := checkName("name", name, 100); err != nil {
		return nil, err
	}
	if len([]rune(description)) > 500 {
		return nil, problem.InvalidField("description", "must be at most 500 characters")
	}
	row, err := q.CreateGroup(ctx, queries.CreateGroupParams{TenantID: t.ID.UUID(), Name: name, Description: description})
	if queries.IsUniqueViolation(err) {
		return nil, problem.Errorf(problem.Conflict, "a group named %q exists", name)
	}
	if err != nil {
		return nil, err
	}
	if err := Enqueue(ctx, q, t.ID, Touch, Relationship{Resource: Ref{Type: "group", ID: row.ID.String()}, Relation: "tenant", Subject: SubjectRef{Ref: tenantRef()}}); err != nil {
		return nil, err
	}
	return groupFromRow(row), nil
}

// deleteGroup deletes a group and every relationship it took part in.
// Returns NotFound.
func (s *Service) deleteGroup(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID) error {
	members, err := q.ListGroupMembers(ctx, queries.ListGroupMembersParams{TenantID: t.ID.UUID(), GroupID: id})
	if err != nil {
		return err
	}
	for _, m := range members {
		if err := s.removeMember(ctx, q, t, id, m.MemberType, m.MemberID); err != nil {
			return err
		}
	}
	// As a member of other groups, and as an assignee of roles.
	if err := s.ForgetGroup(ctx, q, t, id); err != nil {
		return err
	}
	n, err := q.DeleteGroup(ctx, queries.DeleteGroupParams{TenantID: t.ID.UUID(), ID: id})
	if err != nil {
		return err
	}
	if n == 0 {
		return problem.Errorf(problem.NotFound, "no such group")
	}
	return Enqueue(ctx, q, t.ID, Delete, Relationship{Resource: Ref{Type: "group", ID: id.String()}, Relation: "tenant", Subject: SubjectRef{Ref: tenantRef()}})
}

// ForgetGroup removes group id from the groups and roles it belongs to.
func (s *Service) ForgetGroup(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID) error {
	parents, err := q.GroupsContaining(ctx, queries.GroupsContainingParams{TenantID: t.ID.UUID(), MemberType: "group", MemberID: id})
	if err != nil {
		return err
	}
	for _, p := range parents {
		if err := s.removeMember(ctx, q, t, p.GroupID, "group", id); err != nil {
			return err
		}
	}
	roles, err := q.AssignmentsOf(ctx, queries.AssignmentsOfParams{TenantID: t.ID.UUID(), SubjectType: "group", SubjectID: id})
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := s.unassign(ctx, q, t, r.ID, "group", id); err != nil {
			return err
		}
	}
	return nil
}

// addMember makes a user or a group a member of group id (a user may
// also be its manager), on the authority of g. Returns NotFound for an
// unknown group, Invalid for a bad member type or a group that would
// contain itself, Forbidden if the group carries a permission g does not
// hold, Conflict if it carries a manage_ permission and the member is
// (or contains) an account whose address is not confirmed.
func (s *Service) addMember(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, g Giver, id uuid.UUID, m Member) error {
	if err := q.LockGroupGraph(ctx, t.ID.UUID()); err != nil {
		return err
	}
	if _, err := q.GetGroup(ctx, queries.GetGroupParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
		return queries.NotFound(err, "no such group")
	}
	switch m.Type {
	case "user":
		if _, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: m.ID}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return problem.InvalidField("id", "is not a user of this tenant")
			}
			return err
		}
	case "group":
		if m.Manager {
			return problem.InvalidField("manager", "only users manage groups")
		}
		if _, err := q.GetGroup(ctx, queries.GetGroupParams{TenantID: t.ID.UUID(), ID: m.ID}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return problem.InvalidField("id", "is not a group of this tenant")
			}
			return err
		}
		cycle, err := s.contains(ctx, q, t, m.ID, id)
		if err != nil {
			return err
		}
		if cycle {
			return problem.InvalidField("id", "would make the group contain itself")
		}
	default:
		return problem.InvalidField("type", "must be user or group")
	}
	perms, err := s.carried(ctx, q, t, id)
	if err != nil {
		return err
	}
	if err := g.mayGive(perms); err != nil {
		return err
	}
	if managing(perms) {
		if err := s.requireConfirmed(ctx, q, t, m); err != nil {
			return err
		}
	}
	if _, err := q.AddGroupMember(ctx, queries.AddGroupMemberParams{
		TenantID: t.ID.UUID(), GroupID: id, MemberType: m.Type, MemberID: m.ID, Manager: m.Manager,
	}); err != nil {
		return err
	}
	group := Ref{Type: "group", ID: id.String()}
	if err := Enqueue(ctx, q, t.ID, Touch, Relationship{Resource: group, Relation: "direct_member", Subject: memberSubject(m.Type, m.ID)}); err != nil {
		return err
	}
	op := Delete
	if m.Manager {
		op = Touch
	}
	if m.Type == "user" {
		return Enqueue(ctx, q, t.ID, op, Relationship{Resource: group, Relation: "manager", Subject: userSubject(m.ID)})
	}
	return nil
}

// contains reports whether group outer contains group inner, directly or
// through nested groups (Postgres, the source of truth, decides).
func (s *Service) contains(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, outer, inner uuid.UUID) (bool, error) {
	children, _, err := groupGraph(ctx, q, t)
	if err != nil {
		return false, err
	}
	return reach(outer, children)[inner], nil
}

// removeMember removes a member from group id. Returns NotFound if it
// is not a member.
func (s *Service) removeMember(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID, typ string, member uuid.UUID) error {
	if _, err := q.RemoveGroupMember(ctx, queries.RemoveGroupMemberParams{TenantID: t.ID.UUID(), GroupID: id, MemberType: typ, MemberID: member}); err != nil {
		return queries.NotFound(err, "no such member")
	}
	group := Ref{Type: "group", ID: id.String()}
	if err := Enqueue(ctx, q, t.ID, Delete, Relationship{Resource: group, Relation: "direct_member", Subject: memberSubject(typ, member)}); err != nil {
		return err
	}
	if typ == "user" {
		return Enqueue(ctx, q, t.ID, Delete, Relationship{Resource: group, Relation: "manager", Subject: userSubject(member)})
	}
	return nil
}

// createRole creates a custom role carrying permissions (of
// TenantPermissions), on the authority of g. Returns Invalid, Forbidden
// for a permission g does not hold, or Conflict if the name is taken.
func (s *Service) createRole(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, g Giver, name, description string, permissions []string) (*Role, error) {
	if !roleName.MatchString(name) {
		return nil, problem.InvalidField("name", "must be 1 to 63 of a-z, 0-9 and -, starting with a letter or digit (e.g. billing-admin)")
	}
	if len([]rune(description)) > 500 {
		return nil, problem.InvalidField("description", "must be at most 500 characters")
	}
	perms, err := checkPermissions(permissions)
	if err != nil {
		return nil, err
	}
	if err := g.mayGive(perms); err != nil {
		return nil, err
	}
	row, err := q.CreateRole(ctx, queries.CreateRoleParams{TenantID: t.ID.UUID(), Name: name, Description: description, Permissions: perms})
	if queries.IsUniqueViolation(err) {
		return nil, problem.Errorf(problem.Conflict, "a role named %q exists", name)
	}
	if err != nil {
		return nil, err
	}
	role := Ref{Type: "role", ID: row.ID.String()}
	for _, r := range []Relationship{
		{Resource: role, Relation: "tenant", Subject: SubjectRef{Ref: tenantRef()}},
		{Resource: tenantRef(), Relation: "role", Subject: SubjectRef{Ref: role}},
	} {
		if err := Enqueue(ctx, q, t.ID, Touch, r); err != nil {
			return nil, err
		}
	}
	if err := s.setRolePermissions(ctx, q, t, row.ID, nil, perms); err != nil {
		return nil, err
	}
	return roleFromRow(row), nil
}

// updateRole changes a role's description or permission set, on the
// authority of g. Returns NotFound, Invalid, Forbidden for an added
// permission g does not hold, or Conflict when an added manage_
// permission would reach an account whose address is not confirmed.
func (s *Service) updateRole(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, g Giver, id uuid.UUID, description *string, permissions []string) (*Role, error) {
	old, err := q.GetRole(ctx, queries.GetRoleParams{TenantID: t.ID.UUID(), ID: id})
	if err != nil {
		return nil, queries.NotFound(err, "no such role")
	}
	if description != nil && len([]rune(*description)) > 500 {
		return nil, problem.InvalidField("description", "must be at most 500 characters")
	}
	var perms []string
	if permissions != nil {
		if perms, err = checkPermissions(permissions); err != nil {
			return nil, err
		}
		added := slices.DeleteFunc(slices.Clone(perms), func(p string) bool { return slices.Contains(old.Permissions, p) })
		if err := g.mayGive(added); err != nil {
			return nil, err
		}
		if managing(added) {
			assigned, err := q.ListRoleAssignments(ctx, queries.ListRoleAssignmentsParams{TenantID: t.ID.UUID(), RoleID: id})
			if err != nil {
				return nil, err
			}
			for _, a := range assigned {
				if err := s.requireConfirmed(ctx, q, t, Member{Type: a.SubjectType, ID: a.SubjectID}); err != nil {
					return nil, err
				}
			}
		}
	}
	row, err := q.UpdateRole(ctx, queries.UpdateRoleParams{TenantID: t.ID.UUID(), ID: id, Description: description, Permissions: perms})
	if err != nil {
		return nil, queries.NotFound(err, "no such role")
	}
	if permissions != nil {
		if err := s.setRolePermissions(ctx, q, t, id, old.Permissions, perms); err != nil {
			return nil, err
		}
	}
	return roleFromRow(row), nil
}

// setRolePermissions mirrors a role's permission set from was to now.
func (s *Service) setRolePermissions(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID, was, now []string) error {
	has := map[string]bool{}
	for _, p := range now {
		has[p] = true
	}
	had := map[string]bool{}
	for _, p := range was {
		had[p] = true
	}
	for _, p := range TenantPermissions {
		if has[p] == had[p] {
			continue
		}
		op := Delete
		if has[p] {
			op = Touch
		}
		for _, every := range grantees {
			if err := Enqueue(ctx, q, t.ID, op, Relationship{Resource: Ref{Type: "role", ID: id.String()}, Relation: p, Subject: every}); err != nil {
				return err
			}
		}
	}
	return nil
}

// grantees are the wildcards a role's permission relations hold: its
// assignees, users and machine apps alike, get what it carries.
var grantees = []SubjectRef{{Ref: Ref{Type: "user", ID: "*"}}, {Ref: Ref{Type: "app", ID: "*"}}}

// deleteRole deletes a role and its assignments. Returns NotFound.
func (s *Service) deleteRole(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID) error {
	assigned, err := q.ListRoleAssignments(ctx, queries.ListRoleAssignmentsParams{TenantID: t.ID.UUID(), RoleID: id})
	if err != nil {
		return err
	}
	for _, a := range assigned {
		if err := s.unassign(ctx, q, t, id, a.SubjectType, a.SubjectID); err != nil {
			return err
		}
	}
	row, err := q.DeleteRole(ctx, queries.DeleteRoleParams{TenantID: t.ID.UUID(), ID: id})
	if err != nil {
		return queries.NotFound(err, "no such role")
	}
	role := Ref{Type: "role", ID: id.String()}
	if err := s.setRolePermissions(ctx, q, t, id, row.Permissions, nil); err != nil {
		return err
	}
	for _, r := range []Relationship{
		{Resource: role, Relation: "tenant", Subject: SubjectRef{Ref: tenantRef()}},
		{Resource: tenantRef(), Relation: "role", Subject: SubjectRef{Ref: role}},
	} {
		if err := Enqueue(ctx, q, t.ID, Delete, r); err != nil {
			return err
		}
	}
	return nil
}

// assign assigns role id to a user or group, on the authority of g.
// Returns NotFound for an unknown role, Invalid for an unknown subject,
// Forbidden if the role carries a permission g does not hold, Conflict if
// it carries a manage_ permission and the subject is (or contains) an
// account whose address is not confirmed.
func (s *Service) assign(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, g Giver, id uuid.UUID, m Member) error {
	role, err := q.GetRole(ctx, queries.GetRoleParams{TenantID: t.ID.UUID(), ID: id})
	if err != nil {
		return queries.NotFound(err, "no such role")
	}
	if err := g.mayGive(role.Permissions); err != nil {
		return err
	}
	switch m.Type {
	case "user":
		if _, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: m.ID}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return problem.InvalidField("id", "is not a user of this tenant")
			}
			return err
		}
	case "group":
		if _, err := q.GetGroup(ctx, queries.GetGroupParams{TenantID: t.ID.UUID(), ID: m.ID}); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return problem.InvalidField("id", "is not a group of this tenant")
			}
			return err
		}
	case "app":
		a, err := q.GetApp(ctx, queries.GetAppParams{TenantID: t.ID.UUID(), ID: m.ID})
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && a.Kind != "machine") {
			return problem.InvalidField("id", "is not a machine app of this tenant (only machine apps act as themselves)")
		}
		if err != nil {
			return err
		}
	default:
		return problem.InvalidField("type", "must be user, group or app")
	}
	if managing(role.Permissions) && m.Type != "app" {
		if err := s.requireConfirmed(ctx, q, t, m); err != nil {
			return err
		}
	}
	if _, err := q.AssignRole(ctx, queries.AssignRoleParams{TenantID: t.ID.UUID(), RoleID: id, SubjectType: m.Type, SubjectID: m.ID}); err != nil {
		return err
	}
	return Enqueue(ctx, q, t.ID, Touch, Relationship{Resource: Ref{Type: "role", ID: id.String()}, Relation: "assignee", Subject: memberSubject(m.Type, m.ID)})
}

// unassign takes role id from a user or group. Returns NotFound if it
// was not assigned.
func (s *Service) unassign(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, id uuid.UUID, typ string, subject uuid.UUID) error {
	n, err := q.UnassignRole(ctx, queries.UnassignRoleParams{TenantID: t.ID.UUID(), RoleID: id, SubjectType: typ, SubjectID: subject})
	if err != nil {
		return err
	}
	if n == 0 {
		return problem.Errorf(problem.NotFound, "no such assignment")
	}
	return Enqueue(ctx, q, t.ID, Delete, Relationship{Resource: Ref{Type: "role", ID: id.String()}, Relation: "assignee", Subject: memberSubject(typ, subject)})
}

func checkPermissions(ps []string) ([]string, error) {
	known := map[string]bool{}
	for _, p := range TenantPermissions {
		known[p] = true
	}
	seen := map[string]bool{}
	out := []string{}
	for _, p := range ps {
		if !known[p] {
			return nil, problem.InvalidField("permissions", fmt.Sprintf("%q is not one of %v", p, TenantPermissions))
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

var roleName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

func checkName(field, v string, max int) error {
	n := utf8.RuneCountInString(v)
	if n == 0 || strings.TrimSpace(v) != v {
		return problem.InvalidField(field, "is required, without leading or trailing spaces")
	}
	if n > max || !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
		return problem.InvalidField(field, fmt.Sprintf("must be at most %d characters, without control characters", max))
	}
	return nil
}

// Grant says where a permission comes from: the admin role, or a custom
// role assigned directly or through groups (outermost last).
type Grant struct {
	Via     string   `json:"via"`            // admin or role
	Role    string   `json:"role,omitempty"` // the role's name
	Through []string `json:"through,omitempty"`
}

// Effective is one tenant permission of a user: whether SpiceDB allows
// it, and the grants Postgres records for it.
type Effective struct {
	Permission string  `json:"permission"`
	Allowed    bool    `json:"allowed"`
	GrantedBy  []Grant `json:"granted_by"`
}

// explain returns user's tenant permissions with what grants each. The
// grants come from Postgres (what admins see) in q's transaction; whether
// each is allowed is SpiceDB's answer at least as fresh as at (Token,
// taken before the transaction: it may need a connection of its own), so
// a drift between the two shows.
func (s *Service) explain(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, user uuid.UUID, at ZedToken) ([]Effective, error) {
	u, err := q.GetUser(ctx, queries.GetUserParams{TenantID: t.ID.UUID(), ID: user})
	if err != nil {
		return nil, queries.NotFound(err, "no such user")
	}
	// Every group the user belongs to, with the chain that leads there.
	_, parents, err := groupGraph(ctx, q, t)
	if err != nil {
		return nil, err
	}
	direct, err := q.GroupsContaining(ctx, queries.GroupsContainingParams{TenantID: t.ID.UUID(), MemberType: "user", MemberID: user})
	if err != nil {
		return nil, err
	}
	names := map[uuid.UUID]string{}
	groups, err := q.ListGroups(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		names[g.ID] = g.Name
	}
	chains := map[uuid.UUID][]string{}
	var queue []uuid.UUID
	for _, d := range direct {
		if _, seen := chains[d.GroupID]; !seen {
			chains[d.GroupID] = []string{"group:" + names[d.GroupID]}
			queue = append(queue, d.GroupID)
		}
	}
	for len(queue) > 0 {
		g := queue[0]
		queue = queue[1:]
		for _, p := range parents[g] {
			if _, seen := chains[p]; !seen {
				chains[p] = append(append([]string{}, chains[g]...), "group:"+names[p])
				queue = append(queue, p)
			}
		}
	}
	grants := map[string][]Grant{}
	if u.Role == "admin" {
		for _, p := range append([]string{"admin"}, TenantPermissions...) {
			grants[p] = append(grants[p], Grant{Via: "admin"})
		}
	}
	addRoles := func(typ string, id uuid.UUID, through []string) error {
		roles, err := q.AssignmentsOf(ctx, queries.AssignmentsOfParams{TenantID: t.ID.UUID(), SubjectType: typ, SubjectID: id})
		for _, r := range roles {
			for _, p := range r.Permissions {
				grants[p] = append(grants[p], Grant{Via: "role", Role: r.Name, Through: through})
			}
		}
		return err
	}
	if err := addRoles("user", user, nil); err != nil {
		return nil, err
	}
	for g, chain := range chains {
		if err := addRoles("group", g, chain); err != nil {
			return nil, err
		}
	}
	perms := append([]string{"admin"}, TenantPermissions...)
	items := make([]CheckItem, len(perms))
	for i, p := range perms {
		if p == "admin" {
			p = AdminPermission // the admin relation, unless disabled
		}
		items[i] = CheckItem{Subject: userSubject(user), Permission: p, Resource: tenantRef()}
	}
	allowed, _, err := s.client.CheckBulk(ctx, t.ID, items, at)
	if err != nil {
		return nil, err
	}
	out := make([]Effective, len(perms))
	for i, p := range perms {
		out[i] = Effective{Permission: p, Allowed: allowed[i], GrantedBy: grants[p]}
		if out[i].GrantedBy == nil {
			out[i].GrantedBy = []Grant{}
		}
		slices.SortFunc(out[i].GrantedBy, func(a, b Grant) int { return strings.Compare(a.Via+a.Role, b.Via+b.Role) })
	}
	return out, nil
}
