package identity

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"mime"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"golang.org/x/text/language"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// The hosted sign-in of the authorization code flow. op sends the browser
// to /oauth/login?id=<request>; the sign-in goes through its steps there
// and ends by sending the browser to op's callback, which answers the app
// with the code:
//
//  1. password: skipped while the browser's session stands, unless the
//     app asks for a new sign-in (prompt=login, or max_age passed);
//  2. consent: for apps that are not first party, when the user has not
//     yet allowed what the app asks for, or the app asks (prompt=consent).
//
// Further steps (second factors) go between the two. prompt=none ends
// the flow at the first step that would need the user, with the error
// the app asked for.

//go:embed pages/login.html pages/account.html pages/brand.html
var flowPages embed.FS

var loginTemplate = template.Must(template.ParseFS(flowPages, "pages/login.html", "pages/brand.html"))

// loginPage is what the sign-in page shows.
type loginPage struct {
	Tenant, Title, App, Action, ID, CSRF string
	Email, Error, Message                string
	Name                                 string
	Login, Consent, Forgot, Signup       bool
	Logout                               bool
	Hidden                               []hidden // the logout form's parameters
	SignupOpen                           bool     // the tenant allows self sign-up
	Scopes                               []string
	Lang                                 string    // the page's language (BCP 47)
	T                                    words     // its texts
	Style                                pageStyle // the tenant's branding
}

// flowCookie carries the sign-in forms' CSRF token (double submit): a
// form posted from elsewhere cannot name it, and no other site can set a
// __Host- cookie for this host.
const flowCookie = "__Host-gatehouse-flow"

// loginFlow is one authorization request on its way through the steps.
type loginFlow struct {
	t   *tenancy.Tenant
	req queries.AppOidcAuthRequest
	app *App
}

func (h *HTTP) showFlow(c *fiber.Ctx) error {
	f, err := h.flow(c, c.Query("id"))
	if err != nil {
		return h.flowError(c, err)
	}
	user, authTime, err := h.svc.browserSignIn(c.UserContext(), f.t, c.Cookies(sessionCookie))
	switch {
	case err == nil && !f.mustSignIn(authTime, h.svc.now()):
		return h.nextStep(c, f, user, authTime)
	case err != nil && problem.CodeOf(err) != problem.Unauthorized:
		return h.flowError(c, err)
	case slices.Contains(f.req.Prompt, oidc.PromptNone):
		return h.toApp(c, f, oidc.ErrLoginRequired().WithDescription("the user is not signed in"))
	}
	return h.renderFlow(c, f, fiber.StatusOK, loginPage{Login: true, Email: deref(f.req.LoginHint)})
}

// mustSignIn reports whether the request wants a sign-in newer than the
// browser's, made at authTime: one made after the request was, for
// prompt=login; within max_age.
func (f *loginFlow) mustSignIn(authTime, now time.Time) bool {
	if slices.Contains(f.req.Prompt, oidc.PromptLogin) && authTime.Before(f.req.CreatedAt) {
		return true
	}
	return f.req.MaxAge != nil && now.Sub(authTime) > time.Duration(*f.req.MaxAge)*time.Second
}

// postedFlow checks a form posted to one of the sign-in's pages
// (checkForm) and loads its flow.
func (h *HTTP) postedFlow(c *fiber.Ctx) (*loginFlow, error) {
	if err := checkForm(c, "go back to the app and sign in again"); err != nil {
		return nil, err
	}
	return h.flow(c, c.FormValue("id"))
}

// checkForm checks a form posted to a page that works on the browser
// session: its type and size, an origin that keeps the session cookie,
// and the browser's CSRF token (flowCookie). again says what to do when
// the form has expired.
func checkForm(c *fiber.Ctx, again string) error {
	if mt, _, _ := mime.ParseMediaType(c.Get(fiber.HeaderContentType)); mt != fiber.MIMEApplicationForm {
		return problem.Errorf(problem.Unsupported, "send the form as application/x-www-form-urlencoded")
	}
	if len(c.Body()) > httpapi.MaxBody {
		return problem.Errorf(problem.TooLarge, "the form is too large")
	}
	// Signing in sets the session cookie, which browsers keep only from
	// https origins (and localhost, for development).
	if c.Protocol() != "https" && !isLocalhost(c.Hostname()) {
		return problem.Errorf(problem.Forbidden, "signing in needs https")
	}
	want, got := c.Cookies(flowCookie), c.FormValue("csrf")
	if want == "" || subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
		return problem.Errorf(problem.Forbidden, "this form has expired; %s", again)
	}
	return nil
}

func (h *HTTP) handleFlow(c *fiber.Ctx) error {
	f, err := h.postedFlow(c)
	if err != nil {
		return h.flowError(c, err)
	}
	ctx, meta := c.UserContext(), MetaOf(c)
	switch c.FormValue("step") {
	case "password":
		email := c.FormValue("email")
		b, err := h.svc.BrowserLogin(ctx, f.t, email, c.FormValue("password"), meta)
		if err != nil {
			if problem.CodeOf(err) == problem.Internal {
				return err
			}
			return h.renderFlow(c, f, problem.Status(problem.CodeOf(err)), loginPage{Login: true, Email: email, Error: errorText(f.lang(c), err)})
		}
		setSessionCookie(c, b)
		user, authTime, err := h.svc.browserSignIn(ctx, f.t, b.Cookie)
		if err != nil {
			return h.flowError(c, err)
		}
		return h.nextStep(c, f, user, authTime)
	case "consent", "deny":
		user, authTime, err := h.svc.browserSignIn(ctx, f.t, c.Cookies(sessionCookie))
		if err != nil {
			if problem.CodeOf(err) == problem.Unauthorized {
				return h.renderFlow(c, f, fiber.StatusUnauthorized, loginPage{Login: true, Error: catalog[f.lang(c)]["session_ended"]})
			}
			return h.flowError(c, err)
		}
		if c.FormValue("step") == "deny" {
			return h.toApp(c, f, oidc.ErrAccessDenied().WithDescription("the user did not allow the app"))
		}
		// Consent is no way around a sign-in the app asked for.
		if f.mustSignIn(authTime, h.svc.now()) {
			return h.renderFlow(c, f, fiber.StatusOK, loginPage{Login: true, Email: deref(f.req.LoginHint)})
		}
		if err := h.svc.completeAuthRequest(ctx, f, user, authTime, true, meta); err != nil {
			return h.flowError(c, err)
		}
		return h.toCallback(c, f)
	}
	return h.flowError(c, problem.InvalidField("step", "must be password, consent or deny"))
}

// showFlowForgot shows the form that asks for a password-reset link.
func (h *HTTP) showFlowForgot(c *fiber.Ctx) error {
	f, err := h.flow(c, c.Query("id"))
	if err != nil {
		return h.flowError(c, err)
	}
	return h.renderFlow(c, f, fiber.StatusOK, loginPage{Forgot: true, Email: deref(f.req.LoginHint)})
}

// handleFlowForgot mails a password-reset link (the account pages' reset
// form), and goes back to the sign-in: the answer is the same whether
// the address has an account or not.
func (h *HTTP) handleFlowForgot(c *fiber.Ctx) error {
	f, err := h.postedFlow(c)
	if err != nil {
		return h.flowError(c, err)
	}
	email := c.FormValue("email")
	if err := h.svc.ForgotPassword(c.UserContext(), f.t, email, MetaOf(c)); err != nil {
		if problem.CodeOf(err) == problem.Internal {
			return err
		}
		return h.renderFlow(c, f, problem.Status(problem.CodeOf(err)), loginPage{Forgot: true, Email: email, Error: errorText(f.lang(c), err)})
	}
	return h.renderFlow(c, f, fiber.StatusOK, loginPage{Login: true, Email: email, Message: catalog[f.lang(c)]["reset_sent"]})
}

// showFlowSignup shows the sign-up form, on tenants that allow self sign-up.
func (h *HTTP) showFlowSignup(c *fiber.Ctx) error {
	f, err := h.flow(c, c.Query("id"))
	if err != nil {
		return h.flowError(c, err)
	}
	if f.t.Signup != tenancy.SignupOpen {
		return h.flowError(c, problem.Errorf(problem.Forbidden, "this organisation's accounts are made by invitation"))
	}
	return h.renderFlow(c, f, fiber.StatusOK, loginPage{Signup: true, Email: deref(f.req.LoginHint)})
}

// handleFlowSignup creates an account (Service.Signup: its address is
// confirmed by mail) and goes back to the sign-in.
func (h *HTTP) handleFlowSignup(c *fiber.Ctx) error {
	f, err := h.postedFlow(c)
	if err != nil {
		return h.flowError(c, err)
	}
	email, name := c.FormValue("email"), c.FormValue("display_name")
	err = h.svc.Signup(c.UserContext(), f.t, SignupInput{Email: email, Password: c.FormValue("password"), DisplayName: name}, MetaOf(c))
	if err != nil {
		if problem.CodeOf(err) == problem.Internal {
			return err
		}
		return h.renderFlow(c, f, problem.Status(problem.CodeOf(err)), loginPage{Signup: true, Email: email, Name: name, Error: fieldText(f.lang(c), err)})
	}
	return h.renderFlow(c, f, fiber.StatusOK, loginPage{Login: true, Email: email, Message: catalog[f.lang(c)]["signup_sent"]})
}

// nextStep goes on after user signed in (at authTime): to consent if the
// app needs it, else back to the app.
func (h *HTTP) nextStep(c *fiber.Ctx, f *loginFlow, user uuid.UUID, authTime time.Time) error {
	ask := slices.Contains(f.req.Prompt, oidc.PromptConsent)
	if !ask && !f.app.FirstParty {
		ok, err := h.svc.consented(c.UserContext(), f.t, user, f.app.ClientID, f.req.Scopes)
		if err != nil {
			return h.flowError(c, err)
		}
		ask = !ok
	}
	if ask {
		if slices.Contains(f.req.Prompt, oidc.PromptNone) {
			return h.toApp(c, f, &oidc.Error{ErrorType: "consent_required", Description: "the user has not allowed this app"})
		}
		t := catalog[f.lang(c)]
		scopes := make([]string, 0, len(f.req.Scopes))
		for _, s := range f.req.Scopes {
			scopes = append(scopes, t["scope_"+s])
		}
		return h.renderFlow(c, f, fiber.StatusOK, loginPage{Consent: true, Scopes: scopes})
	}
	if err := h.svc.completeAuthRequest(c.UserContext(), f, user, authTime, false, MetaOf(c)); err != nil {
		return h.flowError(c, err)
	}
	return h.toCallback(c, f)
}

// toCallback sends the browser to op's callback, which answers the app.
func (h *HTTP) toCallback(c *fiber.Ctx, f *loginFlow) error {
	return c.Redirect(oauthCallback+"?id="+f.req.ID.String(), fiber.StatusSeeOther)
}

// toApp ends the flow with an error for the app, at its redirect URI,
// which was checked when the request was made.
func (h *HTTP) toApp(c *fiber.Ctx, f *loginFlow, e *oidc.Error) error {
	u, err := url.Parse(f.req.RedirectUri)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("error", string(e.ErrorType))
	q.Set("error_description", e.Description)
	if f.req.State != nil {
		q.Set("state", *f.req.State)
	}
	q.Set("iss", h.svc.cfg.Issuer(f.t))
	u.RawQuery = q.Encode()
	return c.Redirect(u.String(), fiber.StatusSeeOther)
}

// flow loads the pending authorization request id and its app.
func (h *HTTP) flow(c *fiber.Ctx, id string) (*loginFlow, error) {
	t := tenancy.Of(c)
	req, err := h.svc.authRequest(c.UserContext(), t, id)
	if err != nil {
		return nil, err
	}
	a, err := h.svc.AppByClientID(c.UserContext(), t, req.ClientID)
	if problem.CodeOf(err) == problem.NotFound || (err == nil && a.Disabled) {
		return nil, problem.Errorf(problem.NotFound, "this app can no longer sign you in")
	}
	if err != nil {
		return nil, err
	}
	return &loginFlow{t: t, req: req, app: a}, nil
}

// lang is the language of f's pages.
func (f *loginFlow) lang(c *fiber.Ctx) language.Tag {
	return pageLanguage(f.req.UiLocales, c.Get(fiber.HeaderAcceptLanguage))
}

func (h *HTTP) renderFlow(c *fiber.Ctx, f *loginFlow, status int, p loginPage) error {
	p.Tenant, p.App, p.ID, p.Action = f.t.Name, f.app.Name, f.req.ID.String(), oauthLogin
	p.Style = h.styleOf(c.UserContext(), f.t)
	lang := f.lang(c)
	p.Lang, p.T = lang.String(), catalog[lang]
	p.SignupOpen = f.t.Signup == tenancy.SignupOpen
	switch {
	case p.Consent:
		p.Title = fmt.Sprintf(p.T["allow_title"], f.app.Name)
	case p.Forgot:
		p.Title = p.T["forgot_title"]
	case p.Signup:
		p.Title = p.T["signup_title"]
	default:
		p.Title = p.T["sign_in"]
	}
	p.CSRF = flowCSRF(c)
	return renderFlowPage(c, status, p, formCSP(f.req.RedirectUri))
}

// flowCSRF returns the browser's CSRF token for the sign-in's forms,
// giving it one if it has none.
func flowCSRF(c *fiber.Ctx) string {
	token := c.Cookies(flowCookie)
	if token == "" {
		token, _ = newRefreshToken()
		c.Cookie(&fiber.Cookie{Name: flowCookie, Value: token, Path: "/", Secure: true, HTTPOnly: true,
			SameSite: fiber.CookieSameSiteStrictMode, MaxAge: int(authRequestTTL / time.Second)})
	}
	return token
}

// formCSP is the policy of a page whose form's answer redirects to
// target's origin (through the callback, to the app): browsers hold the
// redirect to form-action too.
func formCSP(target string) string {
	action := "'self'"
	u, err := url.Parse(target)
	switch {
	case err != nil:
	case (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && safeSource.MatchString(u.Host):
		action += " " + u.Scheme + "://" + u.Host
	case u.Scheme != "" && safeSource.MatchString(u.Scheme): // a native app's own scheme
		action += " " + u.Scheme + ":"
	}
	return "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action " + action + "; frame-ancestors 'none'; base-uri 'none'"
}

// safeSource is what a CSP source taken from a URL may contain.
var safeSource = regexp.MustCompile(`^[A-Za-z0-9.+\-\[\]:]+$`)

// confirmLogout asks the user before a logout no app vouched for: without
// an id_token_hint, any site could send a user to end_session and sign
// them out (OpenID Connect RP-Initiated Logout, section 2). The confirmed
// form goes on to the provider, which checks the rest.
func (h *HTTP) confirmLogout(c *fiber.Ctx) error {
	param := func(name string) string {
		if v := c.Query(name); v != "" {
			return v
		}
		return c.FormValue(name)
	}
	// Every id_token_hint the provider might read: a repeated one (op
	// takes the last, fiber the first) is refused.
	var hints [][]byte
	hints = append(hints, c.Context().QueryArgs().PeekMulti("id_token_hint")...)
	hints = append(hints, c.Context().PostArgs().PeekMulti("id_token_hint")...)
	switch {
	case len(hints) > 1:
		return h.flowError(c, problem.InvalidField("id_token_hint", "must be given once"))
	case len(hints) == 1 && len(hints[0]) > 0:
		return c.Next()
	}
	if c.Method() == fiber.MethodPost && c.FormValue("confirm") == "yes" {
		if err := checkForm(c, "sign out again from the app"); err != nil {
			return h.flowError(c, err)
		}
		return c.Next()
	}
	lang := pageLanguage(strings.Fields(param("ui_locales")), c.Get(fiber.HeaderAcceptLanguage))
	p := h.browserPage(c, lang, "sign_out_title", "")
	p.Logout, p.CSRF = true, flowCSRF(c)
	for _, name := range []string{"client_id", "post_logout_redirect_uri", "state", "ui_locales", "logout_hint"} {
		if v := param(name); v != "" {
			p.Hidden = append(p.Hidden, hidden{name, v})
		}
	}
	return renderFlowPage(c, fiber.StatusOK, p, formCSP(param("post_logout_redirect_uri")))
}

// hidden is a hidden field of a form.
type hidden struct{ Name, Value string }

// flowError shows a page that ends the sign-in: what went wrong, and that
// the app is where to start again.
func (h *HTTP) flowError(c *fiber.Ctx, err error) error {
	code := problem.CodeOf(err)
	if code == problem.Internal {
		return err
	}
	if retry := problem.RetryAfterOf(err); retry > 0 {
		c.Set(fiber.HeaderRetryAfter, seconds(retry))
	}
	lang := pageLanguage(nil, c.Get(fiber.HeaderAcceptLanguage))
	return renderFlowPage(c, problem.Status(code), h.browserPage(c, lang, "failed", errorText(lang, err)), pageCSP)
}

// browserPage is a page of the sign-in outside a flow: its title (a
// catalog key) and its error.
func (h *HTTP) browserPage(c *fiber.Ctx, lang language.Tag, title, errText string) loginPage {
	t := catalog[lang]
	tn := tenancy.Of(c)
	return loginPage{Tenant: tn.Name, Title: t[title], Error: errText, Lang: lang.String(), T: t, Style: h.styleOf(c.UserContext(), tn)}
}

// loginRefused answers a sign-in refused by the rate limit.
func (h *HTTP) loginRefused(c *fiber.Ctx, err error) error { return h.flowError(c, err) }

func (h *HTTP) showLoggedOut(c *fiber.Ctx) error {
	lang := pageLanguage(nil, c.Get(fiber.HeaderAcceptLanguage))
	p := h.browserPage(c, lang, "signed_out", "")
	p.Message = p.T["signed_out_text"]
	return renderFlowPage(c, fiber.StatusOK, p, pageCSP)
}

func renderFlowPage(c *fiber.Ctx, status int, p loginPage, csp string) error {
	return renderHTML(c, status, loginTemplate, p, p.Lang, csp)
}

// renderHTML answers with a page of the browser session (sign-in,
// account): tmpl filled with data, in language lang, under policy csp,
// never cached.
func renderHTML(c *fiber.Ctx, status int, tmpl *template.Template, data any, lang, csp string) error {
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return err
	}
	c.Set("Content-Security-Policy", csp)
	c.Set(fiber.HeaderContentLanguage, lang)
	c.Set(fiber.HeaderVary, fiber.HeaderAcceptLanguage)
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.Status(status).Send(b.Bytes())
}

// authRequest returns tenant t's authorization request id while it waits
// for its sign-in. Returns NotFound otherwise.
func (s *Service) authRequest(ctx context.Context, t *tenancy.Tenant, id string) (queries.AppOidcAuthRequest, error) {
	gone := problem.Errorf(problem.NotFound, "this sign-in has expired or is over; go back to the app and start again")
	rid, err := uuid.Parse(id)
	if err != nil {
		return queries.AppOidcAuthRequest{}, gone
	}
	var row queries.AppOidcAuthRequest
	err = s.db.Once(ctx, t, func(q *queries.Queries) (err error) {
		row, err = q.GetAuthRequest(ctx, queries.GetAuthRequestParams{TenantID: t.ID.UUID(), ID: rid})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return row, gone
	}
	return row, err
}

// browserSignIn returns the user of a browser session cookie and when
// they signed in. Returns Unauthorized without a standing session.
func (s *Service) browserSignIn(ctx context.Context, t *tenancy.Tenant, cookie string) (uuid.UUID, time.Time, error) {
	ended := problem.Errorf(problem.Unauthorized, "the session has ended; sign in again")
	if cookie == "" || len(cookie) > 128 {
		return uuid.Nil, time.Time{}, ended
	}
	var sess queries.AppSession
	err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		sess, err = q.GetSessionByCookie(ctx, queries.GetSessionByCookieParams{TenantID: t.ID.UUID(), CookieHash: hashToken(cookie)})
		if err != nil {
			return err
		}
		_, err = s.liveSession(ctx, q, t, &Principal{User: sess.UserID, Session: sess.ID})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) || problem.CodeOf(err) == problem.Unauthorized {
		return uuid.Nil, time.Time{}, ended
	}
	if err != nil {
		return uuid.Nil, time.Time{}, err
	}
	return sess.UserID, sess.CreatedAt, nil
}

// consented reports whether user allowed app clientID all of scopes.
func (s *Service) consented(ctx context.Context, t *tenancy.Tenant, user uuid.UUID, clientID string, scopes []string) (bool, error) {
	var granted []string
	err := s.db.Once(ctx, t, func(q *queries.Queries) (err error) {
		granted, err = q.GetConsent(ctx, queries.GetConsentParams{TenantID: t.ID.UUID(), UserID: user, ClientID: clientID})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, sc := range scopes {
		if !slices.Contains(granted, sc) {
			return false, nil
		}
	}
	return true, nil
}

// completeAuthRequest records that user signed in (at authTime) for f's
// request, and their consent to its scopes if they gave it now.
func (s *Service) completeAuthRequest(ctx context.Context, f *loginFlow, user uuid.UUID, authTime time.Time, consent bool, meta Meta) error {
	return s.db.Tx(ctx, f.t, func(q *queries.Queries) error {
		if consent {
			if err := q.SaveConsent(ctx, queries.SaveConsentParams{TenantID: f.t.ID.UUID(), UserID: user, ClientID: f.app.ClientID, Scopes: f.req.Scopes}); err != nil {
				return err
			}
			if err := appendAudit(ctx, q, f.t.ID.UUID(), s.now(), Event{
				Actor: user, Action: "oidc.consent", Target: "app:" + f.app.ClientID, Outcome: Success,
				Details: map[string]string{"scope": joinScopes(f.req.Scopes)}, Meta: meta,
			}); err != nil {
				return err
			}
		}
		n, err := q.CompleteAuthRequest(ctx, queries.CompleteAuthRequestParams{
			TenantID: f.t.ID.UUID(), ID: f.req.ID, UserID: &user, AuthTime: &authTime, Amr: []string{"pwd"},
		})
		if err != nil {
			return err
		}
		if n == 0 {
			return problem.Errorf(problem.Conflict, "this sign-in is over; go back to the app and start again")
		}
		return nil
	})
}

func joinScopes(s []string) string { return oidc.SpaceDelimitedArray(s).String() }
