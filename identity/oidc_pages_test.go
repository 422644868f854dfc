package identity_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/text/language"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

// TestSignInSpeaksTheUsersLanguage: the hosted sign-in is in German when
// the app asks for it (ui_locales) or the browser prefers it
// (Accept-Language), in English otherwise, errors included; its labels
// name their fields.
func TestSignInSpeaksTheUsersLanguage(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	iss := issuer(tn.Tenant)
	open := func(uiLocales, acceptLanguage string) (*browser, page) {
		b := e.browser()
		opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(oauth2.GenerateVerifier())}
		if uiLocales != "" {
			opts = append(opts, oauth2.SetAuthURLParam("ui_locales", uiLocales))
		}
		login := b.get(rp.config.AuthCodeURL("s", opts...)).redirected(t)
		req, _ := http.NewRequest("GET", iss+login.RequestURI(), nil)
		req.Header.Set("Accept-Language", acceptLanguage)
		res, err := b.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return b, b.read(res)
	}
	for _, c := range []struct {
		uiLocales, acceptLanguage, lang, button string
	}{
		{"", "", "en", "Sign in"},
		{"de", "", "de", "Anmelden"},
		{"", "de-DE,de;q=0.9,en;q=0.5", "de", "Anmelden"},
		{"fr de", "en", "de", "Anmelden"},
		{"fr", "en-GB", "en", "Sign in"},
		{"", "ja", "en", "Sign in"},
	} {
		_, p := open(c.uiLocales, c.acceptLanguage)
		if !strings.Contains(p.body, `<html lang="`+c.lang+`">`) || !strings.Contains(p.body, ">"+c.button+"</button>") {
			t.Errorf("ui_locales %q, Accept-Language %q: want %s: %.600s", c.uiLocales, c.acceptLanguage, c.lang, p.body)
		}
		for _, label := range []string{`<label for="email">`, `<label for="password">`} {
			if !strings.Contains(p.body, label) {
				t.Errorf("no %s", label)
			}
		}
	}
	b, p := open("de", "")
	wrong := b.post(iss+"/oauth/login", url.Values{"id": {p.field(t, "id")}, "csrf": {p.field(t, "csrf")}, "step": {"password"},
		"email": {userEmail}, "password": {"not-the-password-at-all"}})
	if wrong.status != 401 || !strings.Contains(wrong.body, "E-Mail-Adresse oder Passwort ist falsch.") {
		t.Fatalf("a wrong password in German: %d %.600s", wrong.status, wrong.body)
	}
}

// TestSignInOffersResetAndSignUp: from the hosted sign-in a user asks for
// a password-reset link and, on a tenant that allows it, creates an
// account; either way the flow goes on to the app once they sign in. An
// invitation-only tenant offers no sign-up.
func TestSignInOffersResetAndSignUp(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	iss := issuer(tn.Tenant)
	start := func() (*browser, page) {
		b := e.browser()
		login := b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t)
		return b, b.get(iss + login.RequestURI())
	}
	signIn := func(b *browser, p page, email, password string) {
		t.Helper()
		back := b.post(iss+"/oauth/login", url.Values{"id": {p.field(t, "id")}, "csrf": {p.field(t, "csrf")}, "step": {"password"},
			"email": {email}, "password": {password}}).redirected(t)
		if back.Path != "/oauth/authorize/callback" {
			t.Fatalf("signing in as %s went to %s", email, back)
		}
	}

	// Forgot: the link mails a reset link; the new password signs in.
	// (Addresses of this run's own: the mail catcher is shared.)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	forgetful, newcomer := "forgetful-"+run+"@signin-pages.test", "newcomer-"+run+"@signin-pages.test"
	e.signup("acme", forgetful, goodPassword)
	b, p := start()
	id := p.field(t, "id")
	if !strings.Contains(p.body, `href="/oauth/forgot?id=`+id+`"`) || !strings.Contains(p.body, `href="/oauth/signup?id=`+id+`"`) {
		t.Fatalf("the sign-in links to neither reset nor sign-up: %.800s", p.body)
	}
	form := b.get(iss + "/oauth/forgot?id=" + id)
	sent := b.post(iss+"/oauth/forgot", url.Values{"id": {id}, "csrf": {form.field(t, "csrf")}, "email": {forgetful}})
	if sent.status != 200 || !strings.Contains(sent.body, "a link to choose a new password is on its way") {
		t.Fatalf("forgot: %d %.600s", sent.status, sent.body)
	}
	var token string
	for _, m := range e.mails(forgetful, 2) { // the sign-up's confirmation, and this
		if strings.Contains(m.Text, "/account/reset-password") {
			token = m.Token(t, "/account/reset-password")
		}
	}
	const fresh = "another-Harbor-77-lantern"
	if r := e.send("POST", "acme", "/account/reset-password", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		url.Values{"token": {token}, "password": {fresh}, "confirm": {fresh}}.Encode()); r.status != 200 {
		t.Fatalf("reset: %d %.500s", r.status, r.body)
	}
	signIn(b, sent, forgetful, fresh)

	// Sign up: the account is made, its address confirmed by mail, and
	// it signs in.
	b, p = start()
	form = b.get(iss + "/oauth/signup?id=" + p.field(t, "id"))
	bad := b.post(iss+"/oauth/signup", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")},
		"email": {newcomer}, "password": {"short"}, "display_name": {"New"}})
	if bad.status != 400 || !strings.Contains(bad.body, "The password") {
		t.Fatalf("a short password: %d %.600s", bad.status, bad.body)
	}
	made := b.post(iss+"/oauth/signup", url.Values{"id": {form.field(t, "id")}, "csrf": {form.field(t, "csrf")},
		"email": {newcomer}, "password": {goodPassword}, "display_name": {"New"}})
	if made.status != 200 || !strings.Contains(made.body, "confirm your address") {
		t.Fatalf("sign-up: %d %.600s", made.status, made.body)
	}
	verify := e.mails(newcomer, 1)[0].Token(t, "/account/verify-email")
	e.send("POST", "acme", "/account/verify-email", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		url.Values{"token": {verify}}.Encode())
	signIn(b, made, newcomer, goodPassword)

	// An invitation-only tenant: no link, and the page refuses.
	invite := tenancy.SignupInvite
	if _, err := e.reg.UpdateSettings(context.Background(), "acme", tenancy.Settings{Signup: &invite}); err != nil {
		t.Fatal(err)
	}
	b, p = start()
	if strings.Contains(p.body, "/oauth/signup") {
		t.Fatalf("an invitation-only tenant offers sign-up: %.600s", p.body)
	}
	if r := b.get(iss + "/oauth/signup?id=" + p.field(t, "id")); r.status != 403 {
		t.Fatalf("sign-up page of an invitation-only tenant: %d", r.status)
	}
}

// TestLogoutWithoutHintAsksFirst: a logout no app vouched for (no
// id_token_hint) is a question to the user, not a link any site can use to
// sign them out; confirmed, it ends the browser's session and goes back to
// the app's registered URI; a forged confirmation does nothing.
func TestLogoutWithoutHintAsksFirst(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	b, tok := e.signedIn(rp)
	iss := issuer(tn.Tenant)
	params := url.Values{"client_id": {rp.config.ClientID}, "post_logout_redirect_uri": {"https://web.example.com/bye"}, "state": {"z"}}
	ask := b.get(iss + "/oauth/end_session?" + params.Encode())
	if ask.status != 200 || !strings.Contains(ask.body, "Sign out?") || ask.location != nil {
		t.Fatalf("logout without a hint: %d %v %.500s", ask.status, ask.location, ask.body)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err != nil {
		t.Fatalf("asking ended the session: %v", err)
	}
	// Another site's form: no CSRF token of this browser.
	forged := url.Values{"confirm": {"yes"}, "csrf": {"guess"}}
	for k, v := range params {
		forged[k] = v
	}
	if p := b.post(iss+"/oauth/end_session", forged); p.status != 403 {
		t.Fatalf("a forged confirmation: %d %v", p.status, p.location)
	}
	confirmed := url.Values{"confirm": {"yes"}, "csrf": {ask.field(t, "csrf")}}
	for k, v := range params {
		confirmed[k] = v
	}
	back := b.post(iss+"/oauth/end_session", confirmed).redirected(t)
	if back.String() != "https://web.example.com/bye?state=z" {
		t.Fatalf("confirmed logout went to %s", back)
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok)); err == nil {
		t.Fatal("the app's session outlived the confirmed logout")
	}
	login := b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t)
	if p := b.get(iss + login.RequestURI()); !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("after logout the browser is still signed in: %.300s", p.body)
	}
}

// TestPageCatalogsAreComplete: every text of the sign-in exists in every
// language it speaks (a missing one would show as nothing).
func TestPageCatalogsAreComplete(t *testing.T) {
	for lang, words := range identity.PageCatalog() {
		for key := range identity.PageCatalog()[language.English] {
			if words[key] == "" {
				t.Errorf("%s has no %q", lang, key)
			}
		}
		if len(words) != len(identity.PageCatalog()[language.English]) {
			t.Errorf("%s has %d texts; English has %d", lang, len(words), len(identity.PageCatalog()[language.English]))
		}
	}
}

// TestAccountPage: a user signs in to the account page, sees where they
// are signed in (an app's session too), ends that session, changes their
// password and signs out; every form needs the browser's CSRF token.
func TestAccountPage(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	rp := e.webRP(tn, "web")
	_, appTok := e.signedIn(rp)
	iss := issuer(tn.Tenant)
	b := e.browser()
	p := b.get(iss + "/account")
	if p.status != 200 || !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("the account page signed out: %d %.300s", p.status, p.body)
	}
	csrf := p.field(t, "csrf")
	form := func(v url.Values) page {
		v.Set("csrf", csrf)
		return b.post(iss+"/account", v)
	}
	if r := b.post(iss+"/account", url.Values{"csrf": {"forged"}, "step": {"login"}, "email": {userEmail}, "password": {goodPassword}}); r.status != 403 {
		t.Fatalf("a forged form: %d", r.status)
	}
	p = form(url.Values{"step": {"login"}, "email": {userEmail}, "password": {goodPassword}})
	if p.status != 200 || !strings.Contains(p.body, "&lt;"+userEmail+"&gt;") {
		t.Fatalf("signed in: %d %.600s", p.status, p.body)
	}
	// Three sessions: this browser, the one that signed in to the app,
	// and the app's; end the other two.
	ends := regexp.MustCompile(`name="session" value="([0-9a-f-]{36})"`).FindAllStringSubmatch(p.body, -1)
	if len(ends) != 2 || !strings.Contains(p.body, "This browser") {
		t.Fatalf("sessions: %d others listed: %.1500s", len(ends), p.body)
	}
	for _, end := range ends {
		if r := form(url.Values{"step": {"end_session"}, "session": {end[1]}}); r.status != 200 || !strings.Contains(r.body, "That session is ended.") {
			t.Fatalf("end session: %d %.300s", r.status, r.body)
		}
	}
	if _, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(appTok)); err == nil {
		t.Fatal("the app's session outlived its end on the account page")
	}
	// Another user's session cannot be named.
	if r := form(url.Values{"step": {"end_session"}, "session": {"00000000-0000-4000-8000-000000000000"}}); r.status != 404 {
		t.Fatalf("ending no session of mine: %d", r.status)
	}
	const fresh = "brand-New-Harbor-55"
	if r := form(url.Values{"step": {"password"}, "current_password": {"wrong-wrong-wrong"}, "new_password": {fresh}}); r.status != 401 {
		t.Fatalf("a wrong current password: %d", r.status)
	}
	if r := form(url.Values{"step": {"password"}, "current_password": {goodPassword}, "new_password": {fresh}}); r.status != 200 || !strings.Contains(r.body, "Your password is changed") {
		t.Fatalf("change password: %d %.300s", r.status, r.body)
	}
	e.login("acme", userEmail, fresh)
	if r := form(url.Values{"step": {"logout"}}); r.status != 200 || !strings.Contains(r.body, `name="password"`) {
		t.Fatalf("sign out: %d %.300s", r.status, r.body)
	}
	if r := form(url.Values{"step": {"password"}, "current_password": {fresh}, "new_password": {goodPassword}}); r.status != 401 {
		t.Fatalf("a form after signing out: %d", r.status)
	}
}

// TestTenantBrandsItsPages: an admin sets the pages' name, colour, links
// and logo; the sign-in and account pages show them (button text readable
// on the colour), the logo is served as the image its content is. Bad
// input names its field; SVG and oversized logos are refused; no one but
// an admin changes any of it, and another tenant's pages show none of it.
func TestTenantBrandsItsPages(t *testing.T) {
	e := newEnv(t)
	tn := e.oidcTenant("acme")
	e.oidcTenant("globex")
	rp := e.webRP(tn, "web")
	iss := issuer(tn.Tenant)
	for field, body := range map[string]map[string]any{
		"primary_color": {"primary_color": "red"},
		"terms_url":     {"terms_url": "http://acme.example.com/terms"},
		"display_name":  {"display_name": " padded "},
	} {
		p := e.problemOf(e.do("PUT", "acme", "/v1/admin/branding", tn.admin, body), 400)
		if len(p.Errors) != 1 || p.Errors[0].Field != field {
			t.Errorf("%v: %+v", body, p)
		}
	}
	e.must(200, "PUT", "acme", "/v1/admin/branding", tn.admin, map[string]any{"display_name": "Acme Portal",
		"primary_color": "#FFD400", "terms_url": "https://acme.example.com/terms", "privacy_url": "https://acme.example.com/privacy"})
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 100)...)
	logo := func(token string, body []byte) int {
		return e.send("PUT", "acme", "/v1/admin/branding/logo", map[string]string{"Authorization": "Bearer " + token, "Content-Type": "image/png"}, string(body)).status
	}
	if got := logo(tn.admin, []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`)); got != 415 {
		t.Fatalf("an SVG logo: %d", got)
	}
	if got := logo(tn.admin, append(png, make([]byte, 300<<10)...)); got != 413 {
		t.Fatalf("an oversized logo: %d", got)
	}
	if got := logo(tn.admin, png); got != 204 {
		t.Fatalf("a PNG logo: %d", got)
	}
	user := e.login("acme", userEmail, goodPassword).AccessToken
	if got := logo(user, png); got != 403 {
		t.Fatalf("a user's logo: %d", got)
	}
	e.must(403, "PUT", "acme", "/v1/admin/branding", user, map[string]any{"display_name": "Mine"})

	served := e.send("GET", "acme", "/branding/logo", nil, "")
	if served.status != 200 || served.header["Content-Type"] != "image/png" || served.header["X-Content-Type-Options"] != "nosniff" || !bytes.Equal(served.body, png) {
		t.Fatalf("the logo served: %d %v", served.status, served.header)
	}
	b := e.browser()
	login := b.get(rp.config.AuthCodeURL("s", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))).redirected(t)
	for _, p := range []page{b.get(iss + login.RequestURI()), b.get(iss + "/account")} {
		for _, want := range []string{"Acme Portal", "--primary: #ffd400", "--on-primary: #000000", `<img src="/branding/logo?v=`,
			`href="https://acme.example.com/terms"`, `href="https://acme.example.com/privacy"`} {
			if !strings.Contains(p.body, want) {
				t.Errorf("page %d lacks %q: %.900s", p.status, want, p.body)
			}
		}
	}
	// globex's pages know nothing of it.
	if r := e.send("GET", "globex", "/branding/logo", nil, ""); r.status != 404 {
		t.Fatalf("globex's logo: %d", r.status)
	}
	if r := e.send("GET", "globex", "/account", nil, ""); strings.Contains(string(r.body), "Acme Portal") || strings.Contains(string(r.body), "ffd400") {
		t.Fatal("globex's page shows acme's branding")
	}
}

// TestDiscoveryDocumentIsComplete: the provider metadata names every
// endpoint and what each supports, as the server really does it.
func TestDiscoveryDocumentIsComplete(t *testing.T) {
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	iss := issuer(tn)
	var d map[string]any
	e.must(200, "GET", "acme", "/.well-known/openid-configuration", "", nil).json(t, &d)
	for key, want := range map[string]any{
		"issuer": iss, "authorization_endpoint": iss + "/oauth/authorize", "token_endpoint": iss + "/oauth/token",
		"userinfo_endpoint": iss + "/oauth/userinfo", "introspection_endpoint": iss + "/oauth/introspect",
		"revocation_endpoint": iss + "/oauth/revoke", "end_session_endpoint": iss + "/oauth/end_session",
		"jwks_uri": iss + "/.well-known/jwks.json", "authorization_response_iss_parameter_supported": true,
		"code_challenge_methods_supported": []any{"S256"}, "response_types_supported": []any{"code"},
		"response_modes_supported":              []any{"query"},
		"token_endpoint_auth_methods_supported": []any{"none", "client_secret_basic", "client_secret_post", "private_key_jwt"},
		"grant_types_supported":                 []any{"authorization_code", "refresh_token", "client_credentials"},
		"id_token_signing_alg_values_supported": []any{"EdDSA", "RS256"},
		"scopes_supported":                      []any{"openid", "profile", "email", "offline_access"},
		"subject_types_supported":               []any{"public"},
		"ui_locales_supported":                  []any{"en", "de"},
	} {
		if got, _ := json.Marshal(d[key]); string(got) != func() string { b, _ := json.Marshal(want); return string(b) }() {
			t.Errorf("%s: %s; want %v", key, got, want)
		}
	}
	for _, key := range []string{"claims_supported", "introspection_endpoint_auth_methods_supported", "revocation_endpoint_auth_methods_supported"} {
		if d[key] == nil {
			t.Errorf("no %s", key)
		}
	}
	if d["device_authorization_endpoint"] != nil || d["check_session_iframe"] != nil {
		t.Errorf("endpoints that are not served: %v %v", d["device_authorization_endpoint"], d["check_session_iframe"])
	}
}
