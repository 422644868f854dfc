package identity

import (
	_ "embed"
	"html/template"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// The account page (/account): a user's own sign-in to their account at
// the tenant, to change their password and see and end their sessions
// (apps' included). It runs on the browser session like the hosted
// sign-in, its forms guarded by the same CSRF cookie.

var accountTemplate = template.Must(template.ParseFS(flowPages, "pages/account.html", "pages/brand.html"))

// accountPage is what the account page shows.
type accountPage struct {
	Tenant, CSRF, Lang, Error, Done string
	T                               words
	Style                           pageStyle
	User                            *User
	Sessions                        []Session
}

func (h *HTTP) accountRoutes(r fiber.Router) {
	r.Get("/account", h.showAccount)
	r.Post("/account", h.limitOr("password", h.accountRefused), h.handleAccount)
}

func (h *HTTP) showAccount(c *fiber.Ctx) error {
	return h.renderAccount(c, fiber.StatusOK, accountPage{})
}

// renderAccount shows the page: the sign-in form without a standing
// browser session, else the account with its sessions.
func (h *HTTP) renderAccount(c *fiber.Ctx, status int, p accountPage) error {
	t := tenancy.Of(c)
	lang := pageLanguage(nil, c.Get(fiber.HeaderAcceptLanguage))
	p.Tenant, p.Lang, p.T, p.CSRF, p.Style = t.Name, lang.String(), catalog[lang], flowCSRF(c), h.styleOf(c.UserContext(), t)
	if principal, _, err := h.svc.AuthenticateCookie(c.UserContext(), t, c.Cookies(sessionCookie)); err == nil {
		u, err := h.svc.Me(c.UserContext(), t, principal)
		if err == nil {
			p.Sessions, err = h.svc.Sessions(c.UserContext(), t, principal)
		}
		switch {
		case err == nil:
			p.User = u
		case problem.CodeOf(err) != problem.Unauthorized:
			return err
		}
	}
	return renderHTML(c, status, accountTemplate, p, p.Lang, pageCSP)
}

// accountRefused answers a form refused by the rate limit.
func (h *HTTP) accountRefused(c *fiber.Ctx, err error) error {
	if retry := problem.RetryAfterOf(err); retry > 0 {
		c.Set(fiber.HeaderRetryAfter, seconds(retry))
	}
	lang := pageLanguage(nil, c.Get(fiber.HeaderAcceptLanguage))
	return h.renderAccount(c, problem.Status(problem.CodeOf(err)), accountPage{Error: errorText(lang, err)})
}

// handleAccount does what one of the page's forms asks, then shows the
// page again with the outcome.
func (h *HTTP) handleAccount(c *fiber.Ctx) error {
	t, ctx, meta := tenancy.Of(c), c.UserContext(), MetaOf(c)
	lang := pageLanguage(nil, c.Get(fiber.HeaderAcceptLanguage))
	fail := func(err error) error {
		if problem.CodeOf(err) == problem.Internal {
			return err
		}
		return h.renderAccount(c, problem.Status(problem.CodeOf(err)), accountPage{Error: fieldText(lang, err)})
	}
	if err := checkForm(c, "open the page again"); err != nil {
		return fail(err)
	}
	if c.FormValue("step") == "login" {
		b, err := h.svc.BrowserLogin(ctx, t, c.FormValue("email"), c.FormValue("password"), meta)
		if err != nil {
			return fail(err)
		}
		setSessionCookie(c, b)
		c.Request().Header.SetCookie(sessionCookie, b.Cookie) // the page shown now is signed in
		return h.renderAccount(c, fiber.StatusOK, accountPage{})
	}
	p, _, err := h.svc.AuthenticateCookie(ctx, t, c.Cookies(sessionCookie))
	if err != nil {
		clearSessionCookie(c)
		return fail(err)
	}
	done := ""
	switch c.FormValue("step") {
	case "password":
		err = h.svc.ChangePassword(ctx, t, p, c.FormValue("current_password"), c.FormValue("new_password"), meta)
		done = catalog[lang]["password_changed"]
	case "end_session":
		id, perr := uuid.Parse(c.FormValue("session"))
		if perr != nil {
			return fail(problem.InvalidField("session", "must be one of your sessions"))
		}
		err = h.svc.EndSession(ctx, t, p, id, meta)
		done = catalog[lang]["session_ended_done"]
	case "logout":
		if err = h.svc.Logout(ctx, t, p, meta); err == nil {
			clearSessionCookie(c)
			c.Request().Header.DelCookie(sessionCookie)
		}
		done = catalog[lang]["signed_out_text"]
	default:
		err = problem.InvalidField("step", "must be login, password, end_session or logout")
	}
	if err != nil {
		return fail(err)
	}
	return h.renderAccount(c, fiber.StatusOK, accountPage{Done: done})
}
