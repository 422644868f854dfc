package identity

import (
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// AdminRouter registers routes of the tenant admin API under /v1/admin,
// each behind RequireAuth. Route by route rather than a fiber group: a
// group's middleware runs for every path under its prefix, so each
// package's group would authenticate every admin request again.
type AdminRouter struct {
	r    fiber.Router
	auth fiber.Handler
}

// Admin returns the admin router over r.
func (h *HTTP) Admin(r fiber.Router) AdminRouter { return AdminRouter{r, h.RequireAuth} }

// Get registers a GET route.
func (a AdminRouter) Get(path string, h fiber.Handler) { a.r.Get("/v1/admin"+path, a.auth, h) }

// Post registers a POST route.
func (a AdminRouter) Post(path string, h fiber.Handler) { a.r.Post("/v1/admin"+path, a.auth, h) }

// Patch registers a PATCH route.
func (a AdminRouter) Patch(path string, h fiber.Handler) { a.r.Patch("/v1/admin"+path, a.auth, h) }

// Put registers a PUT route.
func (a AdminRouter) Put(path string, h fiber.Handler) { a.r.Put("/v1/admin"+path, a.auth, h) }

// Delete registers a DELETE route.
func (a AdminRouter) Delete(path string, h fiber.Handler) { a.r.Delete("/v1/admin"+path, a.auth, h) }

// adminRoutes registers the tenant admin API. Every handler checks admin
// rights in the same transaction as its work (Service.AdminTx).
func (h *HTTP) adminRoutes(r fiber.Router) {
	a := h.Admin(r)
	a.Get("/users", h.handleListUsers)
	a.Post("/users", h.handleCreateUser)
	a.Get("/users/:id", h.handleGetUser)
	a.Patch("/users/:id", h.handleUpdateUser)
	a.Delete("/users/:id", h.handleDeleteUser)
	a.Post("/users/:id/disable", h.handleSetStatus("disabled"))
	a.Post("/users/:id/enable", h.handleSetStatus("active"))
	a.Post("/users/:id/unlock", h.handleUnlock)
	a.Post("/users/:id/reset-password", h.handleSendPasswordReset)
	a.Get("/users/:id/sessions", h.handleUserSessions)
	a.Delete("/users/:id/sessions/:sid", h.handleRevokeUserSession)
	a.Get("/audit", h.handleListAudit)
	h.appRoutes(a)
	h.brandingRoutes(r, a)
}

func (h *HTTP) handleListUsers(c *fiber.Ctx) error {
	limit, err := httpapi.IntQuery(c, "limit", 50)
	if err != nil {
		return err
	}
	page, err := h.svc.ListUsers(c.UserContext(), tenancy.Of(c), PrincipalOf(c), c.Query("search"), c.Query("cursor"), limit, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(page)
}

type createUserRequest struct {
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
	Role        string `json:"role"`
}

func (h *HTTP) handleCreateUser(c *fiber.Ctx) error {
	var req createUserRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email}); err != nil {
		return err
	}
	u, err := h.svc.CreateUser(c.UserContext(), tenancy.Of(c), PrincipalOf(c), CreateUserInput(req), MetaOf(c))
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(u)
}

func (h *HTTP) handleGetUser(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	u, err := h.svc.GetUser(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(u)
}

type updateUserRequest struct {
	DisplayName *string `json:"display_name"`
	Status      *string `json:"status"`
	Role        *string `json:"role"`
}

func (h *HTTP) handleUpdateUser(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	var req updateUserRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	u, err := h.svc.UpdateUser(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, UpdateUserInput(req), MetaOf(c))
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (h *HTTP) handleSetStatus(status string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		id, err := httpapi.PathID(c, "id", "no such user")
		if err != nil {
			return err
		}
		u, err := h.svc.UpdateUser(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, UpdateUserInput{Status: &status}, MetaOf(c))
		if err != nil {
			return err
		}
		return c.JSON(u)
	}
}

func (h *HTTP) handleDeleteUser(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	if err := h.svc.DeleteUser(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) handleUnlock(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	if err := h.svc.Unlock(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) handleSendPasswordReset(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	if err := h.svc.SendPasswordReset(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c)); err != nil {
		return err
	}
	return accepted(c, "a link to choose a new password is on its way to the account's address")
}

func (h *HTTP) handleUserSessions(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	list, err := h.svc.UserSessions(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(sessionsResponse{Sessions: list})
}

func (h *HTTP) handleRevokeUserSession(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	sid, err := httpapi.PathID(c, "sid", "no such session")
	if err != nil {
		return err
	}
	if err := h.svc.RevokeUserSession(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, sid, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) handleListAudit(c *fiber.Ctx) error {
	var f AuditFilter
	var err error
	if f.Limit, err = httpapi.IntQuery(c, "limit", 100); err != nil {
		return err
	}
	cursor, err := httpapi.IntQuery(c, "cursor", 0)
	if err != nil {
		return err
	}
	f.Before = int64(cursor)
	if a := c.Query("actor"); a != "" {
		id, err := uuid.Parse(a)
		if err != nil {
			return problem.InvalidField("actor", "must be a user id")
		}
		f.Actor = &id
	}
	f.Action = c.Query("action")
	for name, dst := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := c.Query(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return problem.InvalidField(name, "must be an RFC 3339 time, e.g. 2026-11-25T10:00:00Z")
			}
		}
	}
	page, err := h.svc.ListAudit(c.UserContext(), tenancy.Of(c), PrincipalOf(c), f, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(page)
}
