package identity

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/http"
	"net/netip"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// HTTP serves identity over HTTP: the account API, the tenant admin API
// for users and audit, the hosted pages and the RequireAuth middleware
// other domains' routes stand behind. Its handlers decode and check a
// request, call the Service and encode the answer; the rules are the
// Service's.
type HTTP struct {
	svc      *Service
	provider *op.Provider
	oidc     http.Handler // the provider's endpoints
}

// NewHTTP returns the HTTP API over svc.
func NewHTTP(svc *Service) *HTTP {
	p := newProvider(svc)
	return &HTTP{svc: svc, provider: p, oidc: newOIDCHandler(svc, p, corsOptions)}
}

// Routes registers identity's endpoints on a router whose requests have
// their tenant resolved (tenancy.Resolver.Middleware).
func (h *HTTP) Routes(r fiber.Router) {
	r.Post("/v1/auth/signup", h.limit("signup"), h.handleSignup)
	r.Post("/v1/auth/login", h.limit("login"), h.handleLogin)
	r.Post("/v1/auth/session", h.limit("login"), h.handleBrowserLogin)
	r.Post("/v1/auth/logout", h.RequireAuth, h.handleLogout)
	r.Post("/v1/auth/token/refresh", h.limit("refresh"), h.handleRefresh)
	r.Post("/v1/auth/token/revoke", h.limit("revoke"), h.handleRevoke)
	r.Post("/v1/auth/email/verify", h.limit("verify"), h.handleVerifyEmail)
	r.Post("/v1/auth/email/resend", h.limit("forgot"), h.handleResendVerification)
	r.Post("/v1/auth/password/forgot", h.limit("forgot"), h.handleForgotPassword)
	r.Post("/v1/auth/password/reset", h.limit("password"), h.handleResetPassword)
	r.Get("/v1/me/sessions", h.RequireAuth, h.handleSessions)
	r.Delete("/v1/me/sessions/:id", h.RequireAuth, h.handleEndSession)
	r.Get("/v1/me", h.RequireAuth, h.handleMe)
	r.Patch("/v1/me", h.RequireAuth, h.handleUpdateMe)
	r.Post("/v1/me/password", h.RequireAuth, h.limit("password"), h.handleChangePassword)
	r.Post("/v1/me/email", h.RequireAuth, h.limit("password"), h.handleChangeEmail)
	r.Get(jwksPath, h.handleJWKS)
	h.oidcRoutes(r)
	h.adminRoutes(r)
	h.pageRoutes(r)
	h.accountRoutes(r)
}

type signupRequest struct {
	Email       string `json:"email"`
	Password    string `json:"password"`
	DisplayName string `json:"display_name"`
}

func (h *HTTP) handleSignup(c *fiber.Ctx) error {
	var req signupRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email, "password": req.Password}); err != nil {
		return err
	}
	if err := h.svc.Signup(c.UserContext(), tenancy.Of(c), SignupInput(req), MetaOf(c)); err != nil {
		return err
	}
	return accepted(c, "check your mail: a link to confirm your address is on its way")
}

// acceptedResponse is the body of a 202. Its fields are sorted by JSON
// name, the order the body's keys have always had.
type acceptedResponse struct {
	Message string `json:"message"`
	Status  string `json:"status"` // always "accepted"
}

// accepted answers 202 with a message that is the same whatever happened
// behind it (whether an account exists, say).
func accepted(c *fiber.Ctx, message string) error {
	return c.Status(fiber.StatusAccepted).JSON(acceptedResponse{Message: message, Status: "accepted"})
}

type tokenRequest struct {
	Token string `json:"token"`
}

func (h *HTTP) handleVerifyEmail(c *fiber.Ctx) error {
	var req tokenRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"token": req.Token}); err != nil {
		return err
	}
	if err := h.svc.VerifyEmail(c.UserContext(), tenancy.Of(c), req.Token, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

type emailRequest struct {
	Email string `json:"email"`
}

func (h *HTTP) handleResendVerification(c *fiber.Ctx) error {
	var req emailRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email}); err != nil {
		return err
	}
	if err := h.svc.ResendVerification(c.UserContext(), tenancy.Of(c), req.Email, MetaOf(c)); err != nil {
		return err
	}
	return accepted(c, "if this address has an unconfirmed account, a new link is on its way")
}

func (h *HTTP) handleForgotPassword(c *fiber.Ctx) error {
	var req emailRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email}); err != nil {
		return err
	}
	if err := h.svc.ForgotPassword(c.UserContext(), tenancy.Of(c), req.Email, MetaOf(c)); err != nil {
		return err
	}
	return accepted(c, "if this address has an account, a link to reset its password is on its way")
}

type resetPasswordRequest struct {
	Token       string `json:"token"`
	NewPassword string `json:"new_password"`
}

func (h *HTTP) handleResetPassword(c *fiber.Ctx) error {
	var req resetPasswordRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"token": req.Token, "new_password": req.NewPassword}); err != nil {
		return err
	}
	if err := h.svc.ResetPassword(c.UserContext(), tenancy.Of(c), req.Token, req.NewPassword, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

type changeEmailRequest struct {
	Email           string `json:"email"`
	CurrentPassword string `json:"current_password"`
}

func (h *HTTP) handleChangeEmail(c *fiber.Ctx) error {
	var req changeEmailRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email, "current_password": req.CurrentPassword}); err != nil {
		return err
	}
	if err := h.svc.ChangeEmail(c.UserContext(), tenancy.Of(c), PrincipalOf(c), req.Email, req.CurrentPassword, MetaOf(c)); err != nil {
		return err
	}
	return accepted(c, "a link to confirm the new address is on its way to it; the address changes when it is opened")
}

type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (h *HTTP) handleLogin(c *fiber.Ctx) error {
	var req loginRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email, "password": req.Password}); err != nil {
		return err
	}
	tokens, err := h.svc.Login(c.UserContext(), tenancy.Of(c), req.Email, req.Password, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(tokens)
}

type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

func (h *HTTP) handleRefresh(c *fiber.Ctx) error {
	var req refreshRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"refresh_token": req.RefreshToken}); err != nil {
		return err
	}
	tokens, err := h.svc.Refresh(c.UserContext(), tenancy.Of(c), req.RefreshToken, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(tokens)
}

type revokeRequest struct {
	Token string `json:"token"`
}

func (h *HTTP) handleRevoke(c *fiber.Ctx) error {
	var req revokeRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"token": req.Token}); err != nil {
		return err
	}
	if err := h.svc.Revoke(c.UserContext(), tenancy.Of(c), req.Token, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusOK)
}

func (h *HTTP) handleSessions(c *fiber.Ctx) error {
	list, err := h.svc.Sessions(c.UserContext(), tenancy.Of(c), PrincipalOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(sessionsResponse{Sessions: list})
}

// sessionsResponse lists sessions, the caller's own or (admin API) a
// user's.
type sessionsResponse struct {
	Sessions []Session `json:"sessions"`
}

func (h *HTTP) handleEndSession(c *fiber.Ctx) error {
	id, err := httpapi.PathID(c, "id", "no such session")
	if err != nil {
		return err
	}
	if err := h.svc.EndSession(c.UserContext(), tenancy.Of(c), PrincipalOf(c), id, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (h *HTTP) handleLogout(c *fiber.Ctx) error {
	if err := h.svc.Logout(c.UserContext(), tenancy.Of(c), PrincipalOf(c), MetaOf(c)); err != nil {
		return err
	}
	clearSessionCookie(c)
	return c.SendStatus(fiber.StatusNoContent)
}

// sessionCookie names the browser session cookie. The __Host- prefix makes
// browsers insist on Secure, Path=/ and no Domain: the cookie belongs to
// this tenant's host alone and no sibling subdomain can set or read it.
const sessionCookie = "__Host-gatehouse"

func (h *HTTP) handleBrowserLogin(c *fiber.Ctx) error {
	// Browsers keep Secure cookies only from https origins, and from
	// localhost for local development; refuse plain http elsewhere rather
	// than hand out a cookie that would travel in the clear.
	if c.Protocol() != "https" && !isLocalhost(c.Hostname()) {
		return problem.Errorf(problem.Forbidden, "browser sessions need https")
	}
	var req loginRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"email": req.Email, "password": req.Password}); err != nil {
		return err
	}
	b, err := h.svc.BrowserLogin(c.UserContext(), tenancy.Of(c), req.Email, req.Password, MetaOf(c))
	if err != nil {
		return err
	}
	setSessionCookie(c, b)
	httpapi.NoStore(c)
	return c.JSON(b)
}

func setSessionCookie(c *fiber.Ctx, b *BrowserSession) {
	c.Cookie(&fiber.Cookie{
		Name: sessionCookie, Value: b.Cookie, Path: "/", Expires: b.ExpiresAt,
		Secure: true, HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode,
	})
}

func clearSessionCookie(c *fiber.Ctx) {
	if c.Cookies(sessionCookie) != "" {
		c.Cookie(&fiber.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
			Secure: true, HTTPOnly: true, SameSite: fiber.CookieSameSiteLaxMode})
	}
}

func isLocalhost(host string) bool {
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

func (h *HTTP) handleMe(c *fiber.Ctx) error {
	u, err := h.svc.Me(c.UserContext(), tenancy.Of(c), PrincipalOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(u)
}

type updateMeRequest struct {
	DisplayName *string `json:"display_name"`
}

func (h *HTTP) handleUpdateMe(c *fiber.Ctx) error {
	var req updateMeRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if req.DisplayName == nil {
		return problem.InvalidField("display_name", "is required (it is the only field that can change here)")
	}
	u, err := h.svc.UpdateMe(c.UserContext(), tenancy.Of(c), PrincipalOf(c), *req.DisplayName, MetaOf(c))
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(u)
}

type changePasswordRequest struct {
	CurrentPassword string `json:"current_password"`
	NewPassword     string `json:"new_password"`
}

func (h *HTTP) handleChangePassword(c *fiber.Ctx) error {
	var req changePasswordRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := httpapi.Required(map[string]string{"current_password": req.CurrentPassword, "new_password": req.NewPassword}); err != nil {
		return err
	}
	if err := h.svc.ChangePassword(c.UserContext(), tenancy.Of(c), PrincipalOf(c), req.CurrentPassword, req.NewPassword, MetaOf(c)); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// JWK is one public key in JWKS form (RFC 8037 for Ed25519, RFC 7518
// for RSA).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// jwkOf is k in JWKS form.
func jwkOf(k SigningKey) JWK {
	if rk, ok := k.Public.(*rsa.PublicKey); ok {
		return JWK{Kty: "RSA", N: base64.RawURLEncoding.EncodeToString(rk.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(rk.E)).Bytes()), Kid: k.Kid, Alg: AlgRS256, Use: "sig"}
	}
	return JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.Public.(ed25519.PublicKey)), Kid: k.Kid, Alg: AlgEdDSA, Use: "sig"}
}

// jwkSet is a JWK Set (RFC 7517, section 5).
type jwkSet struct {
	Keys []JWK `json:"keys"`
}

func (h *HTTP) handleJWKS(c *fiber.Ctx) error {
	keys, err := h.svc.keys.Published(c.UserContext(), tenancy.Of(c))
	if err != nil {
		return err
	}
	set := jwkSet{Keys: make([]JWK, len(keys))}
	for i, k := range keys {
		set.Keys[i] = jwkOf(k)
	}
	// Short enough that a rotated key is picked up well within a token's
	// lifetime.
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.JSON(set)
}

// limit counts the request against action's rate limits and answers with
// the RateLimit-* headers (and 429 with Retry-After once spent).
func (h *HTTP) limit(action string) fiber.Handler {
	return h.limitOr(action, nil)
}

// limitOr is limit answering a spent limit with refused, if set (the
// hosted pages answer with a page).
func (h *HTTP) limitOr(action string, refused func(c *fiber.Ctx, err error) error) fiber.Handler {
	return func(c *fiber.Ctx) error {
		st, err := h.svc.allow(c.UserContext(), tenancy.Of(c), action, MetaOf(c).IP)
		if st.Limit > 0 {
			c.Set("RateLimit-Limit", fmt.Sprint(st.Limit))
			c.Set("RateLimit-Remaining", fmt.Sprint(st.Remaining))
			c.Set("RateLimit-Reset", seconds(st.Reset))
		}
		if err != nil {
			if refused != nil && problem.CodeOf(err) == problem.TooMany {
				return refused(c, err)
			}
			return err
		}
		if err := c.Next(); err != nil {
			return err
		}
		if c.Response().StatusCode() < 400 {
			// The answer stands either way: a lost refund only leaves the
			// tenant's limit a little tighter for the rest of its window.
			_ = h.svc.giveBack(c.UserContext(), tenancy.Of(c), action, st)
		}
		return nil
	}
}

// RequireAuth admits requests with a valid bearer access token of the
// request's tenant, or a browser session cookie, and puts the principal
// in the context. A cookie-authenticated request that changes state must
// also carry the session's CSRF token in X-CSRF-Token: the cookie alone
// would be sent by any site the browser visits.
func (h *HTTP) RequireAuth(c *fiber.Ctx) error {
	authz := c.Get(fiber.HeaderAuthorization)
	if cookie := c.Cookies(sessionCookie); authz == "" && cookie != "" {
		p, csrf, err := h.svc.AuthenticateCookie(c.UserContext(), tenancy.Of(c), cookie)
		if err != nil {
			clearSessionCookie(c)
			return err
		}
		if !safeMethod(c.Method()) {
			got := c.Get("X-CSRF-Token")
			if got == "" || csrf == nil || subtle.ConstantTimeCompare(hashToken(got), csrf) != 1 {
				return problem.Errorf(problem.Forbidden, "missing or wrong CSRF token: send the session's csrf_token in X-CSRF-Token")
			}
		}
		c.Locals(principalKey{}, p)
		return c.Next()
	}
	scheme, token, ok := strings.Cut(authz, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gatehouse"`)
		return problem.Errorf(problem.Unauthorized, "sign in first: send an access token as Authorization: Bearer <token>")
	}
	p, err := h.svc.Authenticate(c.UserContext(), tenancy.Of(c), strings.TrimSpace(token))
	if err != nil {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gatehouse", error="invalid_token"`)
		return err
	}
	c.Locals(principalKey{}, p)
	return c.Next()
}

// RequireUserOrApp is RequireAuth that also admits a machine app's own
// access token (client_credentials): for the endpoints apps call as
// service accounts (the check and relationship APIs), which then ask what
// the app's roles grant.
func (h *HTTP) RequireUserOrApp(c *fiber.Ctx) error {
	scheme, token, _ := strings.Cut(c.Get(fiber.HeaderAuthorization), " ")
	if token = strings.TrimSpace(token); !strings.EqualFold(scheme, "Bearer") || !isAppToken(token) {
		return h.RequireAuth(c)
	}
	p, err := h.svc.AuthenticateApp(c.UserContext(), tenancy.Of(c), token)
	if err != nil {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="gatehouse", error="invalid_token"`)
		return err
	}
	c.Locals(principalKey{}, p)
	return c.Next()
}

type principalKey struct{}

func safeMethod(m string) bool {
	return m == fiber.MethodGet || m == fiber.MethodHead || m == fiber.MethodOptions
}

// PrincipalOf returns who request c is authenticated as; only for
// handlers behind RequireAuth.
func PrincipalOf(c *fiber.Ctx) *Principal {
	p, _ := c.Locals(principalKey{}).(*Principal)
	if p == nil {
		panic("identity: handler registered without requireAuth")
	}
	return p
}

// MetaOf returns what request c tells about its origin.
func MetaOf(c *fiber.Ctx) Meta {
	// Header values are whatever the client sent: keep them storable
	// (valid UTF-8, no NUL) so a hostile User-Agent cannot fail a request.
	ua := strings.ReplaceAll(strings.ToValidUTF8(c.Get(fiber.HeaderUserAgent), "\uFFFD"), "\x00", "")
	m := Meta{UserAgent: ua, RequestID: string(c.Response().Header.Peek("X-Request-Id"))}
	if ip, err := netip.ParseAddr(c.IP()); err == nil {
		m.IP = ip.Unmap()
	}
	return m
}
