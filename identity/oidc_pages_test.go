package identity_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"
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
