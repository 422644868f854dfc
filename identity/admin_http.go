package identity

import (
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
)

// adminRoutes registers the tenant admin API. Every handler checks admin
// rights in the same transaction as its work (Service.adminTx).
func (s *Service) adminRoutes(r fiber.Router) {
	a := r.Group("/v1/admin", s.requireAuth)
	a.Get("/users", s.handleListUsers)
	a.Post("/users", s.handleCreateUser)
	a.Get("/users/:id", s.handleGetUser)
	a.Patch("/users/:id", s.handleUpdateUser)
	a.Delete("/users/:id", s.handleDeleteUser)
	a.Post("/users/:id/disable", s.handleSetStatus("disabled"))
	a.Post("/users/:id/enable", s.handleSetStatus("active"))
	a.Post("/users/:id/unlock", s.handleUnlock)
	a.Post("/users/:id/reset-password", s.handleSendPasswordReset)
	a.Get("/users/:id/sessions", s.handleUserSessions)
	a.Delete("/users/:id/sessions/:sid", s.handleRevokeUserSession)
	a.Get("/audit", s.handleListAudit)
}

func (s *Service) handleListUsers(c *fiber.Ctx) error {
	limit, err := intQuery(c, "limit", 50)
	if err != nil {
		return err
	}
	page, err := s.ListUsers(c.UserContext(), tenantOf(c), principalOf(c), c.Query("search"), c.Query("cursor"), limit, meta(c))
	if err != nil {
		return err
	}
	noStore(c)
	return c.JSON(page)
}

type createUserRequest struct {
	Email       string `json:"email"`
	DisplayName string `json:"display_name"`
	Role        string `json:"role"`
}

func (s *Service) handleCreateUser(c *fiber.Ctx) error {
	var req createUserRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	if err := required(map[string]string{"email": req.Email}); err != nil {
		return err
	}
	u, err := s.CreateUser(c.UserContext(), tenantOf(c), principalOf(c), CreateUserInput(req), meta(c))
	if err != nil {
		return err
	}
	return c.Status(fiber.StatusCreated).JSON(u)
}

func (s *Service) handleGetUser(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	u, err := s.GetUser(c.UserContext(), tenantOf(c), principalOf(c), id, meta(c))
	if err != nil {
		return err
	}
	noStore(c)
	return c.JSON(u)
}

type updateUserRequest struct {
	DisplayName *string `json:"display_name"`
	Status      *string `json:"status"`
	Role        *string `json:"role"`
}

func (s *Service) handleUpdateUser(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	var req updateUserRequest
	if err := decode(c, &req); err != nil {
		return err
	}
	u, err := s.UpdateUser(c.UserContext(), tenantOf(c), principalOf(c), id, UpdateUserInput(req), meta(c))
	if err != nil {
		return err
	}
	return c.JSON(u)
}

func (s *Service) handleSetStatus(status string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		id, err := pathID(c, "id", "no such user")
		if err != nil {
			return err
		}
		u, err := s.UpdateUser(c.UserContext(), tenantOf(c), principalOf(c), id, UpdateUserInput{Status: &status}, meta(c))
		if err != nil {
			return err
		}
		return c.JSON(u)
	}
}

func (s *Service) handleDeleteUser(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	if err := s.DeleteUser(c.UserContext(), tenantOf(c), principalOf(c), id, meta(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Service) handleUnlock(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	if err := s.Unlock(c.UserContext(), tenantOf(c), principalOf(c), id, meta(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Service) handleSendPasswordReset(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	if err := s.SendPasswordReset(c.UserContext(), tenantOf(c), principalOf(c), id, meta(c)); err != nil {
		return err
	}
	return accepted(c, "a link to choose a new password is on its way to the account's address")
}

func (s *Service) handleUserSessions(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	list, err := s.UserSessions(c.UserContext(), tenantOf(c), principalOf(c), id, meta(c))
	if err != nil {
		return err
	}
	noStore(c)
	return c.JSON(fiber.Map{"sessions": list})
}

func (s *Service) handleRevokeUserSession(c *fiber.Ctx) error {
	id, err := pathID(c, "id", "no such user")
	if err != nil {
		return err
	}
	sid, err := pathID(c, "sid", "no such session")
	if err != nil {
		return err
	}
	if err := s.RevokeUserSession(c.UserContext(), tenantOf(c), principalOf(c), id, sid, meta(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Service) handleListAudit(c *fiber.Ctx) error {
	var f AuditFilter
	var err error
	if f.Limit, err = intQuery(c, "limit", 100); err != nil {
		return err
	}
	cursor, err := intQuery(c, "cursor", 0)
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
	page, err := s.ListAudit(c.UserContext(), tenantOf(c), principalOf(c), f, meta(c))
	if err != nil {
		return err
	}
	noStore(c)
	return c.JSON(page)
}

// pathID reads a uuid path parameter; a malformed one is simply not found.
func pathID(c *fiber.Ctx, name, missing string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Params(name))
	if err != nil {
		return uuid.Nil, problem.Errorf(problem.NotFound, "%s", missing)
	}
	return id, nil
}

// intQuery reads a non-negative integer query parameter.
func intQuery(c *fiber.Ctx, name string, def int) (int, error) {
	v := c.Query(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, problem.InvalidField(name, "must be a non-negative integer")
	}
	return n, nil
}
