package rebac

import (
	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// HTTP serves the tenant admin API for groups and roles, and the check
// API. Its handlers decode and check the request, call one Service
// method and encode the answer: the Service checks the caller's
// permission through identity.Service (the Guard), which audits the
// decision, does the work in that one transaction, and pushes the
// relationship changes to SpiceDB before it returns, so that the next
// check sees them.
type HTTP struct {
	authz       *Service
	accounts    *identity.Service
	auth        *identity.HTTP // sign-in, in front of every route
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
// callers through auth (the server's identity routes) and guarding admin
// actions with accounts.
func NewHTTP(authz *Service, accounts *identity.Service, auth *identity.HTTP, o HTTPOptions) *HTTP {
	if o.Metrics == nil {
		o.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &HTTP{authz: authz, accounts: accounts, auth: auth, auditSample: o.AuditSample, metrics: o.Metrics}
}

// Routes registers the endpoints on a router whose requests have their
// tenant resolved.
func (h *HTTP) Routes(r fiber.Router) {
	a := h.auth.Admin(r)
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

// caller is the request's caller, whose admin actions the accounts
// guard.
func (h *HTTP) caller(c *fiber.Ctx) Caller {
	return Caller{Guard: h.accounts, Principal: identity.PrincipalOf(c), Meta: identity.MetaOf(c)}
}

type groupsResponse struct {
	Groups []*Group `json:"groups"`
}

type membersResponse struct {
	Members []Member `json:"members"`
}

type rolesResponse struct {
	Roles []*Role `json:"roles"`
}

type assignmentsResponse struct {
	Assignments []Member `json:"assignments"`
}

type permissionsResponse struct {
	Permissions []Effective `json:"permissions"`
}

func (h *HTTP) listGroups(c *fiber.Ctx) error {
	groups, err := h.authz.ListGroups(c.UserContext(), tenancy.Of(c), h.caller(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(groupsResponse{Groups: groups})
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
	g, err := h.authz.CreateGroup(c.UserContext(), tenancy.Of(c), h.caller(c), req.Name, req.Description)
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
	g, err := h.authz.GetGroup(c.UserContext(), tenancy.Of(c), h.caller(c), id)
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
	if err := h.authz.DeleteGroup(c.UserContext(), tenancy.Of(c), h.caller(c), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) listMembers(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such group")
	if err != nil {
		return err
	}
	members, err := h.authz.ListMembers(c.UserContext(), tenancy.Of(c), h.caller(c), id)
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(membersResponse{Members: members})
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
	if err := h.authz.AddMember(c.UserContext(), tenancy.Of(c), h.caller(c), id, m); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
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
	if err := h.authz.RemoveMember(c.UserContext(), tenancy.Of(c), h.caller(c), id, c.Params("type"), member); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) listRoles(c *fiber.Ctx) error {
	roles, err := h.authz.ListRoles(c.UserContext(), tenancy.Of(c), h.caller(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(rolesResponse{Roles: roles})
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
	role, err := h.authz.CreateRole(c.UserContext(), tenancy.Of(c), h.caller(c), req.Name, req.Description, req.Permissions)
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
	role, err := h.authz.GetRole(c.UserContext(), tenancy.Of(c), h.caller(c), id)
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
	role, err := h.authz.UpdateRole(c.UserContext(), tenancy.Of(c), h.caller(c), id, req.Description, req.Permissions)
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
	if err := h.authz.DeleteRole(c.UserContext(), tenancy.Of(c), h.caller(c), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) listAssignments(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such role")
	if err != nil {
		return err
	}
	assignments, err := h.authz.ListAssignments(c.UserContext(), tenancy.Of(c), h.caller(c), id)
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(assignmentsResponse{Assignments: assignments})
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
	if err := h.authz.Assign(c.UserContext(), tenancy.Of(c), h.caller(c), id, m); err != nil {
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
	if err := h.authz.Unassign(c.UserContext(), tenancy.Of(c), h.caller(c), id, c.Params("type"), subject); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) userPermissions(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	perms, err := h.authz.UserPermissions(c.UserContext(), tenancy.Of(c), h.caller(c), id)
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(permissionsResponse{Permissions: perms})
}
