package tenancy

import "github.com/gofiber/fiber/v2"

// Middleware resolves the request's Host to its tenant and puts it in the
// request's context (FromContext). Unknown hosts end here with 404,
// suspended tenants with 403, malformed hosts with 400.
func (r *Resolver) Middleware() fiber.Handler {
	return func(c *fiber.Ctx) error {
		t, err := r.Resolve(c.UserContext(), c.Hostname())
		if err != nil {
			return err
		}
		c.SetUserContext(WithTenant(c.UserContext(), t))
		return c.Next()
	}
}

// Of returns the tenant Middleware found for request c. A route outside
// the middleware is a programming error.
func Of(c *fiber.Ctx) *Tenant {
	t, ok := FromContext(c.UserContext())
	if !ok {
		panic("tenancy: route registered without the resolver middleware")
	}
	return t
}

// Routes registers the tenant's public endpoints on a router that runs
// Middleware.
func Routes(r fiber.Router) {
	r.Get("/v1/tenant", getTenant)
}

// TenantInfo is what anyone may learn about the tenant a host serves.
type TenantInfo struct {
	ID   string `json:"id"`
	Slug string `json:"slug"`
	Name string `json:"name"`
}

func getTenant(c *fiber.Ctx) error {
	t := Of(c)
	return c.JSON(TenantInfo{ID: t.ID.String(), Slug: t.Slug, Name: t.Name})
}
