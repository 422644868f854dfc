package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gofiber/fiber/v2"
	"github.com/rs/cors"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"github.com/gatehouse/gatehouse/tenancy"
)

// Every tenant is an OpenID Connect provider at its own issuer
// (Config.Issuer). One zitadel op.Provider serves them all: it finds the
// request's tenant, and with it the issuer, keys, apps and users, in the
// request's context, which the bridge from fiber fills.
//
// The provider's endpoints, under the issuer:
//
//	/.well-known/openid-configuration  discovery
//	/.well-known/jwks.json             the tenant's public keys
//	/oauth/authorize                   the authorization code flow (then the hosted /oauth/login)
//	/oauth/token                       authorization_code, refresh_token, client_credentials
//	/oauth/userinfo, /oauth/introspect, /oauth/revoke, /oauth/end_session
const (
	oauthAuthorize  = "/oauth/authorize"
	oauthCallback   = oauthAuthorize + "/callback"
	oauthToken      = "/oauth/token"
	oauthUserinfo   = "/oauth/userinfo"
	oauthIntrospect = "/oauth/introspect"
	oauthRevoke     = "/oauth/revoke"
	oauthEndSession = "/oauth/end_session"
	oauthLogin      = "/oauth/login"
	oauthLoggedOut  = "/oauth/logged-out"
	oauthForgot     = "/oauth/forgot"
	oauthSignup     = "/oauth/signup"
	jwksPath        = "/.well-known/jwks.json"
)

// newProvider returns the provider over svc.
func newProvider(svc *Service) *op.Provider {
	keys := tenantKeySet{svc}
	endpoint := func(path string) *op.Endpoint { return op.NewEndpoint(strings.TrimPrefix(path, "/")) }
	p, err := op.NewProvider(&op.Config{
		DefaultLogoutRedirectURI: oauthLoggedOut,
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		AuthMethodPrivateKeyJWT:  true,
		GrantTypeRefreshToken:    true,
		SupportedUILocales:       []language.Tag{language.English, language.German},
		SupportedScopes:          appScopes,
	}, opStorage{svc}, func(bool) (op.IssuerFromRequest, error) {
		return func(r *http.Request) string { return svc.cfg.Issuer(reqOf(r.Context()).t) }, nil
	},
		op.WithCustomEndpoints(endpoint(oauthAuthorize), endpoint(oauthToken), endpoint(oauthUserinfo),
			endpoint(oauthRevoke), endpoint(oauthEndSession), endpoint(jwksPath)),
		op.WithCustomIntrospectionEndpoint(endpoint(oauthIntrospect)),
		op.WithAccessTokenKeySet(keys),
		op.WithIDTokenHintKeySet(keys),
		op.WithAccessTokenVerifierOpts(op.WithSupportedAccessTokenSigningAlgorithms(string(jose.EdDSA), string(jose.RS256))),
		op.WithIDTokenHintVerifierOpts(op.WithSupportedIDTokenHintSigningAlgorithms(string(jose.EdDSA), string(jose.RS256))),
		op.WithCrypto(randomCodes{}),
	)
	if err != nil {
		panic(err) // only from the issuer function, which cannot fail
	}
	return p
}

// corsOptions let apps in browsers call the token and userinfo endpoints
// from their own origins; no call needs the browser's cookies.
var corsOptions = op.WithServerCORSOptions(&cors.Options{
	AllowOriginFunc: func(string) bool { return true },
	AllowedHeaders:  []string{"Accept", "Accept-Language", "Authorization", "Content-Type"},
	AllowedMethods:  []string{http.MethodGet, http.MethodPost},
})

// randomCodes is the provider's Crypto: op encrypts an auth request's id
// into its code, and decrypts opaque access tokens. Here a code is 256
// random bits, of which only the hash is stored, and every access token is
// a JWT, so nothing is ever decrypted.
type randomCodes struct{}

func (randomCodes) Encrypt(string) (string, error) {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func (randomCodes) Decrypt(string) (string, error) { return "", errors.New("no opaque tokens") }

func (h *HTTP) oidcRoutes(r fiber.Router) {
	r.Get("/.well-known/openid-configuration", h.handleDiscovery)
	for path, methods := range map[string][]string{
		oauthAuthorize:  {fiber.MethodGet, fiber.MethodPost},
		oauthCallback:   {fiber.MethodGet},
		oauthEndSession: {fiber.MethodGet, fiber.MethodPost}, // behind confirmLogout
		// Called by apps in browsers too: CORS preflights.
		oauthToken:      {fiber.MethodPost, fiber.MethodOptions},
		oauthUserinfo:   {fiber.MethodGet, fiber.MethodPost, fiber.MethodOptions},
		oauthIntrospect: {fiber.MethodPost, fiber.MethodOptions},
		oauthRevoke:     {fiber.MethodPost, fiber.MethodOptions},
	} {
		for _, m := range methods {
			if path == oauthEndSession {
				r.Add(m, path, h.confirmLogout, h.serveProvider)
				continue
			}
			r.Add(m, path, h.serveProvider)
		}
	}
	r.Get(oauthLogin, h.showFlow)
	r.Post(oauthLogin, h.limitOr("login", h.loginRefused), h.handleFlow)
	r.Get(oauthForgot, h.showFlowForgot)
	r.Post(oauthForgot, h.limitOr("forgot", h.loginRefused), h.handleFlowForgot)
	r.Get(oauthSignup, h.showFlowSignup)
	r.Post(oauthSignup, h.limitOr("signup", h.loginRefused), h.handleFlowSignup)
	r.Get(oauthLoggedOut, h.showLoggedOut)
}

// serveProvider hands a request to the provider, with its tenant, origin
// and browser cookie in the context. A dependency that was away answers
// 503 (with Retry-After), whatever op made of it: an outage must not look
// like a bad client or token.
func (h *HTTP) serveProvider(c *fiber.Ctx) error {
	req := &oidcRequest{t: tenancy.Of(c), meta: MetaOf(c), cookie: c.Cookies(sessionCookie)}
	ctx := context.WithValue(c.UserContext(), oidcRequestKey{}, req)
	fasthttpadaptor.NewFastHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(op.ContextWithIssuer(ctx, h.svc.cfg.Issuer(req.t)))
		h.oidc.ServeHTTP(w, r)
	}))(c.Context())
	if req.err != nil {
		c.Response().Reset()
		return req.err
	}
	if path := c.Path(); path == oauthAuthorize || path == oauthCallback {
		if status := c.Response().StatusCode(); status >= 400 {
			// An authorization request that cannot go back to its app
			// (unknown app, unregistered redirect URI) ends here, on a
			// page for the user rather than op's plain text.
			msg := strings.TrimSpace(string(c.Response().Body()))
			c.Response().Reset()
			lang := pageLanguage(nil, c.Get(fiber.HeaderAcceptLanguage))
			return renderFlowPage(c, status, h.browserPage(c, lang, "failed", catalog[lang]["invalid_request"]+" "+oauthDescription(msg)), pageCSP)
		}
		h.addIssuer(c, req.t)
		return nil
	}
	oauthErrorAsJSON(c)
	return nil
}

// oauthErrorAsJSON turns op's plain-text refusals into OAuth error
// answers (RFC 6749 section 5.2, RFC 6750 section 3.1), and answers a
// client that failed to authenticate with 401 and a challenge, as RFC
// 6749 asks (op answers 400).
func oauthErrorAsJSON(c *fiber.Ctx) {
	res := &c.Response().Header
	if c.Response().StatusCode() < 400 {
		return
	}
	if !strings.HasPrefix(string(res.ContentType()), "text/plain") {
		if oauthErrorCode(c.Response().Body()) == "invalid_client" {
			c.Status(fiber.StatusUnauthorized)
			res.Set(fiber.HeaderWWWAuthenticate, `Basic realm="gatehouse"`)
		}
		return
	}
	code := "invalid_request"
	switch {
	case c.Path() == oauthUserinfo && c.Response().StatusCode() == fiber.StatusUnauthorized:
		code = "invalid_token"
		res.Set(fiber.HeaderWWWAuthenticate, `Bearer error="invalid_token"`)
	case c.Response().StatusCode() == fiber.StatusUnauthorized:
		code = "invalid_client"
	}
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": strings.TrimSpace(string(c.Response().Body()))})
	c.Response().SetBodyRaw(b)
	res.SetContentType(fiber.MIMEApplicationJSON)
}

// addIssuer adds the iss parameter (RFC 9207) to an authorization
// response: a redirect back to the app, not to the hosted sign-in.
func (h *HTTP) addIssuer(c *fiber.Ctx, t *tenancy.Tenant) {
	if s := c.Response().StatusCode(); s != fiber.StatusFound && s != fiber.StatusSeeOther {
		return
	}
	loc := string(c.Response().Header.Peek(fiber.HeaderLocation))
	if strings.HasPrefix(loc, oauthLogin) {
		return
	}
	u, err := url.Parse(loc)
	if err != nil {
		return
	}
	// The answer's parameters are in the query, or in the fragment for a
	// refusal of a request that asked for fragment responses.
	if u.Fragment != "" {
		f, err := url.ParseQuery(u.Fragment)
		if err != nil {
			return
		}
		f.Set("iss", h.svc.cfg.Issuer(t))
		u.Fragment = f.Encode()
	} else {
		q := u.Query()
		q.Set("iss", h.svc.cfg.Issuer(t))
		u.RawQuery = q.Encode()
	}
	c.Response().Header.Set(fiber.HeaderLocation, u.String())
}

// handleDiscovery serves the tenant's provider metadata: op's, with what
// op does not say (RFC 9207's iss parameter) and without what Gatehouse
// does not offer (plain PKCE, the device flow).
func (h *HTTP) handleDiscovery(c *fiber.Ctx) error {
	t := tenancy.Of(c)
	req := &oidcRequest{t: t}
	ctx := op.ContextWithIssuer(context.WithValue(c.UserContext(), oidcRequestKey{}, req), h.svc.cfg.Issuer(t))
	d := op.CreateDiscoveryConfig(ctx, h.provider, h.provider.Storage())
	d.DeviceAuthorizationEndpoint = ""
	d.CheckSessionIframe = ""
	d.CodeChallengeMethodsSupported = []oidc.CodeChallengeMethod{oidc.CodeChallengeMethodS256}
	d.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
	d.ResponseModesSupported = []string{string(oidc.ResponseModeQuery)}
	d.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeClientCredentials}
	d.ClaimsSupported = []string{"iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "azp", "at_hash", "c_hash",
		"name", "preferred_username", "email", "email_verified", "updated_at"}
	b, err := json.Marshal(struct {
		*oidc.DiscoveryConfiguration
		IssParameter bool `json:"authorization_response_iss_parameter_supported"`
	}{d, true})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(b)
}

// oauthDescription is what an answer of op's says went wrong: its
// error_description if it is an OAuth error, else its text.
func oauthDescription(body string) string {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal([]byte(body), &e) == nil && e.Error != "" {
		if e.Description != "" {
			return e.Description
		}
		return e.Error
	}
	return body
}

// oauthErrorCode is the error code of an OAuth error answer ("" if body
// is none).
func oauthErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error
}
