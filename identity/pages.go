package identity

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"mime"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// The hosted pages that mailed links open when a tenant has no app page
// of its own for them (its link base, tenancy.Tenant.LinkBaseURL). They
// are plain HTML forms: no script, nothing loaded from elsewhere. Opening
// a link only shows a form; the token is spent by the form's POST, so a
// mail scanner that fetches every link spends nothing.

//go:embed pages/page.html
var pageFS embed.FS

var pageTemplate = template.Must(template.ParseFS(pageFS, "pages/page.html"))

// pageCSP lets the pages use their own inline style, show the tenant's
// logo and post their form to their own origin, and nothing else.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

type pageData struct {
	Tenant, Title, Action, Button string
	Token, Email                  string
	AskPassword                   bool
	Error, Done                   string
}

// hostedPage is one of the pages: what it asks and what it does.
type hostedPage struct {
	title, button, done string
	purposes            []string
	askPassword         bool
}

var hostedPages = map[string]hostedPage{
	pageVerify: {title: "Confirm your email address", button: "Confirm my address",
		done: "Your address is confirmed. You can close this page.", purposes: []string{purposeVerify}},
	pageReset: {title: "Choose a new password", button: "Set my password", askPassword: true,
		done:     "Your password is set, and every session of the account was ended. Sign in with the new password.",
		purposes: []string{purposeReset, purposeInvite}},
	pageInvite: {title: "Welcome: choose your password", button: "Set my password", askPassword: true,
		done: "Your password is set. Sign in with it.", purposes: []string{purposeReset, purposeInvite}},
}

func (h *HTTP) pageRoutes(r fiber.Router) {
	for name, p := range hostedPages {
		r.Get("/account/"+name, h.showPage(name))
		// The forms spend tokens and set passwords: limited like the API
		// endpoints that do the same, answered with the page.
		action := "verify"
		if p.askPassword {
			action = "password"
		}
		r.Post("/account/"+name, h.limitOr(action, func(c *fiber.Ctx, err error) error {
			return h.pageError(c, p.data(tenancy.Of(c), name), err)
		}), h.handlePage(name))
	}
}

// data is what page name shows before it knows anything of the request.
func (p hostedPage) data(t *tenancy.Tenant, name string) pageData {
	return pageData{Tenant: t.Name, Title: p.title, Action: "/account/" + name, Button: p.button, AskPassword: p.askPassword}
}

// showPage shows page's form for the link's token, or says at once that
// the link no longer works.
func (h *HTTP) showPage(name string) fiber.Handler {
	p := hostedPages[name]
	return func(c *fiber.Ctx) error {
		t := tenancy.Of(c)
		d := p.data(t, name)
		_, u, err := h.svc.peekToken(c.UserContext(), t, c.Query("token"), p.purposes...)
		if err != nil {
			return h.pageError(c, d, err)
		}
		d.Token, d.Email = c.Query("token"), u.Email
		return renderPage(c, fiber.StatusOK, d)
	}
}

// handlePage takes page's form and does what it asks.
func (h *HTTP) handlePage(name string) fiber.Handler {
	p := hostedPages[name]
	return func(c *fiber.Ctx) error {
		t := tenancy.Of(c)
		d := p.data(t, name)
		if mt, _, _ := mime.ParseMediaType(c.Get(fiber.HeaderContentType)); mt != fiber.MIMEApplicationForm {
			return h.pageError(c, d, problem.Errorf(problem.Unsupported, "send the form as application/x-www-form-urlencoded"))
		}
		if len(c.Body()) > httpapi.MaxBody {
			return h.pageError(c, d, problem.Errorf(problem.TooLarge, "the form is too large"))
		}
		token := c.FormValue("token")
		var err error
		switch {
		case !p.askPassword:
			err = h.svc.VerifyEmail(c.UserContext(), t, token, MetaOf(c))
		case c.FormValue("password") != c.FormValue("confirm"):
			err = problem.InvalidField("confirm", "the two passwords differ")
		default:
			err = h.svc.ResetPassword(c.UserContext(), t, token, c.FormValue("password"), MetaOf(c))
		}
		if err != nil {
			// A form that can be corrected is shown again with the error.
			if _, u, perr := h.svc.peekToken(c.UserContext(), t, token, p.purposes...); perr == nil && problem.CodeOf(err) != problem.Internal {
				d.Token, d.Email = token, u.Email
			}
			return h.pageError(c, d, err)
		}
		d.Done = p.done
		return renderPage(c, fiber.StatusOK, d)
	}
}

// pageError shows err on the page with its status; internal errors go to
// the server's error handler, which logs them and shows no detail.
func (h *HTTP) pageError(c *fiber.Ctx, d pageData, err error) error {
	code := problem.CodeOf(err)
	if code == problem.Internal {
		return err
	}
	d.Error = problem.MessageOf(err)
	if e, ok := errors.AsType[*problem.Error](err); ok {
		if len(e.Fields) > 0 {
			d.Error = fieldLabel(e.Fields[0].Field) + " " + e.Fields[0].Reason
		}
	}
	if retry := problem.RetryAfterOf(err); retry > 0 {
		c.Set(fiber.HeaderRetryAfter, seconds(retry))
	}
	return renderPage(c, problem.Status(code), d)
}

// fieldLabel names a request field the way a page's reader knows it.
func fieldLabel(f string) string {
	switch f {
	case "token":
		return "This link"
	case "password", "new_password":
		return "The password"
	case "confirm":
		return "The repeated password:"
	}
	return f
}

func renderPage(c *fiber.Ctx, status int, d pageData) error {
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, d); err != nil {
		return err
	}
	c.Set("Content-Security-Policy", pageCSP)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(b.Bytes())
}
