package rebac

import (
	"context"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// The tenant admin API's operations on groups and roles. Each is one
// transaction of the tenant, opened by the caller's Guard once it has
// checked and audited the caller's permission; a change is audited in
// that same transaction, and pushed to SpiceDB once it commits, so that
// the next check sees it.

// Guard runs a caller's admin action in one transaction of a tenant
// (identity.Service, which keeps sessions and the audit trail): it
// checks that the caller's session stands and that they hold the
// permission the action needs, audits the decision, then runs fn.
// Returns Unauthorized if the session ended, Forbidden when the
// permission is missing, Unavailable when it cannot be checked.
type Guard interface {
	// AdminTx guards action by the tenant permission it needs.
	AdminTx(ctx context.Context, t *tenancy.Tenant, p *identity.Principal, action string, meta identity.Meta, fn func(q *queries.Queries) error) error
	// GuardedTx guards action by permission perm on the tenant's object
	// objectType:objectID.
	GuardedTx(ctx context.Context, t *tenancy.Tenant, p *identity.Principal, action, objectType, objectID, perm string, meta identity.Meta, fn func(q *queries.Queries) error) error
}

// Caller is who asks: the signed-in principal, the request's metadata
// for the audit trail, and the Guard that decides their admin actions.
type Caller struct {
	Guard     Guard
	Principal *identity.Principal
	Meta      identity.Meta
}

// adminTx runs fn as by's admin action on tenant t, guarded by the
// tenant permission action needs.
func (s *Service) adminTx(ctx context.Context, t *tenancy.Tenant, by Caller, action string, fn func(q *queries.Queries) error) error {
	return by.Guard.AdminTx(ctx, t, by.Principal, action, by.Meta, fn)
}

// groupTx is adminTx for an action on group id's membership, which the
// group's managers may take as well as the tenant's user managers.
func (s *Service) groupTx(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID, action string, fn func(q *queries.Queries) error) error {
	return by.Guard.GuardedTx(ctx, t, by.Principal, action, "group", id.String(), "manage", by.Meta, fn)
}

// flushed makes the relationship changes of an admin action take effect
// now if it committed (err is nil), and returns err.
func (s *Service) flushed(ctx context.Context, t *tenancy.Tenant, err error) error {
	if err == nil {
		s.Flush(ctx, t)
	}
	return err
}

// giver is what by holds, read in the change's own transaction: the
// bound of every right the change may give.
func (s *Service) giver(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, by Caller) (Giver, error) {
	return s.Holds(ctx, q, t, by.Principal.User, false)
}

// audit records by's change in the transaction that makes it.
func audit(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, by Caller, action, target string, details map[string]string) error {
	return identity.Audit(ctx, q, t, identity.Event{
		Actor: by.Principal.User, Action: action, Target: target, Outcome: identity.Success,
		Meta: by.Meta, Details: details,
	})
}

// ListGroups returns tenant t's groups, for one who manages its users.
// Returns the Guard's errors.
func (s *Service) ListGroups(ctx context.Context, t *tenancy.Tenant, by Caller) ([]*Group, error) {
	groups := []*Group{}
	err := s.adminTx(ctx, t, by, "group.list", func(q *queries.Queries) error {
		rows, err := q.ListGroups(ctx, t.ID.UUID())
		for _, r := range rows {
			groups = append(groups, groupFromRow(r))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return groups, nil
}

// CreateGroup creates a group in tenant t, for one who manages its
// users. Returns the Guard's errors, Invalid for a bad name or
// description, Conflict if the name is taken.
func (s *Service) CreateGroup(ctx context.Context, t *tenancy.Tenant, by Caller, name, description string) (*Group, error) {
	var g *Group
	err := s.adminTx(ctx, t, by, "group.create", func(q *queries.Queries) (err error) {
		if g, err = s.createGroup(ctx, q, t, name, description); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "group.create", "group:"+g.ID.String(), nil)
	})
	if err := s.flushed(ctx, t, err); err != nil {
		return nil, err
	}
	return g, nil
}

// GetGroup returns group id of tenant t, for one who manages its users.
// Returns the Guard's errors, or NotFound.
func (s *Service) GetGroup(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID) (*Group, error) {
	var g *Group
	err := s.adminTx(ctx, t, by, "group.get", func(q *queries.Queries) error {
		row, err := q.GetGroup(ctx, queries.GetGroupParams{TenantID: t.ID.UUID(), ID: id})
		if err != nil {
			return queries.NotFound(err, "no such group")
		}
		g = groupFromRow(row)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// DeleteGroup deletes group id of tenant t and every relationship it
// took part in, for one who manages its users. Returns the Guard's
// errors, or NotFound.
func (s *Service) DeleteGroup(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID) error {
	return s.flushed(ctx, t, s.adminTx(ctx, t, by, "group.delete", func(q *queries.Queries) error {
		if err := s.deleteGroup(ctx, q, t, id); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "group.delete", "group:"+id.String(), nil)
	}))
}

// ListMembers returns the direct members of group id of tenant t, for
// its managers and those who manage the tenant's users. Returns the
// Guard's errors, or NotFound.
func (s *Service) ListMembers(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID) ([]Member, error) {
	members := []Member{}
	err := s.groupTx(ctx, t, by, id, "group.members", func(q *queries.Queries) error {
		if _, err := q.GetGroup(ctx, queries.GetGroupParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return queries.NotFound(err, "no such group")
		}
		rows, err := q.ListGroupMembers(ctx, queries.ListGroupMembersParams{TenantID: t.ID.UUID(), GroupID: id})
		for _, r := range rows {
			members = append(members, Member{Type: r.MemberType, ID: r.MemberID, Manager: r.Manager})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return members, nil
}

// AddMember makes m a member of group id of tenant t (a user may also be
// its manager), for the group's managers and those who manage the
// tenant's users, on the authority of what by holds. Returns the Guard's
// errors, and those of addMember: NotFound, Invalid, Forbidden, Conflict.
func (s *Service) AddMember(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID, m Member) error {
	return s.flushed(ctx, t, s.groupTx(ctx, t, by, id, "group.add_member", func(q *queries.Queries) error {
		g, err := s.giver(ctx, q, t, by)
		if err != nil {
			return err
		}
		if err := s.addMember(ctx, q, t, g, id, m); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "group.add_member", "group:"+id.String(),
			map[string]string{"member": m.Type + ":" + m.ID.String(), "manager": boolWord(m.Manager)})
	}))
}

func boolWord(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// RemoveMember removes member, a user or a group (typ), from group id of
// tenant t, for the group's managers and those who manage the tenant's
// users. Returns the Guard's errors, or NotFound if it is not a member.
func (s *Service) RemoveMember(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID, typ string, member uuid.UUID) error {
	return s.flushed(ctx, t, s.groupTx(ctx, t, by, id, "group.remove_member", func(q *queries.Queries) error {
		if typ != "user" && typ != "group" && typ != "app" {
			return problem.Errorf(problem.NotFound, "no such member")
		}
		if err := s.removeMember(ctx, q, t, id, typ, member); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "group.remove_member", "group:"+id.String(), map[string]string{"member": typ + ":" + member.String()})
	}))
}

// ListRoles returns tenant t's custom roles, for one who manages its
// roles. Returns the Guard's errors.
func (s *Service) ListRoles(ctx context.Context, t *tenancy.Tenant, by Caller) ([]*Role, error) {
	roles := []*Role{}
	err := s.adminTx(ctx, t, by, "role.list", func(q *queries.Queries) error {
		rows, err := q.ListRoles(ctx, t.ID.UUID())
		for _, r := range rows {
			roles = append(roles, roleFromRow(r))
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return roles, nil
}

// CreateRole creates a custom role of tenant t carrying permissions (of
// TenantPermissions), for one who manages its roles, on the authority of
// what by holds. Returns the Guard's errors, Invalid, Forbidden for a
// permission by does not hold, or Conflict if the name is taken.
func (s *Service) CreateRole(ctx context.Context, t *tenancy.Tenant, by Caller, name, description string, permissions []string) (*Role, error) {
	var role *Role
	err := s.adminTx(ctx, t, by, "role.create", func(q *queries.Queries) error {
		g, err := s.giver(ctx, q, t, by)
		if err != nil {
			return err
		}
		if role, err = s.createRole(ctx, q, t, g, name, description, permissions); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "role.create", "role:"+role.ID.String(), map[string]string{"name": role.Name})
	})
	if err := s.flushed(ctx, t, err); err != nil {
		return nil, err
	}
	return role, nil
}

// GetRole returns role id of tenant t, for one who manages its roles.
// Returns the Guard's errors, or NotFound.
func (s *Service) GetRole(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID) (*Role, error) {
	var role *Role
	err := s.adminTx(ctx, t, by, "role.get", func(q *queries.Queries) error {
		row, err := q.GetRole(ctx, queries.GetRoleParams{TenantID: t.ID.UUID(), ID: id})
		if err != nil {
			return queries.NotFound(err, "no such role")
		}
		role = roleFromRow(row)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return role, nil
}

// UpdateRole changes the description or the permission set (whichever
// is not nil) of role id of tenant t, for one who manages its roles, on
// the authority of what by holds. Returns the Guard's errors, and those
// of updateRole: NotFound, Invalid, Forbidden, Conflict.
func (s *Service) UpdateRole(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID, description *string, permissions []string) (*Role, error) {
	var role *Role
	err := s.adminTx(ctx, t, by, "role.update", func(q *queries.Queries) error {
		g, err := s.giver(ctx, q, t, by)
		if err != nil {
			return err
		}
		if role, err = s.updateRole(ctx, q, t, g, id, description, permissions); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "role.update", "role:"+id.String(), nil)
	})
	if err := s.flushed(ctx, t, err); err != nil {
		return nil, err
	}
	return role, nil
}

// DeleteRole deletes role id of tenant t and its assignments, for one who
// manages its roles. Returns the Guard's errors, or NotFound.
func (s *Service) DeleteRole(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID) error {
	return s.flushed(ctx, t, s.adminTx(ctx, t, by, "role.delete", func(q *queries.Queries) error {
		if err := s.deleteRole(ctx, q, t, id); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "role.delete", "role:"+id.String(), nil)
	}))
}

// ListAssignments returns the users and groups role id of tenant t is
// assigned to, for one who manages its roles. Returns the Guard's
// errors, or NotFound.
func (s *Service) ListAssignments(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID) ([]Member, error) {
	out := []Member{}
	err := s.adminTx(ctx, t, by, "role.assignments", func(q *queries.Queries) error {
		if _, err := q.GetRole(ctx, queries.GetRoleParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return queries.NotFound(err, "no such role")
		}
		rows, err := q.ListRoleAssignments(ctx, queries.ListRoleAssignmentsParams{TenantID: t.ID.UUID(), RoleID: id})
		for _, r := range rows {
			out = append(out, Member{Type: r.SubjectType, ID: r.SubjectID})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Assign assigns role id of tenant t to m, a user or a group, for one
// who manages its roles, on the authority of what by holds. Returns the
// Guard's errors, and those of assign: NotFound, Invalid, Forbidden,
// Conflict.
func (s *Service) Assign(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID, m Member) error {
	return s.flushed(ctx, t, s.adminTx(ctx, t, by, "role.assign", func(q *queries.Queries) error {
		g, err := s.giver(ctx, q, t, by)
		if err != nil {
			return err
		}
		if err := s.assign(ctx, q, t, g, id, m); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "role.assign", "role:"+id.String(), map[string]string{"subject": m.Type + ":" + m.ID.String()})
	}))
}

// Unassign takes role id of tenant t from subject, a user or a group
// (typ), for one who manages its roles. Returns the Guard's errors, or
// NotFound if it was not assigned.
func (s *Service) Unassign(ctx context.Context, t *tenancy.Tenant, by Caller, id uuid.UUID, typ string, subject uuid.UUID) error {
	return s.flushed(ctx, t, s.adminTx(ctx, t, by, "role.unassign", func(q *queries.Queries) error {
		if typ != "user" && typ != "group" && typ != "app" {
			return problem.Errorf(problem.NotFound, "no such assignment")
		}
		if err := s.unassign(ctx, q, t, id, typ, subject); err != nil {
			return err
		}
		return audit(ctx, q, t, by, "role.unassign", "role:"+id.String(), map[string]string{"subject": typ + ":" + subject.String()})
	}))
}

// UserPermissions returns the tenant permissions of user of tenant t
// with what grants each (explain), for one who manages its users.
// Returns Unavailable when SpiceDB cannot be reached, the Guard's
// errors, or NotFound.
func (s *Service) UserPermissions(ctx context.Context, t *tenancy.Tenant, by Caller, user uuid.UUID) ([]Effective, error) {
	// Taken before the transaction: it may need a connection of its own.
	at, err := s.Token(ctx, t)
	if err != nil {
		return nil, err
	}
	var perms []Effective
	err = s.adminTx(ctx, t, by, "user.permissions", func(q *queries.Queries) (err error) {
		perms, err = s.explain(ctx, q, t, user, at)
		return err
	})
	if err != nil {
		return nil, err
	}
	return perms, nil
}
