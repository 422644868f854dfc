package identity_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/client"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestSignupLoginMe(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")

	e.must(202, "POST", "acme", "/v1/auth/signup", "", map[string]string{
		"email": "  Ada@Example.COM ", "password": goodPassword, "display_name": "Ada",
	})
	r := e.must(200, "POST", "acme", "/v1/auth/login", "", map[string]string{"email": "ADA@example.com", "password": goodPassword})
	var tok identity.Tokens
	r.json(t, &tok)
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 900 || len(tok.RefreshToken) != 43 || strings.Count(tok.AccessToken, ".") != 2 {
		t.Fatalf("tokens %+v", tok)
	}
	if r.header["Cache-Control"] != "no-store" {
		t.Fatalf("token response Cache-Control %q, want no-store", r.header["Cache-Control"])
	}
	var me identity.User
	e.must(200, "GET", "acme", "/v1/me", tok.AccessToken, nil).json(t, &me)
	if me.Email != "ada@example.com" || me.DisplayName != "Ada" || me.Role != "member" || me.Status != "active" || me.LastLoginAt == nil || me.EmailVerified {
		t.Fatalf("me %+v", me)
	}
	u := me
	e.must(200, "PATCH", "acme", "/v1/me", tok.AccessToken, map[string]string{"display_name": "Ada Lovelace"}).json(t, &me)
	if me.DisplayName != "Ada Lovelace" {
		t.Fatalf("after PATCH: %+v", me)
	}
	// Nothing stored in the clear.
	var stored string
	if err := e.admin.QueryRow(context.Background(), "select password_hash from app.users where id = $1", u.ID).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "$argon2id$") || strings.Contains(stored, goodPassword) {
		t.Fatalf("stored password %q", stored)
	}
	var inClear int
	e.admin.QueryRow(context.Background(), "select count(*) from app.refresh_tokens where encode(token_hash, 'escape') like '%'||$1||'%'", tok.RefreshToken).Scan(&inClear)
	if inClear != 0 {
		t.Fatal("refresh token stored in the clear")
	}
}

func TestLoginDoesNotRevealWhetherAnAccountExists(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "known@example.com", goodPassword)
	answers := map[string]problem.Details{}
	for name, creds := range map[string][2]string{
		"wrong password": {"known@example.com", "not-the-password-at-all"},
		"unknown email":  {"nobody@example.com", "not-the-password-at-all"},
		"malformed":      {"not an email", "not-the-password-at-all"},
	} {
		d := e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": creds[0], "password": creds[1]}), 401)
		d.RequestID, d.Instance = "", ""
		answers[name] = d
	}
	if !reflect.DeepEqual(answers["wrong password"], answers["unknown email"]) || !reflect.DeepEqual(answers["unknown email"], answers["malformed"]) {
		t.Fatalf("answers differ: %+v", answers)
	}
	// Both failures are audited; only the known account's names its actor.
	var failures, withActor int
	e.admin.QueryRow(context.Background(), "select count(*), count(actor_id) from app.audit_events where action = 'login' and outcome = 'failure'").Scan(&failures, &withActor)
	if failures != 3 || withActor != 1 {
		t.Fatalf("audited %d login failures (%d with an actor), want 3 (1)", failures, withActor)
	}
}

func TestTokensAndAccountsStayInTheirTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Silo, "")
	// The same email is two unrelated accounts.
	e.signup("acme", "same@example.com", goodPassword)
	e.signup("globex", "same@example.com", "another-Password-for-globex")
	acme := e.login("acme", "same@example.com", goodPassword)
	e.problemOf(e.do("POST", "globex", "/v1/auth/login", "", map[string]string{"email": "same@example.com", "password": goodPassword}), 401)
	globex := e.login("globex", "same@example.com", "another-Password-for-globex")

	// A token of one tenant is refused on the other's host.
	e.problemOf(e.do("GET", "globex", "/v1/me", acme.AccessToken, nil), 401)
	e.problemOf(e.do("GET", "acme", "/v1/me", globex.AccessToken, nil), 401)
	var a, g identity.User
	e.must(200, "GET", "acme", "/v1/me", acme.AccessToken, nil).json(t, &a)
	e.must(200, "GET", "globex", "/v1/me", globex.AccessToken, nil).json(t, &g)
	if a.ID == g.ID {
		t.Fatal("two tenants' accounts share an id")
	}
	// Each publishes only its own keys.
	var ka, kg struct{ Keys []identity.JWK }
	e.must(200, "GET", "acme", "/.well-known/jwks.json", "", nil).json(t, &ka)
	e.must(200, "GET", "globex", "/.well-known/jwks.json", "", nil).json(t, &kg)
	if len(ka.Keys) != 1 || len(kg.Keys) != 1 || ka.Keys[0].Kid == kg.Keys[0].Kid || ka.Keys[0].X == kg.Keys[0].X {
		t.Fatalf("key sets: %+v / %+v", ka.Keys, kg.Keys)
	}
}

func TestSignupByInvitationOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("closed", tenancy.Shared, tenancy.SignupInvite)
	d := e.problemOf(e.do("POST", "closed", "/v1/auth/signup", "", map[string]string{"email": "x@example.com", "password": goodPassword}), 403)
	if !strings.Contains(d.Detail, "invitation") {
		t.Fatalf("detail %q", d.Detail)
	}
	var n int
	e.admin.QueryRow(context.Background(), "select count(*) from app.users").Scan(&n)
	if n != 0 {
		t.Fatalf("%d users after a refused sign-up", n)
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "bye@example.com", goodPassword)
	tok := e.login("acme", "bye@example.com", goodPassword)
	e.must(204, "POST", "acme", "/v1/auth/logout", tok.AccessToken, nil)
	// The access token is still unexpired, but endpoints that check the
	// session refuse it at once.
	e.problemOf(e.do("GET", "acme", "/v1/me", tok.AccessToken, nil), 401)
	e.problemOf(e.do("POST", "acme", "/v1/auth/logout", tok.AccessToken, nil), 401)
}

func TestChangePasswordEndsOtherSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "pw@example.com", goodPassword)
	here := e.login("acme", "pw@example.com", goodPassword)
	there := e.login("acme", "pw@example.com", goodPassword)

	d := e.problemOf(e.do("POST", "acme", "/v1/me/password", here.AccessToken,
		map[string]string{"current_password": "wrong-current-password", "new_password": "brand-new-Password-77"}), 401)
	if !strings.Contains(d.Detail, "current password") {
		t.Fatalf("detail %q", d.Detail)
	}
	e.problemOf(e.do("POST", "acme", "/v1/me/password", here.AccessToken,
		map[string]string{"current_password": goodPassword, "new_password": "password1234"}), 400)
	e.must(204, "POST", "acme", "/v1/me/password", here.AccessToken,
		map[string]string{"current_password": goodPassword, "new_password": "brand-new-Password-77"})

	e.must(200, "GET", "acme", "/v1/me", here.AccessToken, nil)
	e.problemOf(e.do("GET", "acme", "/v1/me", there.AccessToken, nil), 401)
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "pw@example.com", "password": goodPassword}), 401)
	e.login("acme", "pw@example.com", "brand-new-Password-77")
}

func TestBadInputGetsPreciseProblems(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	signup := "/v1/auth/signup"
	tests := []struct {
		name, contentType, body string
		status                  int
		detail                  string
	}{
		{"not JSON", "text/plain", `{"email":"a@example.com"}`, 415, "application/json"},
		{"no content type", "", `{"email":"a@example.com"}`, 415, "application/json"},
		{"malformed", "application/json", `{"email":`, 400, "not valid JSON"},
		{"empty", "application/json", ``, 400, "empty"},
		{"an array", "application/json", `[1,2]`, 400, "JSON object"},
		{"unknown field", "application/json", `{"email":"a@example.com","password":"` + goodPassword + `","role":"admin"}`, 400, "role: is not a known field"},
		{"wrong type", "application/json", `{"email":42,"password":"x"}`, 400, "email: must be a string"},
		{"trailing data", "application/json", `{"email":"a@example.com","password":"` + goodPassword + `"} {}`, 400, "nothing after it"},
		{"missing fields", "application/json", `{}`, 400, "email: is required"},
		{"bad email", "application/json", `{"email":"a@@example","password":"` + goodPassword + `"}`, 400, "email: must be a valid email address"},
		{"short password", "application/json", `{"email":"a@example.com","password":"short"}`, 400, "password: must be at least 12 characters"},
		{"common password", "application/json", `{"email":"a@example.com","password":"1qaz2wsx3edc"}`, 400, "too common"},
		{"overlong name", "application/json", `{"email":"a@example.com","password":"` + goodPassword + `","display_name":"` + strings.Repeat("n", 201) + `"}`, 400, "display_name: must be at most 200 characters"},
		{"over the size limit", "application/json", `{"email":"` + strings.Repeat("a", 17<<10) + `"}`, 413, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.raw("POST", "acme", signup, tt.contentType, tt.body)
			d := e.problemOf(r, tt.status)
			if !strings.Contains(d.Detail, tt.detail) {
				t.Fatalf("detail %q, want it to say %q", d.Detail, tt.detail)
			}
		})
	}
	missing := e.problemOf(e.raw("POST", "acme", signup, "application/json", `{}`), 400)
	if len(missing.Errors) != 2 || missing.Errors[0].Field != "email" || missing.Errors[1].Field != "password" {
		t.Fatalf("missing fields reported as %+v", missing.Errors)
	}
	var n int
	e.admin.QueryRow(context.Background(), "select count(*) from app.users").Scan(&n)
	if n != 0 {
		t.Fatalf("%d users created by bad requests", n)
	}
	// No token, a malformed one, a wrong scheme.
	for _, auth := range []string{"", "Bearer", "Bearer not.a.token", "Basic YTpi"} {
		r := e.rawAuth("GET", "acme", "/v1/me", auth)
		e.problemOf(r, 401)
		if !strings.HasPrefix(r.header["Www-Authenticate"], "Bearer") {
			t.Errorf("%q: no WWW-Authenticate challenge", auth)
		}
	}
}

func TestAccessTokensVerifyWithThePublishedKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	acme := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "key@example.com", goodPassword)
	tok := e.login("acme", "key@example.com", goodPassword)

	var disc map[string]any
	e.must(200, "GET", "acme", "/.well-known/openid-configuration", "", nil).json(t, &disc)
	if disc["issuer"] != issuer(acme) || disc["jwks_uri"] != issuer(acme)+"/.well-known/jwks.json" {
		t.Fatalf("discovery %v", disc)
	}
	jwks := e.jwks("acme")
	want := identity.Expect{Issuer: issuer(acme), Audience: issuer(acme), Tenant: acme.ID}
	c, err := identity.VerifyAccessToken(ctx, tok.AccessToken, jwks, want)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject == "" || c.Session == "" || c.ID == "" || c.ExpiresAt.Sub(c.IssuedAt.Time) != 15*time.Minute {
		t.Fatalf("claims %+v", c)
	}
	// A SaaS app's client verifies it too: the JWKS, the issuer and the
	// tenant's id as the server gives them out.
	app, err := client.New(issuer(acme), client.Options{HTTPClient: &http.Client{Transport: inProcess{e, "acme"}}})
	if err != nil {
		t.Fatal(err)
	}
	if ac, err := app.VerifyAccessToken(ctx, tok.AccessToken); err != nil || ac.Subject != c.Subject || ac.Tenant != acme.ID.String() {
		t.Fatalf("identity/client: %+v, %v", ac, err)
	}

	// Rotation: a new key signs, the old one stays published until retired.
	if _, err := e.keys.Rotate(ctx, acme); err != nil {
		t.Fatal(err)
	}
	jwks = e.jwks("acme")
	if len(jwks) != 2 {
		t.Fatalf("%d published keys after rotation, want 2", len(jwks))
	}
	if _, err := identity.VerifyAccessToken(ctx, tok.AccessToken, jwks, want); err != nil {
		t.Fatalf("a token of the previous key no longer verifies: %v", err)
	}
	newTok := e.login("acme", "key@example.com", goodPassword)
	if kidOf(t, newTok.AccessToken) == kidOf(t, tok.AccessToken) {
		t.Fatal("the rotated-out key still signs")
	}
	if n, err := e.keys.Retire(ctx, acme, 0); err != nil || n != 1 {
		t.Fatalf("Retire = %d, %v; want 1", n, err)
	}
	jwks = e.jwks("acme")
	if _, err := identity.VerifyAccessToken(ctx, tok.AccessToken, jwks, want); problem.CodeOf(err) != problem.Unauthorized {
		t.Fatalf("a token of a retired key: %v, want Unauthorized", err)
	}
	if _, err := identity.VerifyAccessToken(ctx, newTok.AccessToken, jwks, want); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyAccessTokenRefusesForgeries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pub, priv, _ := ed25519.GenerateKey(nil)
	keys := staticKeys{"k1": pub}
	tenant := tenancy.ID{1}
	want := identity.Expect{Issuer: "https://acme.gatehouse.test", Audience: "https://acme.gatehouse.test", Tenant: tenant}
	base := func() identity.Claims {
		now := time.Now()
		return identity.Claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: want.Issuer, Audience: jwt.ClaimStrings{want.Audience}, Subject: "u1", ID: "j1",
				ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			},
			Tenant: tenant.String(), Session: "s1",
		}
	}
	sign := func(c identity.Claims, kid string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if _, err := identity.VerifyAccessToken(ctx, sign(base(), "k1"), keys, want); err != nil {
		t.Fatalf("a good token is refused: %v", err)
	}
	hmac := jwt.NewWithClaims(jwt.SigningMethodHS256, base())
	hmac.Header["kid"] = "k1"
	hmacSigned, _ := hmac.SignedString([]byte(pub)) // the classic key-confusion attack
	none := jwt.NewWithClaims(jwt.SigningMethodNone, base())
	none.Header["kid"] = "k1"
	noneSigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	mutate := func(f func(*identity.Claims)) string { c := base(); f(&c); return sign(c, "k1") }
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	otherKey := jwt.NewWithClaims(jwt.SigningMethodEdDSA, base())
	otherKey.Header["kid"] = "k1"
	otherSigned, _ := otherKey.SignedString(otherPriv)
	for name, tok := range map[string]string{
		"HS256 with the public key": hmacSigned,
		"alg none":                  noneSigned,
		"signed by another key":     otherSigned,
		"unknown kid":               sign(base(), "k2"),
		"no kid":                    sign(base(), ""),
		"expired":                   mutate(func(c *identity.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }),
		"no exp":                    mutate(func(c *identity.Claims) { c.ExpiresAt = nil }),
		"not yet valid":             mutate(func(c *identity.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }),
		"other issuer":              mutate(func(c *identity.Claims) { c.Issuer = "https://globex.gatehouse.test" }),
		"other audience":            mutate(func(c *identity.Claims) { c.Audience = jwt.ClaimStrings{"someone-else"} }),
		"other tenant":              mutate(func(c *identity.Claims) { c.Tenant = tenancy.ID{2}.String() }),
		"no session":                mutate(func(c *identity.Claims) { c.Session = "" }),
		"garbage":                   "a.b.c",
	} {
		if _, err := identity.VerifyAccessToken(ctx, tok, keys, want); problem.CodeOf(err) != problem.Unauthorized {
			t.Errorf("%s: %v, want Unauthorized", name, err)
		}
	}
	// Keys that cannot be had say nothing of the token: 503, never 401,
	// or a client would throw away a good token.
	for name, down := range map[string]identity.KeySource{
		"key store down":      failingKeys{errors.New("connection refused")},
		"key store timed out": failingKeys{context.DeadlineExceeded},
	} {
		_, err := identity.VerifyAccessToken(ctx, sign(base(), "k1"), down, want)
		if problem.CodeOf(err) != problem.Unavailable || problem.RetryAfterOf(err) <= 0 {
			t.Errorf("%s: %v, want Unavailable with Retry-After", name, err)
		}
	}
}

type failingKeys struct{ err error }

func (f failingKeys) PublicKey(context.Context, string) (ed25519.PublicKey, error) { return nil, f.err }

type staticKeys map[string]ed25519.PublicKey

func (s staticKeys) PublicKey(_ context.Context, kid string) (ed25519.PublicKey, error) {
	if k, ok := s[kid]; ok {
		return k, nil
	}
	return nil, identity.ErrUnknownKey
}

// inProcess carries a client's requests to the env's server as tenant
// slug's host.
type inProcess struct {
	e    *env
	slug string
}

func (p inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = p.slug + ".localhost"
	return p.e.app.Test(r, 30_000)
}

// jwks fetches a tenant's published keys over HTTP, as a SaaS app would.
func (e *env) jwks(slug string) staticKeys {
	e.t.Helper()
	var set struct{ Keys []identity.JWK }
	r := e.must(200, "GET", slug, "/.well-known/jwks.json", "", nil)
	r.json(e.t, &set)
	keys := staticKeys{}
	for _, k := range set.Keys {
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || k.Kty != "OKP" || k.Crv != "Ed25519" || k.Alg != "EdDSA" || len(x) != ed25519.PublicKeySize {
			e.t.Fatalf("bad JWK %+v", k)
		}
		keys[k.Kid] = x
	}
	return keys
}

func kidOf(t *testing.T, token string) string {
	t.Helper()
	tok, _, err := jwt.NewParser().ParseUnverified(token, &identity.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	return kid
}

// raw sends a body with a given content type.
func (e *env) raw(method, slug, path, contentType, body string) response {
	e.t.Helper()
	return e.send(method, slug, path, map[string]string{"Content-Type": contentType}, body)
}

func (e *env) rawAuth(method, slug, path, authorization string) response {
	e.t.Helper()
	return e.send(method, slug, path, map[string]string{"Authorization": authorization}, "")
}
