package identity_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/gatehouse/gatehouse/tenancy"
)

// oidcTenant is a tenant with an admin and a user, for the protocol's
// tests.
type oidcTenant struct {
	*tenancy.Tenant
	admin string // the admin's access token
}

const userEmail = "ada@acme.test"

func (e *env) oidcTenant(slug string) oidcTenant {
	e.t.Helper()
	tn := e.tenant(slug, tenancy.Shared, tenancy.SignupOpen)
	admin := e.adminOf(tn, "admin@"+slug+".test")
	e.signup(slug, userEmail, goodPassword)
	return oidcTenant{tn, admin}
}

// webRP registers a first-party web app with refresh tokens on tn.
func (e *env) webRP(tn oidcTenant, name string) oidcApp {
	e.t.Helper()
	return e.relyingParty(tn.Tenant, tn.admin, map[string]any{"name": name, "kind": "web", "first_party": true,
		"redirect_uris": []string{"https://" + name + ".example.com/callback"}, "grant_types": []string{"authorization_code", "refresh_token"},
		"scopes": []string{"openid", "profile", "email", "offline_access"}, "post_logout_redirect_uris": []string{"https://" + name + ".example.com/bye"}})
}

// signedIn runs rp's flow for the test user in a new browser and returns
// the browser and the tokens.
func (e *env) signedIn(rp oidcApp) (*browser, *oauth2.Token) {
	e.t.Helper()
	b := e.browser()
	verifier := oauth2.GenerateVerifier()
	back := b.signIn(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), userEmail, goodPassword)
	tok, err := rp.config.Exchange(rp.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		e.t.Fatalf("exchange: %v", err)
	}
	return b, tok
}

// authorizeURL is tn's authorization endpoint with params.
func authorizeURL(tn *tenancy.Tenant, params map[string]string) string {
	q := url.Values{}
	for k, v := range params {
		q.Set(k, v)
	}
	return issuer(tn) + "/oauth/authorize?" + q.Encode()
}

// oauthError asserts err is an OAuth error answer with code.
func oauthError(t *testing.T, err error, code string) {
	t.Helper()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != code {
		t.Fatalf("want OAuth error %s, got %v", code, err)
	}
}

// TestAuthorizeRefusesWhatItCannotSendBack: an unknown app or a redirect
// URI that is not registered character for character ends on Gatehouse's
// error page; nothing redirects to the URI given, so the endpoint cannot
// be used as an open redirect.
func TestAuthorizeRefusesWhatItCannotSendBack(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	b := e.browser()
	for _, redirect := range []string{
		"https://evil.example.com/callback",
		"https://web.example.com/callback/",
		"https://web.example.com/callback?x=1",
		"https://WEB.example.com/callback",
		"http://web.example.com/callback",
		"https://web.example.com@evil.example.com/callback",
		"https://web.example.com/callback#x",
		"//evil.example.com/callback",
	} {
		p := b.get(authorizeURL(tn.Tenant, map[string]string{"client_id": rp.config.ClientID, "response_type": "code",
			"scope": "openid", "redirect_uri": redirect, "state": "s"}))
		if p.status != http.StatusBadRequest || p.location != nil || !strings.Contains(p.body, "Sign-in failed") {
			t.Errorf("redirect_uri %s: %d to %v: %.200s", redirect, p.status, p.location, p.body)
		}
	}
	p := b.get(authorizeURL(tn.Tenant, map[string]string{"client_id": "nosuchclientnosuchclient00", "response_type": "code",
		"scope": "openid", "redirect_uri": "https://web.example.com/callback"}))
	if p.status != http.StatusBadRequest || p.location != nil {
		t.Errorf("unknown client: %d to %v", p.status, p.location)
	}
}

// TestAuthorizeSendsItsRefusalsBackToTheApp: with a registered redirect
// URI, a request the provider refuses goes back to the app with the OAuth
// error, the state and the issuer.
func TestAuthorizeSendsItsRefusalsBackToTheApp(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	web := e.webRP(tn, "web")
	spa := e.relyingParty(tn.Tenant, tn.admin, map[string]any{"name": "SPA", "kind": "spa", "first_party": true,
		"redirect_uris": []string{"https://spa.example.com/cb"}})
	challenge := base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	b := e.browser()
	for _, c := range []struct {
		name  string
		app   oidcApp
		extra map[string]string
		want  string
	}{
		{"a public app without PKCE", spa, nil, "invalid_request"},
		{"plain PKCE", spa, map[string]string{"code_challenge": challenge, "code_challenge_method": "plain"}, "invalid_request"},
		{"PKCE without a method (plain)", web, map[string]string{"code_challenge": challenge}, "invalid_request"},
		{"a challenge that is no SHA-256", web, map[string]string{"code_challenge": "short", "code_challenge_method": "S256"}, "invalid_request"},
		{"response_type token", web, map[string]string{"response_type": "token"}, "unauthorized_client"},
		{"no openid scope", web, map[string]string{"scope": "profile"}, "invalid_scope"},
		{"response_mode fragment", web, map[string]string{"response_mode": "fragment"}, "invalid_request"},
		{"prompt=none without a session", web, map[string]string{"prompt": "none", "code_challenge": challenge, "code_challenge_method": "S256"}, "login_required"},
	} {
		params := map[string]string{"client_id": c.app.config.ClientID, "response_type": "code", "scope": "openid",
			"redirect_uri": c.app.config.RedirectURL, "state": "st"}
		for k, v := range c.extra {
			params[k] = v
		}
		p := b.get(authorizeURL(tn.Tenant, params))
		if p.location != nil && p.location.Path == "/oauth/login" { // prompt=none is decided there
			p = b.get(issuer(tn.Tenant) + p.location.RequestURI())
		}
		if p.location == nil {
			t.Errorf("%s: %d %.300s", c.name, p.status, p.body)
			continue
		}
		q := p.location.Query()
		if p.location.Fragment != "" { // the refusal of response_mode=fragment
			q, _ = url.ParseQuery(p.location.Fragment)
		}
		back := *p.location
		back.RawQuery, back.Fragment = "", ""
		if back.String() != c.app.config.RedirectURL || q.Get("error") != c.want || q.Get("state") != "st" || q.Get("iss") != issuer(tn.Tenant) {
			t.Errorf("%s: sent back to %s; want error %s", c.name, p.location, c.want)
		}
	}
}

// TestCodesAreBoundToTheirAppRedirectAndVerifier: a code is refused to
// another app, with another redirect URI or verifier, and once expired.
func TestCodesAreBoundToTheirAppRedirectAndVerifier(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	other := e.webRP(tn, "other")
	code := func() (string, string) {
		verifier := oauth2.GenerateVerifier()
		back := e.browser().signIn(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), userEmail, goodPassword)
		return back.Query().Get("code"), verifier
	}

	c, v := code()
	_, err := other.config.Exchange(rp.ctx, c, oauth2.VerifierOption(v))
	oauthError(t, err, "invalid_grant")

	c, v = code()
	moved := rp.config
	moved.RedirectURL = "https://web.example.com/elsewhere"
	_, err = moved.Exchange(rp.ctx, c, oauth2.VerifierOption(v))
	oauthError(t, err, "invalid_grant")

	c, _ = code()
	_, err = rp.config.Exchange(rp.ctx, c, oauth2.VerifierOption(oauth2.GenerateVerifier()))
	oauthError(t, err, "invalid_grant")
	_, err = rp.config.Exchange(rp.ctx, c)
	oauthError(t, err, "invalid_request") // no verifier at all

	c, v = code()
	if _, err := e.admin.Exec(context.Background(), "update app.oidc_auth_requests set expires_at = now() - interval '1 second' where code_hash is not null and exchanged_at is null"); err != nil {
		t.Fatal(err)
	}
	_, err = rp.config.Exchange(rp.ctx, c, oauth2.VerifierOption(v))
	oauthError(t, err, "invalid_grant")

	// Each refusal left the code's request as it was: a good exchange of
	// a fresh code still works.
	c, v = code()
	if _, err := rp.config.Exchange(rp.ctx, c, oauth2.VerifierOption(v)); err != nil {
		t.Fatalf("a good exchange after the refusals: %v", err)
	}
}

// TestClientAuthenticationAndDisabledApps: a wrong secret is
// invalid_client; a disabled app can neither start a sign-in nor
// exchange, and the tokens it has stop working.
func TestClientAuthenticationAndDisabledApps(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	verifier := oauth2.GenerateVerifier()
	back := e.browser().signIn(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), userEmail, goodPassword)
	wrong := rp.config
	wrong.ClientSecret = "not-the-secret"
	_, err := wrong.Exchange(rp.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	oauthError(t, err, "invalid_client")
	if re := err.(*oauth2.RetrieveError); re.Response.StatusCode != 401 || re.Response.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("a wrong secret: %d, WWW-Authenticate %q; want 401 with a challenge (RFC 6749, 5.2)", re.Response.StatusCode, re.Response.Header.Get("WWW-Authenticate"))
	}
	tok, err := rp.config.Exchange(rp.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("the right secret after a wrong one: %v", err)
	}

	var apps struct {
		Apps []struct {
			ID       string
			ClientID string `json:"client_id"`
		}
	}
	e.must(200, "GET", "acme", "/v1/admin/apps", tn.admin, nil).json(t, &apps)
	for _, a := range apps.Apps {
		if a.ClientID == rp.config.ClientID {
			e.must(200, "PATCH", "acme", "/v1/admin/apps/"+a.ID, tn.admin, map[string]any{"disabled": true})
		}
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Error("userinfo answers for a disabled app's token")
	}
	expired := *tok
	expired.Expiry = expired.Expiry.Add(-48 * 3600e9)
	_, err = rp.config.TokenSource(rp.ctx, &expired).Token()
	oauthError(t, err, "invalid_client")
	p := e.browser().get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)))
	if p.status != http.StatusBadRequest || p.location != nil {
		t.Errorf("a disabled app's authorization: %d to %v", p.status, p.location)
	}
}

// TestRefreshTokensBelongToTheirApp: an app's refresh token is refused by
// another app of the tenant and by Gatehouse's own refresh endpoint, and
// neither refusal spends it.
func TestRefreshTokensBelongToTheirApp(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	other := e.webRP(tn, "other")
	_, tok := e.signedIn(rp)
	expired := *tok
	expired.Expiry = expired.Expiry.Add(-48 * 3600e9)
	_, err := other.config.TokenSource(rp.ctx, &expired).Token()
	oauthError(t, err, "invalid_grant")
	e.must(401, "POST", "acme", "/v1/auth/token/refresh", "", map[string]string{"refresh_token": tok.RefreshToken})
	if _, err := rp.config.TokenSource(rp.ctx, &expired).Token(); err != nil {
		t.Fatalf("the app's own refresh after the refusals: %v", err)
	}
}

// TestThirdPartyAppsAskForConsent: an app that is not first party shows
// the consent page; deny sends access_denied back; allow is remembered for
// the scopes allowed, asked again for more and with prompt=consent.
func TestThirdPartyAppsAskForConsent(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.relyingParty(tn.Tenant, tn.admin, map[string]any{"name": "Partner", "kind": "web",
		"redirect_uris": []string{"https://partner.example.com/cb"}})
	b := e.browser()
	iss := issuer(tn.Tenant)
	start := func(scope, prompt string) page {
		rp.config.Scopes = strings.Fields(scope)
		opts := []oauth2.AuthCodeOption{}
		if prompt != "" {
			opts = append(opts, oauth2.SetAuthURLParam("prompt", prompt))
		}
		return b.get(iss + b.get(rp.config.AuthCodeURL("st", opts...)).redirected(t).RequestURI())
	}
	consent := func(step string) *url.URL {
		form := start("openid email", "")
		if !strings.Contains(form.body, "Allow Partner?") {
			t.Fatalf("no consent page: %d %.300s", form.status, form.body)
		}
		return b.post(iss+"/oauth/login", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")}, "step": {step}}).redirected(t)
	}
	// Sign in first: the password step, then the consent page.
	form := start("openid email", "")
	p := b.post(iss+"/oauth/login", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")}, "step": {"password"},
		"email": {userEmail}, "password": {goodPassword}})
	if p.status != 200 || !strings.Contains(p.body, "See your email address") {
		t.Fatalf("after the password: %d %.300s", p.status, p.body)
	}
	if back := consent("deny"); back.Query().Get("error") != "access_denied" || back.Host != "partner.example.com" {
		t.Fatalf("deny sent the browser to %s", back)
	}
	if back := consent("consent"); back.Path != "/oauth/authorize/callback" {
		t.Fatalf("allow sent the browser to %s", back)
	}
	// Allowed: the same scopes go straight back, more ask again, and so
	// does prompt=consent.
	if p := start("openid email", ""); p.location == nil || p.location.Path != "/oauth/authorize/callback" {
		t.Fatalf("second sign-in: %d %v", p.status, p.location)
	}
	if p := start("openid email profile", ""); !strings.Contains(p.body, "See your name") {
		t.Fatalf("more scopes: %d %.300s", p.status, p.body)
	}
	if p := start("openid email", "consent"); !strings.Contains(p.body, "Allow Partner?") {
		t.Fatalf("prompt=consent: %d %.300s", p.status, p.body)
	}
	if p := start("openid email profile", "none"); p.location == nil || p.location.Query().Get("error") != "consent_required" {
		t.Fatalf("prompt=none needing consent: %d %v", p.status, p.location)
	}
}

// TestMachineAppsAndIntrospection: a machine app gets tokens for itself
// (client_credentials) and learns of its own tokens alone by
// introspection; a user's token is active to its app until revoked.
func TestMachineAppsAndIntrospection(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	machine := e.createApp("acme", tn.admin, map[string]any{"name": "Worker", "kind": "machine"})
	other := e.createApp("acme", tn.admin, map[string]any{"name": "Other", "kind": "machine"})
	cc := clientcredentials.Config{ClientID: machine.ClientID, ClientSecret: machine.ClientSecret, TokenURL: issuer(tn.Tenant) + "/oauth/token"}
	tok, err := cc.Token(rp.ctx)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	wrong := cc
	wrong.ClientSecret = "wrong"
	_, err = wrong.Token(rp.ctx)
	oauthError(t, err, "invalid_client")
	web := clientcredentials.Config{ClientID: rp.config.ClientID, ClientSecret: rp.config.ClientSecret, TokenURL: cc.TokenURL}
	_, err = web.Token(rp.ctx)
	oauthError(t, err, "unauthorized_client")

	introspect := func(id, secret, token string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("POST", issuer(tn.Tenant)+"/oauth/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		res, err := e.env.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != 200 {
			t.Fatalf("introspect: %d %v", res.StatusCode, err)
		}
		return out
	}
	if got := introspect(machine.ClientID, machine.ClientSecret, tok.AccessToken); got["active"] != true || got["sub"] != machine.ClientID || got["client_id"] != machine.ClientID {
		t.Fatalf("own token: %v", got)
	}
	if got := introspect(other.ClientID, other.ClientSecret, tok.AccessToken); got["active"] != false || len(got) != 1 {
		t.Fatalf("another app's token: %v", got)
	}

	_, user := e.signedIn(rp)
	if got := introspect(rp.config.ClientID, rp.config.ClientSecret, user.AccessToken); got["active"] != true || got["email"] != userEmail || got["scope"] == nil {
		t.Fatalf("user token: %v", got)
	}
	if got := introspect(machine.ClientID, machine.ClientSecret, user.AccessToken); got["active"] != false {
		t.Fatalf("a user token to another app: %v", got)
	}
	// Revoking the refresh token ends the session: the access token is
	// inactive at once, and userinfo refuses it.
	res, err := e.env.HTTPClient().PostForm(issuer(tn.Tenant)+"/oauth/revoke", url.Values{"token": {user.RefreshToken},
		"client_id": {rp.config.ClientID}, "client_secret": {rp.config.ClientSecret}})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", res, err)
	}
	if got := introspect(rp.config.ClientID, rp.config.ClientSecret, user.AccessToken); got["active"] != false {
		t.Fatalf("after revocation: %v", got)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(user)); err == nil {
		t.Fatal("userinfo answers after revocation")
	}
}

// TestLogoutEndsTheBrowserAndAppSessions: RP-initiated logout with the ID
// token ends the browser's session and the app's, and goes back only to a
// registered post-logout URI.
func TestLogoutEndsTheBrowserAndAppSessions(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	b, tok := e.signedIn(rp)
	idToken, _ := tok.Extra("id_token").(string)
	end := issuer(tn.Tenant) + "/oauth/end_session?"
	p := b.get(end + url.Values{"id_token_hint": {idToken}, "post_logout_redirect_uri": {"https://evil.example.com/"}}.Encode())
	if p.location != nil && p.location.Host == "evil.example.com" {
		t.Fatalf("logout went to an unregistered URI: %v", p.location)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("a refused logout ended the session: %v", err)
	}
	back := b.get(end + url.Values{"id_token_hint": {idToken}, "post_logout_redirect_uri": {"https://web.example.com/bye"}, "state": {"x"}}.Encode()).redirected(t)
	if back.String() != "https://web.example.com/bye?state=x" {
		t.Fatalf("logout sent the browser to %s", back)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Fatal("the app's token works after logout")
	}
	// The browser must sign in again.
	if login := b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t); login.Path != "/oauth/login" {
		t.Fatalf("after logout the browser went to %s", login)
	}
	form := b.get(issuer(tn.Tenant) + "/oauth/login?" + b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t).RawQuery)
	if !strings.Contains(form.body, `name="password"`) {
		t.Fatalf("after logout the sign-in did not ask for the password: %.300s", form.body)
	}
}

// TestOneTenantsCodesAndTokensAreRefusedByAnother: every endpoint of
// tenant B refuses what tenant A issued (a code, an access token, a
// refresh token, an ID token), and the refusals change nothing at A.
func TestOneTenantsCodesAndTokensAreRefusedByAnother(t *testing.T) {
	e := newEnv(t)
	a := e.oidcTenant("acme")
	b := e.oidcTenant("globex")
	rpA := e.webRP(a, "web")
	rpB := e.webRP(b, "web")
	verifier := oauth2.GenerateVerifier()
	back := e.browser().signIn(rpA.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), userEmail, goodPassword)

	// A's code at B's token endpoint, with A's client (B knows no such
	// client) or B's (B knows no such code).
	atB := rpA.config
	atB.Endpoint = rpB.config.Endpoint
	_, err := atB.Exchange(rpA.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	oauthError(t, err, "invalid_client")
	_, err = rpB.config.Exchange(rpB.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	oauthError(t, err, "invalid_grant")
	tok, err := rpA.config.Exchange(rpA.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("A's own exchange after B refused its code: %v", err)
	}

	// A's access token at B's userinfo and introspection.
	if _, err := rpB.provider.UserInfo(rpB.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Error("B's userinfo answered for A's token")
	}
	req, _ := http.NewRequest("POST", issuer(b.Tenant)+"/oauth/introspect", strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(rpB.config.ClientID, rpB.config.ClientSecret)
	res, err := e.env.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var in map[string]any
	json.NewDecoder(res.Body).Decode(&in)
	res.Body.Close()
	if in["active"] != false || len(in) != 1 {
		t.Errorf("B's introspection of A's token: %v", in)
	}
	// A's refresh token at B: refused, and not revoked by B's revocation.
	expired := *tok
	expired.Expiry = expired.Expiry.Add(-48 * 3600e9)
	_, err = (&oauth2.Config{ClientID: rpB.config.ClientID, ClientSecret: rpB.config.ClientSecret, Endpoint: rpB.config.Endpoint}).TokenSource(rpB.ctx, &expired).Token()
	oauthError(t, err, "invalid_grant")
	e.env.HTTPClient().PostForm(issuer(b.Tenant)+"/oauth/revoke", url.Values{"token": {tok.RefreshToken},
		"client_id": {rpB.config.ClientID}, "client_secret": {rpB.config.ClientSecret}})
	// A's ID token as B's logout hint.
	idToken, _ := tok.Extra("id_token").(string)
	p := e.browser().get(issuer(b.Tenant) + "/oauth/end_session?" + url.Values{"id_token_hint": {idToken}}.Encode())
	if p.status < 400 {
		t.Errorf("B's logout took A's ID token: %d %v", p.status, p.location)
	}
	// B's verifier refuses A's ID token.
	if _, err := rpB.provider.Verifier(&gooidc.Config{ClientID: rpB.config.ClientID}).Verify(rpB.ctx, idToken); err == nil {
		t.Error("B's keys verify A's ID token")
	}
	// Nothing of it touched A.
	if _, err := rpA.provider.UserInfo(rpA.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("A's token after B refused it: %v", err)
	}
	if _, err := rpA.config.TokenSource(rpA.ctx, &expired).Token(); err != nil {
		t.Fatalf("A's refresh after B refused it: %v", err)
	}
}

// TestPrivateKeyJWTClients: an app that registered a JWKS proves itself
// with a signed assertion; an assertion by another key, for another
// audience or expired is invalid_client, and so is a secret.
func TestPrivateKeyJWTClients(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	rp := e.relyingParty(tn.Tenant, tn.admin, map[string]any{"name": "Signed", "kind": "web", "first_party": true,
		"redirect_uris": []string{"https://signed.example.com/cb"}, "token_endpoint_auth_method": "private_key_jwt",
		"jwks": jwks(edJWK(pub, "k1"))})
	iss := issuer(tn.Tenant)
	assertion := func(key ed25519.PrivateKey, aud string, exp time.Duration, drop ...string) string {
		claims := jwt.MapClaims{"iss": rp.config.ClientID, "sub": rp.config.ClientID, "aud": aud, "jti": rand.Text(),
			"iat": time.Now().Unix(), "exp": time.Now().Add(exp).Unix()}
		for _, k := range drop {
			delete(claims, k)
		}
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exchange := func(auth url.Values) (int, map[string]any) {
		verifier := oauth2.GenerateVerifier()
		back := e.browser().signIn(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), userEmail, goodPassword)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
			"redirect_uri": {rp.config.RedirectURL}, "code_verifier": {verifier}}
		for k, v := range auth {
			form[k] = v
		}
		res, err := e.env.HTTPClient().PostForm(iss+"/oauth/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var out map[string]any
		json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	with := func(a string) url.Values {
		return url.Values{"client_assertion_type": {jwtBearer}, "client_assertion": {a}, "client_id": {rp.config.ClientID}}
	}
	good := assertion(priv, iss, time.Minute)
	if code, out := exchange(with(good)); code != 200 || out["id_token"] == nil {
		t.Fatalf("a good assertion: %d %v", code, out)
	}
	for name, auth := range map[string]url.Values{
		"the same assertion again": with(good),
		"another key":              with(assertion(stranger, iss, time.Minute)),
		"another audience":         with(assertion(priv, "https://globex.gatehouse.test", time.Minute)),
		"expired":                  with(assertion(priv, iss, -time.Minute)),
		"valid for a year":         with(assertion(priv, iss, 365*24*time.Hour)),
		"no iat":                   with(assertion(priv, iss, time.Minute, "iat")),
		"no jti":                   with(assertion(priv, iss, time.Minute, "jti")),
		"a secret instead":         {"client_id": {rp.config.ClientID}, "client_secret": {"whatever"}},
	} {
		if code, out := exchange(auth); code < 400 || out["access_token"] != nil {
			t.Errorf("%s: %d %v", name, code, out)
		}
	}
}

// TestSignInAgainWhenTheAppAsks: a signed-in browser goes straight back,
// unless the app asks for a fresh sign-in (prompt=login, or max_age
// passed); login_hint fills the address in.
func TestSignInAgainWhenTheAppAsks(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	b, _ := e.signedIn(rp)
	iss := issuer(tn.Tenant)
	next := func(params ...string) page {
		opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(oauth2.GenerateVerifier())}
		for i := 0; i < len(params); i += 2 {
			opts = append(opts, oauth2.SetAuthURLParam(params[i], params[i+1]))
		}
		return b.get(iss + b.get(rp.config.AuthCodeURL("s", opts...)).redirected(t).RequestURI())
	}
	if p := next(); p.location == nil || p.location.Path != "/oauth/authorize/callback" {
		t.Fatalf("signed in: %d %v", p.status, p.location)
	}
	if p := next("max_age", "3600"); p.location == nil || p.location.Path != "/oauth/authorize/callback" {
		t.Fatalf("max_age an hour: %d %v", p.status, p.location)
	}
	if _, err := e.admin.Exec(context.Background(), "update app.sessions set created_at = now() - interval '2 minutes' where cookie_hash is not null"); err != nil {
		t.Fatal(err)
	}
	for _, params := range [][]string{{"prompt", "login"}, {"max_age", "60"}, {"max_age", "0"}} {
		p := next(params...)
		if p.status != 200 || !strings.Contains(p.body, `name="password"`) {
			t.Errorf("%v: no sign-in form: %d %v", params, p.status, p.location)
		}
	}
	if p := next("prompt", "login", "login_hint", "hint@acme.test"); !strings.Contains(p.body, `value="hint@acme.test"`) {
		t.Errorf("login_hint not filled in: %.400s", p.body)
	}
	if p := next("prompt", "none", "max_age", "60"); p.location == nil || p.location.Query().Get("error") != "login_required" {
		t.Errorf("prompt=none past max_age: %d %v", p.status, p.location)
	}
	// Signing in again goes on to the app.
	form := next("prompt", "login")
	back := b.post(iss+"/oauth/login", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")}, "step": {"password"},
		"email": {userEmail}, "password": {goodPassword}}).redirected(t)
	if back.Path != "/oauth/authorize/callback" {
		t.Fatalf("after signing in again: %s", back)
	}
}

// TestCallbackAnswersOnlyTheBrowserThatSignedIn: the callback's answer
// carries the code, so another browser that learnt the request's id gets
// nothing from it, and the rightful browser still gets its code.
func TestCallbackAnswersOnlyTheBrowserThatSignedIn(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	iss := issuer(tn.Tenant)
	b := e.browser()
	login := b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t)
	form := b.get(iss + login.RequestURI())
	callback := b.post(iss+"/oauth/login", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")}, "step": {"password"},
		"email": {userEmail}, "password": {goodPassword}}).redirected(t)
	stolen := e.browser().get(iss + callback.RequestURI())
	if stolen.location != nil && stolen.location.Query().Get("code") != "" {
		t.Fatalf("another browser got the code: %v", stolen.location)
	}
	if back := b.get(iss + callback.RequestURI()).redirected(t); back.Query().Get("code") == "" {
		t.Fatalf("the rightful browser got no code: %v", back)
	}
}

// TestReviewedBypassesAreClosed: a consent form is no way around the
// fresh sign-in an app asked for; a repeated or another user's
// id_token_hint signs no one out unasked; a session's id is no token to
// revoke; Gatehouse's own revocation leaves apps' families alone; a
// malformed code challenge is the app's error, not the server's.
func TestReviewedBypassesAreClosed(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.relyingParty(tn.Tenant, tn.admin, map[string]any{"name": "Partner", "kind": "web",
		"redirect_uris": []string{"https://partner.example.com/cb"}, "grant_types": []string{"authorization_code", "refresh_token"},
		"scopes": []string{"openid", "email", "offline_access"}})
	iss := issuer(tn.Tenant)

	// Signed in an hour ago; the app asks for a fresh sign-in; the
	// browser posts the consent step instead of the password.
	b := e.browser()
	login := b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t)
	form := b.get(iss + login.RequestURI())
	b.post(iss+"/oauth/login", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")}, "step": {"password"},
		"email": {userEmail}, "password": {goodPassword}})
	if _, err := e.admin.Exec(context.Background(), "update app.sessions set created_at = now() - interval '1 hour' where cookie_hash is not null"); err != nil {
		t.Fatal(err)
	}
	login = b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("max_age", "60"))).redirected(t)
	form = b.get(iss + login.RequestURI())
	p := b.post(iss+"/oauth/login", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")}, "step": {"consent"}})
	if p.location != nil || !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("consent instead of the fresh sign-in: %d %v", p.status, p.location)
	}

	// Logout hints: repeated, or another user's.
	web := e.webRP(tn, "web")
	victim, tok := e.signedIn(web)
	e.signup("acme", "mallory@acme.test", goodPassword)
	mallory := e.browser()
	verifier := oauth2.GenerateVerifier()
	back := mallory.signIn(web.config.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)), "mallory@acme.test", goodPassword)
	mtok, err := web.config.Exchange(web.ctx, back.Query().Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatal(err)
	}
	hint, _ := mtok.Extra("id_token").(string)
	if r := victim.get(iss + "/oauth/end_session?id_token_hint=x&id_token_hint="); r.status != 400 {
		t.Fatalf("a repeated hint: %d %v", r.status, r.location)
	}
	victim.get(iss + "/oauth/end_session?" + url.Values{"id_token_hint": {hint}}.Encode())
	if _, err := web.provider.UserInfo(web.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("mallory's hint ended the victim's app session: %v", err)
	}
	login = victim.get(web.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t)
	if login.Path != "/oauth/login" {
		t.Fatalf("authorize sent the victim to %s", login)
	}
	if r := victim.get(iss + login.RequestURI()); r.location == nil || r.location.Path != "/oauth/authorize/callback" {
		t.Fatalf("mallory's hint signed the victim's browser out: %d %v", r.status, r.location)
	}

	// A session id is no token: revoking it changes nothing.
	var claims struct{ JTI string }
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.AccessToken, ".")[1])
	json.Unmarshal(payload, &claims)
	forged := strings.Split(claims.JTI, ".")[0] + ".0.x"
	res, err := e.env.HTTPClient().PostForm(iss+"/oauth/revoke", url.Values{"token": {forged},
		"client_id": {web.config.ClientID}, "client_secret": {web.config.ClientSecret}})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", res, err)
	}
	if _, err := web.provider.UserInfo(web.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("a session id revoked its session: %v", err)
	}
	// Gatehouse's own revocation leaves the app's family alone.
	e.must(200, "POST", "acme", "/v1/auth/token/revoke", "", map[string]string{"token": tok.RefreshToken})
	if _, err := web.provider.UserInfo(web.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("Gatehouse's revocation ended an app's family: %v", err)
	}

	// A challenge with a line break: the app's error.
	p = e.browser().get(authorizeURL(tn.Tenant, map[string]string{"client_id": rp.config.ClientID, "response_type": "code", "scope": "openid",
		"redirect_uri": rp.config.RedirectURL, "code_challenge": "\n" + strings.Repeat("a", 42), "code_challenge_method": "S256"}))
	if p.location == nil || p.location.Query().Get("error") != "invalid_request" {
		t.Fatalf("a challenge with a line break: %d %v", p.status, p.location)
	}
}
