package identity_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestBrowserSessionsUseHostCookiesAndCSRF(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	e.signup("acme", "web@example.com", goodPassword)
	jsonH := map[string]string{"Content-Type": "application/json"}
	creds := `{"email":"web@example.com","password":"` + goodPassword + `"}`

	r := e.send("POST", "acme", "/v1/auth/session", jsonH, creds)
	if r.status != 200 {
		t.Fatalf("browser login: %d %s", r.status, r.body)
	}
	set := r.header["Set-Cookie"]
	for _, attr := range []string{"__Host-gatehouse=", "HttpOnly", "secure", "SameSite=Lax", "path=/"} {
		if !strings.Contains(strings.ToLower(set), strings.ToLower(attr)) {
			t.Fatalf("Set-Cookie %q lacks %s", set, attr)
		}
	}
	if strings.Contains(strings.ToLower(set), "domain=") {
		t.Fatalf("Set-Cookie %q names a domain", set)
	}
	var b identity.BrowserSession
	if err := json.Unmarshal(r.body, &b); err != nil || len(b.CSRFToken) != 43 || strings.Contains(string(r.body), "cookie") {
		t.Fatalf("browser login body %s", r.body)
	}
	cookie := strings.SplitN(strings.SplitN(set, ";", 2)[0], "=", 2)[1]
	withCookie := func(extra map[string]string) map[string]string {
		h := map[string]string{"Cookie": "__Host-gatehouse=" + cookie, "Content-Type": "application/json"}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}

	if r := e.send("GET", "acme", "/v1/me", withCookie(nil), ""); r.status != 200 {
		t.Fatalf("GET /v1/me with the cookie: %d %s", r.status, r.body)
	}
	// State changes need the CSRF token: a cross-site form would carry
	// the cookie but cannot know the token.
	patch := `{"display_name":"Web"}`
	e.problemOf(e.send("PATCH", "acme", "/v1/me", withCookie(nil), patch), 403)
	e.problemOf(e.send("PATCH", "acme", "/v1/me", withCookie(map[string]string{"X-CSRF-Token": "guess"}), patch), 403)
	if r := e.send("PATCH", "acme", "/v1/me", withCookie(map[string]string{"X-CSRF-Token": b.CSRFToken}), patch); r.status != 200 {
		t.Fatalf("PATCH with the CSRF token: %d %s", r.status, r.body)
	}
	// The cookie means nothing on another tenant's host.
	e.problemOf(e.send("GET", "globex", "/v1/me", withCookie(nil), ""), 401)

	// Logout ends the session and clears the cookie.
	r = e.send("POST", "acme", "/v1/auth/logout", withCookie(map[string]string{"X-CSRF-Token": b.CSRFToken}), "")
	if r.status != 204 || !strings.Contains(r.header["Set-Cookie"], "__Host-gatehouse=;") {
		t.Fatalf("logout: %d, Set-Cookie %q", r.status, r.header["Set-Cookie"])
	}
	e.problemOf(e.send("GET", "acme", "/v1/me", withCookie(nil), ""), 401)
	var stored int
	e.admin.QueryRow(context.Background(), "select count(*) from app.sessions where cookie_hash = sha256($1::bytea)", []byte(cookie)).Scan(&stored)
	if stored != 1 {
		t.Fatalf("%d sessions found by the cookie's hash, want 1", stored)
	}
	var inClear int
	e.admin.QueryRow(context.Background(), "select count(*) from app.sessions where encode(cookie_hash, 'escape') like '%'||$1||'%'", cookie).Scan(&inClear)
	if inClear != 0 {
		t.Fatal("the cookie is stored in the clear")
	}
}

func TestBrowserSessionsNeedHTTPSOffLocalhost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	if _, err := e.reg.AddDomain(context.Background(), "acme", "login.acme.test"); err != nil {
		t.Fatal(err)
	}
	e.signup("acme", "web@example.com", goodPassword)
	r := e.send("POST", "login.acme.test", "/v1/auth/session", map[string]string{"Content-Type": "application/json"},
		`{"email":"web@example.com","password":"`+goodPassword+`"}`)
	d := e.problemOf(r, 403)
	if !strings.Contains(d.Detail, "https") || r.header["Set-Cookie"] != "" {
		t.Fatalf("plain-http browser login on a custom domain: %q, Set-Cookie %q", d.Detail, r.header["Set-Cookie"])
	}
}
