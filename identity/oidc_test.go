package identity_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/tenancy"
)

// browser is a user agent for the hosted pages: it keeps cookies and
// shows each redirect rather than following it.
type browser struct {
	t *testing.T
	c *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := e.env.HTTPClient()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: e.t, c: c}
}

// page is an answer the browser got.
type page struct {
	status   int
	location *url.URL
	body     string
}

func (b *browser) get(u string) page {
	b.t.Helper()
	res, err := b.c.Get(u)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.read(res)
}

func (b *browser) post(u string, form url.Values) page {
	b.t.Helper()
	res, err := b.c.PostForm(u, form)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.read(res)
}

func (b *browser) read(res *http.Response) page {
	b.t.Helper()
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	p := page{status: res.StatusCode, body: string(body)}
	if loc, err := res.Location(); err == nil {
		p.location = loc
	}
	return p
}

var formField = regexp.MustCompile(`name="(id|csrf)" value="([^"]*)"`)

// field returns a hidden field of the page's form.
func (p page) field(t *testing.T, name string) string {
	t.Helper()
	for _, m := range formField.FindAllStringSubmatch(p.body, -1) {
		if m[1] == name {
			return m[2]
		}
	}
	t.Fatalf("no %s field in the page (%d): %s", name, p.status, p.body)
	return ""
}

// redirected asserts p is a redirect and returns where to.
func (p page) redirected(t *testing.T) *url.URL {
	t.Helper()
	if (p.status != http.StatusFound && p.status != http.StatusSeeOther) || p.location == nil {
		t.Fatalf("want a redirect, got %d: %s", p.status, p.body)
	}
	return p.location
}

// signIn follows an authorization URL through the hosted sign-in with
// email and password, and returns the redirect back to the app.
func (b *browser) signIn(authURL, email, password string) *url.URL {
	b.t.Helper()
	login := b.get(authURL).redirected(b.t)
	if login.Path != "/oauth/login" {
		b.t.Fatalf("authorize sent the browser to %s, not the sign-in", login)
	}
	iss := authURL[:strings.Index(authURL, "/oauth/")]
	form := b.get(iss + login.RequestURI())
	if form.status != 200 {
		b.t.Fatalf("sign-in page: %d %s", form.status, form.body)
	}
	next := b.post(iss+"/oauth/login", url.Values{
		"id": {form.field(b.t, "id")}, "csrf": {form.field(b.t, "csrf")}, "step": {"password"},
		"email": {email}, "password": {password},
	}).redirected(b.t)
	if next.Path != "/oauth/authorize/callback" {
		b.t.Fatalf("the sign-in sent the browser to %s, not the callback", next)
	}
	return b.get(iss + next.RequestURI()).redirected(b.t)
}

// oidcApp is a registered app with a Go relying party for it.
type oidcApp struct {
	provider *gooidc.Provider
	config   oauth2.Config
	ctx      context.Context // carries the HTTP client that reaches the env
}

// relyingParty registers app on tenant tn through its admin and sets up
// go-oidc and x/oauth2 for it, from the tenant's discovery document.
func (e *env) relyingParty(tn *tenancy.Tenant, admin string, app map[string]any) oidcApp {
	e.t.Helper()
	created := e.createApp(tn.Slug, admin, app)
	ctx := gooidc.ClientContext(context.Background(), e.env.HTTPClient())
	p, err := gooidc.NewProvider(ctx, issuer(tn))
	if err != nil {
		e.t.Fatalf("discovery: %v", err)
	}
	return oidcApp{provider: p, ctx: ctx, config: oauth2.Config{
		ClientID: created.ClientID, ClientSecret: created.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: created.RedirectURIs[0], Scopes: []string{gooidc.ScopeOpenID, "profile", "email", gooidc.ScopeOfflineAccess},
	}}
}

// TestCodeFlowWithGoClients runs the authorization code flow with PKCE as
// an unmodified Go app does (go-oidc, x/oauth2): discovery, the hosted
// sign-in, the code exchange, ID token verification, userinfo, refresh,
// revocation and logout.
func TestCodeFlowWithGoClients(t *testing.T) {
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, tenancy.SignupOpen)
	admin := e.adminOf(tn, "admin@acme.test")
	e.signup("acme", "ada@acme.test", goodPassword)
	rp := e.relyingParty(tn, admin, map[string]any{"name": "Web", "kind": "web", "first_party": true,
		"redirect_uris": []string{"https://web.example.com/callback"}, "grant_types": []string{"authorization_code", "refresh_token"},
		"scopes": []string{"openid", "profile", "email", "offline_access"}, "post_logout_redirect_uris": []string{"https://web.example.com/bye"}})

	verifier := oauth2.GenerateVerifier()
	authURL := rp.config.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), gooidc.Nonce("n0nce"))
	back := e.browser().signIn(authURL, "ada@acme.test", goodPassword)
	q := back.Query()
	if back.Host != "web.example.com" || q.Get("state") != "st4te" || q.Get("iss") != issuer(tn) || q.Get("code") == "" {
		t.Fatalf("the app got %s", back)
	}

	tok, err := rp.config.Exchange(rp.ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := rp.provider.Verifier(&gooidc.Config{ClientID: rp.config.ClientID}).Verify(rp.ctx, raw)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	var claims struct{ Email, Nonce string }
	if err := idt.Claims(&claims); err != nil || claims.Email != "ada@acme.test" || claims.Nonce != "n0nce" {
		t.Fatalf("ID token claims %+v (%v)", claims, err)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		t.Fatalf("at_hash: %v", err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("offline_access gave no refresh token")
	}

	info, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok))
	if err != nil || info.Email != "ada@acme.test" || info.Subject != idt.Subject {
		t.Fatalf("userinfo: %+v, %v", info, err)
	}
	// An app's token is the app's: it opens none of Gatehouse's own API.
	e.must(401, "GET", "acme", "/v1/me", tok.AccessToken, nil)

	// Refresh rotates; the spent token is reuse and ends the family.
	expired := *tok
	expired.Expiry = expired.Expiry.Add(-24 * 3600e9)
	fresh, err := rp.config.TokenSource(rp.ctx, &expired).Token()
	if err != nil || fresh.RefreshToken == "" || fresh.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v (%+v)", err, fresh)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(fresh)); err != nil {
		t.Fatalf("userinfo with the refreshed token: %v", err)
	}
	if _, err := rp.config.TokenSource(rp.ctx, &expired).Token(); err == nil {
		t.Fatal("a spent refresh token worked again")
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(fresh)); err == nil {
		t.Fatal("the family's tokens work after reuse of a spent refresh token")
	}
}

// TestAuthorizationCodeIsSingleUse: a code works once; presented again it
// is refused and revokes what its first exchange issued.
func TestAuthorizationCodeIsSingleUse(t *testing.T) {
	e, logs := newLoggingEnv(t)
	t.Cleanup(func() { t.Log(logs.String()) })
	tn := e.tenant("acme", tenancy.Shared, tenancy.SignupOpen)
	admin := e.adminOf(tn, "admin@acme.test")
	e.signup("acme", "ada@acme.test", goodPassword)
	rp := e.relyingParty(tn, admin, map[string]any{"name": "Web", "kind": "web", "first_party": true,
		"redirect_uris": []string{"https://web.example.com/callback"}})
	back := e.browser().signIn(rp.config.AuthCodeURL("s"), "ada@acme.test", goodPassword)
	code := back.Query().Get("code")
	tok, err := rp.config.Exchange(rp.ctx, code)
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	_, err = rp.config.Exchange(rp.ctx, code)
	if re, ok := err.(*oauth2.RetrieveError); !ok || re.ErrorCode != "invalid_grant" {
		t.Fatalf("replayed code: %v", err)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Fatal("the token of a replayed code still works")
	}
}

// TestAppsMayAskForRS256: an app registered with RS256 gets ID and access
// tokens signed with the tenant's RSA key (made on first need, published
// in the JWKS, rotated with the tenant's keys); the tenant's other apps
// keep EdDSA.
func TestAppsMayAskForRS256(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rsaApp := e.relyingParty(tn.Tenant, tn.admin, map[string]any{"name": "Legacy", "kind": "web", "first_party": true,
		"redirect_uris": []string{"https://legacy.example.com/cb"}, "id_token_signed_response_alg": "RS256"})
	edApp := e.webRP(tn, "web")
	alg := func(jwt string) string {
		t.Helper()
		h, _ := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[0])
		var head struct{ Alg, Kid string }
		json.Unmarshal(h, &head)
		return head.Alg + "/" + head.Kid
	}
	flow := func(rp oidcApp) (*oauth2.Token, string) {
		_, tok := e.signedIn(rp)
		raw, _ := tok.Extra("id_token").(string)
		if _, err := rp.provider.Verifier(&gooidc.Config{ClientID: rp.config.ClientID}).Verify(rp.ctx, raw); err != nil {
			t.Fatalf("ID token: %v", err)
		}
		if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err != nil {
			t.Fatalf("userinfo: %v", err)
		}
		return tok, raw
	}
	tok, id := flow(rsaApp)
	if !strings.HasPrefix(alg(id), "RS256/") || !strings.HasPrefix(alg(tok.AccessToken), "RS256/") {
		t.Fatalf("the RS256 app's tokens: %s, %s", alg(id), alg(tok.AccessToken))
	}
	tok2, id2 := flow(edApp)
	if !strings.HasPrefix(alg(id2), "EdDSA/") || !strings.HasPrefix(alg(tok2.AccessToken), "EdDSA/") {
		t.Fatalf("the EdDSA app's tokens: %s, %s", alg(id2), alg(tok2.AccessToken))
	}
	// Rotation makes a new RSA key too; the old one stays published, and
	// its tokens keep working.
	if _, err := e.keys.Rotate(context.Background(), tn.Tenant); err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct{ Kty, Kid, Alg string }
	}
	e.must(200, "GET", "acme", "/.well-known/jwks.json", "", nil).json(t, &jwks)
	rsaKeys := 0
	for _, k := range jwks.Keys {
		if k.Kty == "RSA" && k.Alg == "RS256" {
			rsaKeys++
		}
	}
	if rsaKeys != 2 {
		t.Fatalf("JWKS %+v; want the RSA key and its successor", jwks.Keys)
	}
	if _, err := rsaApp.provider.UserInfo(rsaApp.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("userinfo with a token of the replaced RSA key: %v", err)
	}
	tok3, id3 := flow(rsaApp)
	if alg(id3) == alg(id) || !strings.HasPrefix(alg(tok3.AccessToken), "RS256/") {
		t.Fatalf("after rotation the RS256 app's ID token is signed %s (before: %s)", alg(id3), alg(id))
	}
}
