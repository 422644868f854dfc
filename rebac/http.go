package rebac

import (
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// HTTP serves the tenant admin API for groups and roles. Every handler
// checks the caller's permission in SpiceDB and audits the decision
// (identity.Service.AdminTx), does its work in that one transaction, and
// pushes the relationship changes to SpiceDB before it answers, so the
// next check sees them.
type HTTP struct {
	authz       *Service
	accounts    *identity.Service
	grants      appGrants
	auditSample float64
	metrics     *Metrics
}

// HTTPOptions tune the check API.
type HTTPOptions struct {
	// AuditSample is the share (0 to 1) of check-API decisions written
	// to the audit trail.
	AuditSample float64
	// Metrics counts decisions; nil counts them unseen.
	Metrics *Metrics
}

// NewHTTP returns the admin and check APIs over authz, authenticating
// with accounts.
func NewHTTP(authz *Service, accounts *identity.Service, o HTTPOptions) *HTTP {
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &HTTP{authz: authz, accounts: accounts, auditSample: o.AuditSample, metrics: o.Metrics}
}

// Routes registers the endpoints on a router whose requests have their
// tenant resolved.
func (h *HTTP) Routes(r fiber.Router) {
	a := h.accounts.Admin(r)
	a.Get("/groups", h.listGroups)
	a.Post("/groups", h.createGroup)
	a.Get("/groups/:id", h.getGroup)
	a.Delete("/groups/:id", h.deleteGroup)
	a.Get("/groups/:id/members", h.listMembers)
	a.Post("/groups/:id/members", h.addMember)
	a.Delete("/groups/:id/members/:type/:member", h.removeMember)
	a.Get("/roles", h.listRoles)
	a.Post("/roles", h.createRole)
	a.Get("/roles/:id", h.getRole)
	a.Patch("/roles/:id", h.updateRole)
	a.Delete("/roles/:id", h.deleteRole)
	a.Get("/roles/:id/assignments", h.listAssignments)
	a.Post("/roles/:id/assignments", h.assign)
	a.Delete("/roles/:id/assignments/:type/:subject", h.unassign)
	a.Get("/users/:id/permissions", h.userPermissions)
	h.checkRoutes(r)
}

// tx runs fn as the admin action action of the request's caller, then
// makes its relationship changes take effect.
func (h *HTTP) tx(c *fiber.Ctx, action string, fn func(q *queries.Queries, t *tenancy.Tenant) error) error {
	return h.guardedTx(c, action, identity.Object{}, fn)
}

// groupTx is tx for an action on group id's membership, which the group's
// managers may take as well as the tenant's user managers.
func (h *HTTP) groupTx(c *fiber.Ctx, id uuid.UUID, action string, fn func(q *queries.Queries, t *tenancy.Tenant) error) error {
	return h.guardedTx(c, action, identity.Object{Type: "group", ID: id.String()}, fn)
}

// guardedTx runs fn as action, guarded by the permission action needs on
// the tenant, or by manage on object on.
func (h *HTTP) guardedTx(c *fiber.Ctx, action string, on identity.Object, fn func(q *queries.Queries, t *tenancy.Tenant) error) error {
	t := tenancy.Of(c)
	ctx, p, meta := c.UserContext(), identity.PrincipalOf(c), identity.MetaOf(c)
	run := func(q *queries.Queries) error { return fn(q, t) }
	var err error
	if on == (identity.Object{}) {
		err = h.accounts.AdminTx(ctx, t, p, action, meta, run)
	} else {
		err = h.accounts.GuardedTx(ctx, t, p, action, on, "manage", meta, run)
	}
	if err == nil && c.Method() != fiber.MethodGet {
		h.authz.Flush(ctx, t)
	}
	return err
}

// giver is what the request's caller holds, read in the change's own
// transaction: the bound of every right the change may give.
func (h *HTTP) giver(c *fiber.Ctx, q *queries.Queries, t *tenancy.Tenant) (Giver, error) {
	return h.authz.Holds(c.UserContext(), q, t, identity.PrincipalOf(c).User, false)
}

// audit records a change in the transaction that makes it.
func audit(c *fiber.Ctx, q *queries.Queries, t *tenancy.Tenant, action, target string, details map[string]string) error {
	return identity.Audit(c.UserContext(), q, t, identity.Event{
		Actor: identity.PrincipalOf(c).User, Action: action, Target: target, Outcome: identity.Success,
		Meta: identity.MetaOf(c), Details: details,
	})
}

func (h *HTTP) listGroups(c *fiber.Ctx) error {
	groups := []*Group{}
	err := h.tx(c, "group.list", func(q *queries.Queries, t *tenancy.Tenant) error {
		rows, err := q.ListGroups(c.UserContext(), t.ID.UUID())
		for _, r := range rows {
			groups = append(groups, groupFromRow(r))
		}
		return err
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(fiber.Map{"groups": groups})
}

type groupRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

func (h *HTTP) createGroup(c *fiber.Ctx) error {
	var req groupRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"name": req.Name}); err != nil {
		return err
	}
	var g *Group
	err := h.tx(c, "group.create", func(q *queries.Queries, t *tenancy.Tenant) (err error) {
		if g, err = h.authz.CreateGroup(c.UserContext(), q, t, req.Name, req.Description); err != nil {
			return err
		}
		return audit(c, q, t, "group.create", "group:"+g.ID.String(), nil)
	})
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(g)
}

func (h *HTTP) getGroup(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such group")
	if err != nil {
		return err
	}
	var g *Group
	err = h.tx(c, "group.get", func(q *queries.Queries, t *tenancy.Tenant) error {
		row, err := q.GetGroup(c.UserContext(), queries.GetGroupParams{TenantID: t.ID.UUID(), ID: id})
		if err != nil {
			return queries.NotFound(err, "no such group")
		}
		g = groupFromRow(row)
		return nil
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(g)
}

func (h *HTTP) deleteGroup(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such group")
	if err != nil {
		return err
	}
	err = h.tx(c, "group.delete", func(q *queries.Queries, t *tenancy.Tenant) error {
		if err := h.authz.DeleteGroup(c.UserContext(), q, t, id); err != nil {
			return err
		}
		return audit(c, q, t, "group.delete", "group:"+id.String(), nil)
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) listMembers(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such group")
	if err != nil {
		return err
	}
	members := []Member{}
	err = h.groupTx(c, id, "group.members", func(q *queries.Queries, t *tenancy.Tenant) error {
		if _, err := q.GetGroup(c.UserContext(), queries.GetGroupParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return queries.NotFound(err, "no such group")
		}
		rows, err := q.ListGroupMembers(c.UserContext(), queries.ListGroupMembersParams{TenantID: t.ID.UUID(), GroupID: id})
		for _, r := range rows {
			members = append(members, Member{Type: r.MemberType, ID: r.MemberID, Manager: r.Manager})
		}
		return err
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(fiber.Map{"members": members})
}

type memberRequest struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Manager bool   `json:"manager"`
}

// member checks the request and returns the member it names.
func (r memberRequest) member() (Member, error) {
	if err := httpapi.Required(map[string]string{"type": r.Type, "id": r.ID}); err != nil {
		return Member{}, err
	}
	id, err := uuid.Parse(r.ID)
	if err != nil {
		return Member{}, problem.InvalidField("id", "must be the id of a user or group")
	}
	return Member{Type: r.Type, ID: id, Manager: r.Manager}, nil
}

func (h *HTTP) addMember(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such group")
	if err != nil {
		return err
	}
	var req memberRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	m, err := req.member()
	if err != nil {
		return err
	}
	err = h.groupTx(c, id, "group.add_member", func(q *queries.Queries, t *tenancy.Tenant) error {
		g, err := h.giver(c, q, t)
		if err != nil {
			return err
		}
		if err := h.authz.AddMember(c.UserContext(), q, t, g, id, m); err != nil {
			return err
		}
		return audit(c, q, t, "group.add_member", "group:"+id.String(),
			map[string]string{"member": m.Type + ":" + m.ID.String(), "manager": boolWord(m.Manager)})
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func boolWord(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func (h *HTTP) removeMember(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such group")
	if err != nil {
		return err
	}
	member, err := httpapi.PathID(c, "member", "no such member")
	if err != nil {
		return err
	}
	typ := c.Params("type")
	err = h.groupTx(c, id, "group.remove_member", func(q *queries.Queries, t *tenancy.Tenant) error {
		if err := h.authz.RemoveMember(c.UserContext(), q, t, id, typ, member); err != nil {
			return err
		}
		return audit(c, q, t, "group.remove_member", "group:"+id.String(), map[string]string{"member": typ + ":" + member.String()})
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) listRoles(c *fiber.Ctx) error {
	roles := []*Role{}
	err := h.tx(c, "role.list", func(q *queries.Queries, t *tenancy.Tenant) error {
		rows, err := q.ListRoles(c.UserContext(), t.ID.UUID())
		for _, r := range rows {
			roles = append(roles, roleFromRow(r))
		}
		return err
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(fiber.Map{"roles": roles})
}

type roleRequest struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
}

func (h *HTTP) createRole(c *fiber.Ctx) error {
	var req roleRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"name": req.Name}); err != nil {
		return err
	}
	var role *Role
	err := h.tx(c, "role.create", func(q *queries.Queries, t *tenancy.Tenant) error {
		g, err := h.giver(c, q, t)
		if err != nil {
			return err
		}
		if role, err = h.authz.CreateRole(c.UserContext(), q, t, g, req.Name, req.Description, req.Permissions); err != nil {
			return err
		}
		return audit(c, q, t, "role.create", "role:"+role.ID.String(), map[string]string{"name": role.Name})
	})
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(role)
}

func (h *HTTP) getRole(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	var role *Role
	err = h.tx(c, "role.get", func(q *queries.Queries, t *tenancy.Tenant) error {
		row, err := q.GetRole(c.UserContext(), queries.GetRoleParams{TenantID: t.ID.UUID(), ID: id})
		if err != nil {
			return queries.NotFound(err, "no such role")
		}
		role = roleFromRow(row)
		return nil
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(role)
}

type updateRoleRequest struct {
	Description *string  `json:"description"`
	Permissions []string `json:"permissions"`
}

func (h *HTTP) updateRole(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	var req updateRoleRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if req.Description == nil && req.Permissions == nil {
		return problem.Errorf(problem.Invalid, "nothing to change: give description or permissions")
	}
	var role *Role
	err = h.tx(c, "role.update", func(q *queries.Queries, t *tenancy.Tenant) error {
		g, err := h.giver(c, q, t)
		if err != nil {
			return err
		}
		if role, err = h.authz.UpdateRole(c.UserContext(), q, t, g, id, req.Description, req.Permissions); err != nil {
			return err
		}
		return audit(c, q, t, "role.update", "role:"+id.String(), nil)
	})
	if err != nil {
		return err
	}
	return c.JSON(role)
}

func (h *HTTP) deleteRole(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	err = h.tx(c, "role.delete", func(q *queries.Queries, t *tenancy.Tenant) error {
		if err := h.authz.DeleteRole(c.UserContext(), q, t, id); err != nil {
			return err
		}
		return audit(c, q, t, "role.delete", "role:"+id.String(), nil)
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) listAssignments(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	out := []Member{}
	err = h.tx(c, "role.assignments", func(q *queries.Queries, t *tenancy.Tenant) error {
		if _, err := q.GetRole(c.UserContext(), queries.GetRoleParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return queries.NotFound(err, "no such role")
		}
		rows, err := q.ListRoleAssignments(c.UserContext(), queries.ListRoleAssignmentsParams{TenantID: t.ID.UUID(), RoleID: id})
		for _, r := range rows {
			out = append(out, Member{Type: r.SubjectType, ID: r.SubjectID})
		}
		return err
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(fiber.Map{"assignments": out})
}

func (h *HTTP) assign(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	var req memberRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	m, err := req.member()
	if err != nil {
		return err
	}
	if m.Manager {
		return problem.InvalidField("manager", "applies to group members only")
	}
	err = h.tx(c, "role.assign", func(q *queries.Queries, t *tenancy.Tenant) error {
		g, err := h.giver(c, q, t)
		if err != nil {
			return err
		}
		if err := h.authz.Assign(c.UserContext(), q, t, g, id, m); err != nil {
			return err
		}
		return audit(c, q, t, "role.assign", "role:"+id.String(), map[string]string{"subject": m.Type + ":" + m.ID.String()})
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) unassign(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	subject, err := httpapi.PathID(c, "subject", "no such assignment")
	if err != nil {
		return err
	}
	typ := c.Params("type")
	err = h.tx(c, "role.unassign", func(q *queries.Queries, t *tenancy.Tenant) error {
		if err := h.authz.Unassign(c.UserContext(), q, t, id, typ, subject); err != nil {
			return err
		}
		return audit(c, q, t, "role.unassign", "role:"+id.String(), map[string]string{"subject": typ + ":" + subject.String()})
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) userPermissions(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	at, err := h.authz.Token(c.UserContext(), tenancy.Of(c))
	if err != nil {
		return err
	}
	var perms []Effective
	err = h.tx(c, "user.permissions", func(q *queries.Queries, t *tenancy.Tenant) (err error) {
		perms, err = h.authz.Explain(c.UserContext(), q, t, id, at)
		return err
	})
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(fiber.Map{"permissions": perms})
}
