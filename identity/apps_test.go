package identity_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/app/apptest"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// createApp registers an app as token and returns it with its secret.
func (e *env) createApp(slug, token string, body map[string]any) identity.CreatedApp {
	e.t.Helper()
	var a identity.CreatedApp
	e.must(201, "POST", slug, "/v1/admin/apps", token, body).json(e.t, &a)
	return a
}

// webApp is the body of a web app's registration.
func webApp(name string) map[string]any {
	return map[string]any{"name": name, "kind": "web", "redirect_uris": []string{"https://" + name + ".example.com/callback"}}
}

// tenantOf returns the tenant of slug.
func (e *env) tenantOf(slug string) *tenancy.Tenant {
	e.t.Helper()
	tn, err := e.reg.Get(context.Background(), slug)
	if err != nil {
		e.t.Fatal(err)
	}
	return tn
}

// verifies reports whether secret authenticates client of t, and fails
// the test on an error other than the one refusal.
func (e *env) verifies(t *tenancy.Tenant, clientID, secret string) bool {
	e.t.Helper()
	err := e.svc.VerifyClientSecret(context.Background(), t, clientID, secret)
	if err != nil && (problem.CodeOf(err) != problem.Unauthorized || problem.MessageOf(err) != "invalid client credentials") {
		e.t.Fatalf("verify client secret: %v", err)
	}
	return err == nil
}

// adminOf signs up an admin of t, shared or silo (adminLogin confirms
// addresses in the shared database only), and returns its access token.
func (e *env) adminOf(t *tenancy.Tenant, email string) string {
	e.t.Helper()
	ctx := context.Background()
	e.signup(t.Slug, email, goodPassword)
	err := e.data.RawTx(ctx, t, func(tx queries.DBTX) error {
		_, err := tx.Exec(ctx, "update app.users set email_verified_at = now() where email = $1", email)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.svc.SetRole(ctx, t, email, identity.RoleAdmin); err != nil {
		e.t.Fatal(err)
	}
	return e.login(t.Slug, email, goodPassword).AccessToken
}

func (e *env) appCount() int {
	e.t.Helper()
	var n int
	if err := e.admin.QueryRow(context.Background(), "select count(*) from app.oidc_apps").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestAppRegistrationLifecycle: an admin registers each kind of app with
// its defaults, reads, changes, disables, rotates and deletes them; each
// change is audited with its actor and the chain stays whole.
func TestAppRegistrationLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@apps.test").AccessToken
	bossID := e.me("acme", boss).ID
	ctx := context.Background()

	r := e.must(201, "POST", "acme", "/v1/admin/apps", boss, webApp("portal"))
	if r.header["Cache-Control"] != "no-store" {
		t.Fatalf("the answer carrying a secret may be cached: %q", r.header["Cache-Control"])
	}
	var web identity.CreatedApp
	r.json(t, &web)
	if len(web.ClientSecret) != 43 || len(web.ClientID) != 26 || web.Kind != "web" || web.TokenEndpointAuthMethod != "client_secret_basic" ||
		!slices.Equal(web.GrantTypes, []string{"authorization_code"}) || !slices.Equal(web.Scopes, []string{"openid", "profile", "email"}) ||
		web.PKCERequired || web.IDTokenAlg != "EdDSA" || web.AccessTokenTTL != 0 || web.FirstParty || len(web.Secrets) != 1 || web.Secrets[0].ExpiresAt != nil {
		t.Fatalf("web app: %+v", web)
	}
	if !e.verifies(tn, web.ClientID, web.ClientSecret) {
		t.Fatal("the web app's first secret does not verify")
	}
	spa := e.createApp("acme", boss, map[string]any{"name": "Dashboard", "kind": "spa", "redirect_uris": []string{"https://app.acme.test/cb", "http://localhost:5173/cb"}})
	if spa.ClientSecret != "" || spa.TokenEndpointAuthMethod != "none" || !spa.PKCERequired || len(spa.Secrets) != 0 {
		t.Fatalf("spa: %+v", spa)
	}
	native := e.createApp("acme", boss, map[string]any{"name": "Desktop", "kind": "native",
		"redirect_uris": []string{"com.acme.desktop:/callback", "http://127.0.0.1/callback", "https://acme.test/app-link"}})
	if native.ClientSecret != "" || !native.PKCERequired {
		t.Fatalf("native: %+v", native)
	}
	machine := e.createApp("acme", boss, map[string]any{"name": "Billing sync", "kind": "machine"})
	if machine.ClientSecret == "" || !slices.Equal(machine.GrantTypes, []string{"client_credentials"}) || len(machine.Scopes) != 0 || len(machine.RedirectURIs) != 0 {
		t.Fatalf("machine: %+v", machine)
	}
	if machine.ClientID == web.ClientID || machine.ClientSecret == web.ClientSecret {
		t.Fatal("two apps share a client id or secret")
	}

	var list struct{ Apps []identity.App }
	r = e.must(200, "GET", "acme", "/v1/admin/apps", boss, nil)
	r.json(t, &list)
	var names []string
	for _, a := range list.Apps {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, []string{"Billing sync", "Dashboard", "Desktop", "portal"}) {
		t.Fatalf("list: %v", names)
	}
	for _, body := range [][]byte{r.body, e.must(200, "GET", "acme", "/v1/admin/apps/"+web.ID.String(), boss, nil).body} {
		if bytes.Contains(body, []byte(web.ClientSecret)) || bytes.Contains(body, []byte(machine.ClientSecret)) || bytes.Contains(body, []byte("client_secret\"")) {
			t.Fatalf("a secret is shown again: %s", body)
		}
	}

	var changed identity.App
	e.must(200, "PATCH", "acme", "/v1/admin/apps/"+web.ID.String(), boss, map[string]any{
		"redirect_uris":                []string{"https://portal.example.com/callback", "https://portal.example.com/v2/callback"},
		"post_logout_redirect_uris":    []string{"https://portal.example.com/"},
		"grant_types":                  []string{"authorization_code", "refresh_token"},
		"scopes":                       []string{"openid", "offline_access"},
		"access_token_ttl_seconds":     600,
		"id_token_signed_response_alg": "RS256",
		"name":                         "Portal",
	}).json(t, &changed)
	if changed.Name != "Portal" || len(changed.RedirectURIs) != 2 || changed.AccessTokenTTL != 600 || changed.IDTokenAlg != "RS256" ||
		!slices.Equal(changed.Scopes, []string{"openid", "offline_access"}) || changed.ClientID != web.ClientID || len(changed.Secrets) != 1 {
		t.Fatalf("after PATCH: %+v", changed)
	}
	e.must(200, "PATCH", "acme", "/v1/admin/apps/"+web.ID.String(), boss, map[string]any{"disabled": true})
	if e.verifies(tn, web.ClientID, web.ClientSecret) {
		t.Fatal("a disabled app's secret verifies")
	}
	e.must(200, "PATCH", "acme", "/v1/admin/apps/"+web.ID.String(), boss, map[string]any{"disabled": false, "access_token_ttl_seconds": 0})

	var rotated identity.RotatedSecret
	e.must(200, "POST", "acme", "/v1/admin/apps/"+web.ID.String()+"/secret", boss, nil).json(t, &rotated)
	if rotated.ClientSecret == "" || rotated.PreviousSecretExpiresAt == nil ||
		rotated.PreviousSecretExpiresAt.Sub(time.Now().Add(identity.DefaultSecretOverlap)).Abs() > time.Minute {
		t.Fatalf("rotation: %+v", rotated)
	}
	if !e.verifies(tn, web.ClientID, web.ClientSecret) || !e.verifies(tn, web.ClientID, rotated.ClientSecret) {
		t.Fatal("both secrets should verify during the overlap")
	}
	e.must(200, "GET", "acme", "/v1/admin/apps/"+web.ID.String(), boss, nil).json(t, &changed)
	if changed.AccessTokenTTL != 0 || len(changed.Secrets) != 2 || changed.Secrets[0].ExpiresAt != nil || changed.Secrets[1].ExpiresAt == nil {
		t.Fatalf("after rotation: %+v", changed)
	}

	e.must(204, "DELETE", "acme", "/v1/admin/apps/"+spa.ID.String(), boss, nil)
	e.problemOf(e.do("GET", "acme", "/v1/admin/apps/"+spa.ID.String(), boss, nil), 404)
	e.problemOf(e.do("DELETE", "acme", "/v1/admin/apps/"+spa.ID.String(), boss, nil), 404)
	e.problemOf(e.do("GET", "acme", "/v1/admin/apps/not-a-uuid", boss, nil), 404)

	rows, err := e.admin.Query(ctx, `select action, count(*) from app.audit_events
		where tenant_id = $1 and actor_id = $2 and action like 'app.%' and outcome = 'success' group by action`, tn.ID.UUID(), bossID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var action string
		var n int
		rows.Scan(&action, &n)
		got[action] = n
	}
	if want := map[string]int{"app.create": 4, "app.update": 3, "app.secret.rotate": 1, "app.delete": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("audited %v; want %v", got, want)
	}
	if n, brk, err := identity.VerifyAudit(ctx, e.data, tn); err != nil || brk != nil || n == 0 {
		t.Fatalf("audit chain: %d events, %+v, %v", n, brk, err)
	}
}

// TestAppInputIsRefusedWithItsField: every bad registration or change is
// a 400 (409 for an app without secrets) naming the field, and leaves
// nothing behind.
func TestAppInputIsRefusedWithItsField(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@input.test").AccessToken
	web := func(uris ...string) map[string]any {
		return map[string]any{"name": "x", "kind": "web", "redirect_uris": uris}
	}
	with := func(m map[string]any, k string, v any) map[string]any {
		m[k] = v
		return m
	}
	eleven := make([]string, 11)
	for i := range eleven {
		eleven[i] = fmt.Sprintf("https://a.test/%d", i)
	}
	bigJWKS := json.RawMessage(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"` + strings.Repeat("k", 8200) + `"}]}`)
	for _, c := range []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"no kind", map[string]any{"name": "x"}, "kind"},
		{"no name", map[string]any{"kind": "web", "redirect_uris": []string{"https://a.test/cb"}}, "name"},
		{"blank name", with(web("https://a.test/cb"), "name", "   "), "name"},
		{"long name", with(web("https://a.test/cb"), "name", strings.Repeat("n", 101)), "name"},
		{"control character in the name", with(web("https://a.test/cb"), "name", "bell\u0007"), "name"},
		{"unknown kind", map[string]any{"name": "x", "kind": "desktop"}, "kind"},
		{"web app without redirect URIs", map[string]any{"name": "x", "kind": "web"}, "redirect_uris"},
		{"plain http", web("http://portal.acme.test/cb"), "redirect_uris[0]"},
		{"fragment", web("https://a.test/cb#frag"), "redirect_uris[0]"},
		{"wildcard", web("https://*.acme.test/cb"), "redirect_uris[0]"},
		{"user info", web("https://user:pw@a.test/cb"), "redirect_uris[0]"},
		{"relative", web("/callback"), "redirect_uris[0]"},
		{"space", web("https://a.test/c b"), "redirect_uris[0]"},
		{"non-ASCII", web("https://bücher.test/cb"), "redirect_uris[0]"},
		{"upper-case scheme", web("HTTPS://a.test/cb"), "redirect_uris[0]"},
		{"javascript", web("javascript:alert(1)"), "redirect_uris[0]"},
		{"a web app's custom scheme", web("com.acme.app:/cb"), "redirect_uris[0]"},
		{"too long", web("https://a.test/" + strings.Repeat("p", 2000)), "redirect_uris[0]"},
		{"twice", web("https://a.test/cb", "https://a.test/cb"), "redirect_uris[1]"},
		{"eleven", web(eleven...), "redirect_uris"},
		{"post-logout over http", with(web("https://a.test/cb"), "post_logout_redirect_uris", []string{"http://a.test/"}), "post_logout_redirect_uris[0]"},
		{"spa over http", map[string]any{"name": "x", "kind": "spa", "redirect_uris": []string{"http://app.test/cb"}}, "redirect_uris[0]"},
		{"native on localhost", map[string]any{"name": "x", "kind": "native", "redirect_uris": []string{"http://localhost/cb"}}, "redirect_uris[0]"},
		{"native loopback with a port", map[string]any{"name": "x", "kind": "native", "redirect_uris": []string{"http://127.0.0.1:8080/cb"}}, "redirect_uris[0]"},
		{"native scheme without a domain", map[string]any{"name": "x", "kind": "native", "redirect_uris": []string{"myapp:/cb"}}, "redirect_uris[0]"},
		{"native over plain http", map[string]any{"name": "x", "kind": "native", "redirect_uris": []string{"http://example.com/cb"}}, "redirect_uris[0]"},
		{"machine with a redirect URI", map[string]any{"name": "x", "kind": "machine", "redirect_uris": []string{"https://a.test/cb"}}, "redirect_uris"},
		{"machine with a code grant", map[string]any{"name": "x", "kind": "machine", "grant_types": []string{"authorization_code"}}, "grant_types"},
		{"machine with scopes", map[string]any{"name": "x", "kind": "machine", "scopes": []string{"openid"}}, "scopes"},
		{"machine first party", map[string]any{"name": "x", "kind": "machine", "first_party": true}, "first_party"},
		{"machine without a secret", map[string]any{"name": "x", "kind": "machine", "token_endpoint_auth_method": "none"}, "token_endpoint_auth_method"},
		{"web with client_credentials", with(web("https://a.test/cb"), "grant_types", []string{"authorization_code", "client_credentials"}), "grant_types"},
		{"implicit", with(web("https://a.test/cb"), "grant_types", []string{"implicit"}), "grant_types[0]"},
		{"refresh without code", with(web("https://a.test/cb"), "grant_types", []string{"refresh_token"}), "grant_types"},
		{"grant twice", with(web("https://a.test/cb"), "grant_types", []string{"authorization_code", "authorization_code"}), "grant_types[1]"},
		{"unknown scope", with(web("https://a.test/cb"), "scopes", []string{"openid", "admin"}), "scopes[1]"},
		{"offline_access without refresh", with(web("https://a.test/cb"), "scopes", []string{"openid", "offline_access"}), "scopes"},
		{"public app with a secret", map[string]any{"name": "x", "kind": "spa", "redirect_uris": []string{"https://a.test/cb"}, "token_endpoint_auth_method": "client_secret_basic"}, "token_endpoint_auth_method"},
		{"web without a secret", with(web("https://a.test/cb"), "token_endpoint_auth_method", "none"), "token_endpoint_auth_method"},
		{"unknown auth method", with(web("https://a.test/cb"), "token_endpoint_auth_method", "tls_client_auth"), "token_endpoint_auth_method"},
		{"ttl under a minute", with(web("https://a.test/cb"), "access_token_ttl_seconds", 30), "access_token_ttl_seconds"},
		{"ttl over a day", with(web("https://a.test/cb"), "access_token_ttl_seconds", 86401), "access_token_ttl_seconds"},
		{"negative ttl", with(web("https://a.test/cb"), "access_token_ttl_seconds", -5), "access_token_ttl_seconds"},
		{"enormous ttl", with(web("https://a.test/cb"), "access_token_ttl_seconds", int64(1)<<62), "access_token_ttl_seconds"},
		{"ttl as text", with(web("https://a.test/cb"), "access_token_ttl_seconds", "15m"), "access_token_ttl_seconds"},
		{"HS256 ID tokens", with(web("https://a.test/cb"), "id_token_signed_response_alg", "HS256"), "id_token_signed_response_alg"},
		{"JWKS with a secret", with(web("https://a.test/cb"), "jwks", json.RawMessage(`{"keys":[]}`)), "jwks"},
		{"private_key_jwt without keys", with(web("https://a.test/cb"), "token_endpoint_auth_method", "private_key_jwt"), "jwks"},
		{"private_key_jwt with a huge JWKS", with(with(web("https://a.test/cb"), "token_endpoint_auth_method", "private_key_jwt"), "jwks", bigJWKS), "jwks"},
		{"a secret of one's own", with(web("https://a.test/cb"), "client_secret", "hunter2"), "client_secret"},
		{"a client id of one's own", with(web("https://a.test/cb"), "client_id", "mine"), "client_id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			d := e.problemOf(e.do("POST", "acme", "/v1/admin/apps", boss, c.body), 400)
			if len(d.Errors) == 0 || d.Errors[0].Field != c.field {
				t.Fatalf("refusal names %+v (%s); want %s", d.Errors, d.Detail, c.field)
			}
		})
	}
	e.t = t
	if n := e.appCount(); n != 0 {
		t.Fatalf("%d apps after the refusals", n)
	}

	// Changes are checked as the whole app they make.
	app := e.createApp("acme", boss, webApp("portal"))
	spa := e.createApp("acme", boss, map[string]any{"name": "spa", "kind": "spa", "redirect_uris": []string{"https://a.test/cb"}})
	path := "/v1/admin/apps/" + app.ID.String()
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		field              string
	}{
		{"kind", "PATCH", path, map[string]any{"kind": "spa"}, 400, "kind"},
		{"client id", "PATCH", path, map[string]any{"client_id": "mine"}, 400, "client_id"},
		{"auth method", "PATCH", path, map[string]any{"token_endpoint_auth_method": "none"}, 400, "token_endpoint_auth_method"},
		{"no redirect URI left", "PATCH", path, map[string]any{"redirect_uris": []string{}}, 400, "redirect_uris"},
		{"fragment", "PATCH", path, map[string]any{"redirect_uris": []string{"https://a.test/#x"}}, 400, "redirect_uris[0]"},
		{"offline_access without refresh", "PATCH", path, map[string]any{"scopes": []string{"offline_access"}}, 400, "scopes"},
		{"a public app's JWKS", "PATCH", "/v1/admin/apps/" + spa.ID.String(), map[string]any{"jwks": json.RawMessage(`{"keys":[]}`)}, 400, "jwks"},
		{"nothing", "PATCH", path, map[string]any{}, 400, ""},
		{"negative overlap", "POST", path + "/secret", map[string]any{"overlap_seconds": -1}, 400, "overlap_seconds"},
		{"overlap over a week", "POST", path + "/secret", map[string]any{"overlap_seconds": 7*24*3600 + 1}, 400, "overlap_seconds"},
		{"a public app's secret", "POST", "/v1/admin/apps/" + spa.ID.String() + "/secret", nil, 409, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			d := e.problemOf(e.do(c.method, "acme", c.path, boss, c.body), c.status)
			if c.field != "" && (len(d.Errors) == 0 || d.Errors[0].Field != c.field) {
				t.Fatalf("refusal names %+v (%s); want %s", d.Errors, d.Detail, c.field)
			}
		})
	}
	e.t = t
	var after identity.App
	e.must(200, "GET", "acme", path, boss, nil).json(t, &after)
	if !slices.Equal(after.RedirectURIs, app.RedirectURIs) || !slices.Equal(after.Scopes, app.Scopes) || len(after.Secrets) != 1 || after.Kind != "web" {
		t.Fatalf("the refused changes changed the app: %+v", after)
	}
	// What is allowed for development: http on localhost for web apps.
	e.createApp("acme", boss, map[string]any{"name": "dev", "kind": "web", "redirect_uris": []string{"http://localhost:3000/cb", "http://127.0.0.1:3000/cb"}})
}

// TestRedirectURIsMatchExactly: a redirect URI matches only itself, but a
// native app's loopback URI matches any port (RFC 8252, section 7.3).
func TestRedirectURIsMatchExactly(t *testing.T) {
	t.Parallel()
	web := &identity.App{Kind: identity.AppWeb, RedirectURIs: []string{"https://a.test/cb", "http://localhost:3000/cb"},
		PostLogoutRedirectURIs: []string{"https://a.test/bye"}}
	native := &identity.App{Kind: identity.AppNative, RedirectURIs: []string{"http://127.0.0.1/cb", "http://[::1]/cb", "com.a.app:/cb"}}
	for _, c := range []struct {
		app  *identity.App
		uri  string
		want bool
	}{
		{web, "https://a.test/cb", true},
		{web, "https://a.test/cb/", false},
		{web, "https://A.test/cb", false},
		{web, "https://a.test/cb?x=1", false},
		{web, "https://a.test:443/cb", false},
		{web, "https://a.test/CB", false},
		{web, "http://localhost:3000/cb", true},
		{web, "http://localhost:3001/cb", false},
		{web, "https://a.test/bye", false},
		{native, "http://127.0.0.1/cb", true},
		{native, "http://127.0.0.1:51234/cb", true},
		{native, "http://[::1]:8080/cb", true},
		{native, "http://127.0.0.1:51234/cb/x", false},
		{native, "http://127.0.0.1:51234/other", false},
		{native, "http://127.0.0.1:0/cb", false},
		{native, "http://127.0.0.1:65536/cb", false},
		{native, "http://127.0.0.1:+80/cb", false},
		{native, "http://127.0.0.1:80@evil.test/cb", false},
		{native, "http://127.0.0.1.evil.test:80/cb", false},
		{native, "https://127.0.0.1:443/cb", false},
		{native, "com.a.app:/cb", true},
		{native, "com.a.app:/cb2", false},
	} {
		if got := c.app.RedirectURIAllowed(c.uri); got != c.want {
			t.Errorf("%s app, %s: allowed %t, want %t", c.app.Kind, c.uri, got, c.want)
		}
	}
	if !web.PostLogoutRedirectURIAllowed("https://a.test/bye") || web.PostLogoutRedirectURIAllowed("https://a.test/cb") {
		t.Error("post-logout redirect URIs are a list of their own")
	}
}

// TestClientSecretRotationKeepsTwoSecretsForTheOverlap: the replaced
// secret works until the overlap ends, never more than two work at once,
// a zero overlap ends the old one at once, and every refusal answers
// alike.
func TestClientSecretRotationKeepsTwoSecretsForTheOverlap(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var offset atomic.Int64
	e.svc.SetClock(func() time.Time { return time.Now().Add(time.Duration(offset.Load())) })
	tn := e.tenant("acme", tenancy.Shared, "")
	ctx := context.Background()
	app, err := e.svc.CreateApp(ctx, tn, nil, identity.AppInput{Name: "api", Kind: identity.AppMachine}, identity.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	rotate := func(overlap time.Duration) *identity.RotatedSecret {
		t.Helper()
		r, err := e.svc.RotateAppSecret(ctx, tn, nil, app.ID, overlap, identity.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	expect := func(when string, want map[string]bool) {
		t.Helper()
		for secret, ok := range want {
			if got := e.verifies(tn, app.ClientID, secret); got != ok {
				t.Fatalf("%s: secret %.6s… verifies %t, want %t", when, secret, got, ok)
			}
		}
	}
	s0 := app.ClientSecret
	s1 := rotate(identity.DefaultSecretOverlap).ClientSecret
	expect("just rotated", map[string]bool{s0: true, s1: true})
	offset.Store(int64(identity.DefaultSecretOverlap - time.Minute))
	expect("a minute before the overlap ends", map[string]bool{s0: true, s1: true})
	offset.Store(int64(identity.DefaultSecretOverlap + time.Second))
	expect("once the overlap ended", map[string]bool{s0: false, s1: true})

	s2 := rotate(time.Hour).ClientSecret
	s3 := rotate(time.Hour).ClientSecret
	expect("rotated twice within the overlap", map[string]bool{s1: false, s2: true, s3: true})
	var rows int
	e.admin.QueryRow(ctx, "select count(*) from app.oidc_app_secrets where app_id = $1", app.ID).Scan(&rows)
	if rows != 2 {
		t.Fatalf("%d stored secrets; want the current one and the one it replaced", rows)
	}
	r4 := rotate(0)
	if r4.PreviousSecretExpiresAt != nil {
		t.Fatalf("a rotation without overlap says the old secret lasts until %v", r4.PreviousSecretExpiresAt)
	}
	s4 := r4.ClientSecret
	expect("rotated without overlap", map[string]bool{s2: false, s3: false, s4: true})
	got, err := e.svc.GetApp(ctx, tn, nil, app.ID, identity.Meta{})
	if err != nil || len(got.Secrets) != 1 || got.Secrets[0].ExpiresAt != nil {
		t.Fatalf("secrets after a rotation without overlap: %+v, %v", got, err)
	}

	// Every refusal is the same one (verifies fails the test on any
	// other answer).
	spa, err := e.svc.CreateApp(ctx, tn, nil, identity.AppInput{Name: "spa", Kind: identity.AppSPA, RedirectURIs: []string{"https://a.test/cb"}}, identity.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string][2]string{
		"unknown client":      {"AAAAAAAAAAAAAAAAAAAAAA", s4},
		"malformed client id": {"not a client id\x00", s4},
		"wrong secret":        {app.ClientID, s4[:42] + "x"},
		"empty secret":        {app.ClientID, ""},
		"huge secret":         {app.ClientID, strings.Repeat(s4, 30)},
		"public app":          {spa.ClientID, s4},
		"another app's":       {spa.ClientID, ""},
	} {
		if e.verifies(tn, c[0], c[1]) {
			t.Errorf("%s: verified", name)
		}
	}
	disabled := true
	if _, err := e.svc.UpdateApp(ctx, tn, nil, app.ID, identity.AppChange{Disabled: &disabled}, identity.Meta{}); err != nil {
		t.Fatal(err)
	}
	expect("disabled", map[string]bool{s4: false})
	disabled = false
	if _, err := e.svc.UpdateApp(ctx, tn, nil, app.ID, identity.AppChange{Disabled: &disabled}, identity.Meta{}); err != nil {
		t.Fatal(err)
	}
	expect("enabled again", map[string]bool{s4: true})
}

// TestManageAppsHolderRegistersAppsButWidensNothing: manage_apps lets its
// holder register and manage apps and nothing more: not first-party apps
// (which skip users' consent), not users or roles; a plain member gets
// 403; and losing the right (role taken away, account disabled, session
// ended) counts on the very next request.
func TestManageAppsHolderRegistersAppsButWidensNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	ctx := context.Background()
	boss := e.adminLogin("acme", "boss@widen.test").AccessToken
	dev, devID := e.member("acme", "dev@widen.test")
	role := e.role("acme", boss, "app-devs", "manage_apps")
	e.assign(204, "acme", boss, role, "user", devID)

	own := e.createApp("acme", dev, webApp("devtool"))
	path := "/v1/admin/apps/" + own.ID.String()
	e.must(200, "PATCH", "acme", path, dev, map[string]any{"redirect_uris": []string{"https://devtool.example.com/v2/callback"}})
	e.must(200, "POST", "acme", path+"/secret", dev, map[string]any{"overlap_seconds": 0})
	e.must(200, "GET", "acme", "/v1/admin/apps", dev, nil)

	// First-party apps sign users in without asking them: admins' alone.
	e.problemOf(e.do("POST", "acme", "/v1/admin/apps", dev, map[string]any{
		"name": "sso", "kind": "web", "first_party": true, "redirect_uris": []string{"https://evil.test/cb"}}), 403)
	fp := e.createApp("acme", boss, map[string]any{"name": "console", "kind": "web", "first_party": true, "redirect_uris": []string{"https://console.acme.test/cb"}})
	fpPath := "/v1/admin/apps/" + fp.ID.String()
	e.must(200, "GET", "acme", fpPath, dev, nil)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"PATCH", fpPath, map[string]any{"redirect_uris": []string{"https://evil.test/cb"}}},
		{"PATCH", fpPath, map[string]any{"disabled": true}},
		{"PATCH", fpPath, map[string]any{"first_party": false}},
		{"POST", fpPath + "/secret", nil},
		{"DELETE", fpPath, nil},
		{"PATCH", path, map[string]any{"first_party": true}},
		// Nothing beyond apps opens up either.
		{"GET", "/v1/admin/users", nil},
		{"POST", "/v1/admin/users", map[string]any{"email": "friend@widen.test", "role": "admin"}},
		{"POST", "/v1/admin/roles", map[string]any{"name": "more", "permissions": []string{"manage_users"}}},
		{"POST", "/v1/admin/roles/" + role + "/assignments", map[string]any{"type": "user", "id": devID}},
		{"GET", "/v1/admin/audit", nil},
	} {
		e.problemOf(e.do(c.method, "acme", c.path, dev, c.body), 403)
	}
	var after identity.App
	e.must(200, "GET", "acme", fpPath, boss, nil).json(t, &after)
	if !slices.Equal(after.RedirectURIs, fp.RedirectURIs) || after.Disabled || !after.FirstParty || len(after.Secrets) != 1 ||
		!e.verifies(tn, fp.ClientID, fp.ClientSecret) {
		t.Fatalf("the first-party app after the holder's tries: %+v", after)
	}
	e.must(200, "GET", "acme", path, boss, nil).json(t, &after)
	if after.FirstParty {
		t.Fatal("the holder made its app first-party")
	}
	var denied int
	e.admin.QueryRow(ctx, `select count(*) from app.audit_events where actor_id = $1 and outcome = 'denied'
		and action like 'app.%' and details->>'permission' = 'administer'`, uuid.MustParse(devID)).Scan(&denied)
	if denied != 7 {
		t.Fatalf("%d denied first-party tries audited; want 7", denied)
	}

	// A plain member may not even look.
	plain, _ := e.member("acme", "plain@widen.test")
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/v1/admin/apps", nil},
		{"POST", "/v1/admin/apps", webApp("sneaky")},
		{"GET", path, nil},
		{"PATCH", path, map[string]any{"name": "mine"}},
		{"POST", path + "/secret", nil},
		{"DELETE", path, nil},
	} {
		e.problemOf(e.do(c.method, "acme", c.path, plain, c.body), 403)
	}
	e.must(200, "GET", "acme", path, boss, nil).json(t, &after)
	if after.Name != "devtool" || e.appCount() != 2 {
		t.Fatalf("a plain member changed apps: %+v, %d apps", after, e.appCount())
	}

	// The role taken away: the very next request is refused.
	e.must(204, "DELETE", "acme", "/v1/admin/roles/"+role+"/assignments/user/"+devID, boss, nil)
	e.problemOf(e.do("GET", "acme", "/v1/admin/apps", dev, nil), 403)
	e.problemOf(e.do("PATCH", "acme", path, dev, map[string]any{"name": "late"}), 403)
	e.assign(204, "acme", boss, role, "user", devID)
	e.must(200, "GET", "acme", "/v1/admin/apps", dev, nil)

	// Disabled: at once, and for good with that session.
	e.must(200, "POST", "acme", "/v1/admin/users/"+devID+"/disable", boss, nil)
	e.problemOf(e.do("POST", "acme", "/v1/admin/apps", dev, webApp("after-disable")), 401)
	e.must(200, "POST", "acme", "/v1/admin/users/"+devID+"/enable", boss, nil)
	e.problemOf(e.do("GET", "acme", "/v1/admin/apps", dev, nil), 401)
	dev = e.login("acme", "dev@widen.test", goodPassword).AccessToken
	e.must(200, "GET", "acme", "/v1/admin/apps", dev, nil)

	// Signed out: at once.
	e.must(204, "POST", "acme", "/v1/auth/logout", dev, nil)
	e.problemOf(e.do("DELETE", "acme", path, dev, nil), 401)
	if n := e.appCount(); n != 2 {
		t.Fatalf("%d apps; want the holder's and the admin's", n)
	}
}

// TestAppsOfOneTenantAreInvisibleToAnother: with a dozen tenants of
// similar names, shared and silo, an app's id or client id names nothing
// on another tenant's host: every endpoint answers it as it answers a
// made-up id, and client authentication there fails.
func TestAppsOfOneTenantAreInvisibleToAnother(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	type tenantApps struct {
		slug, token string
		tn          *tenancy.Tenant
		app         identity.CreatedApp
	}
	var all []*tenantApps
	for i := range 10 {
		slug := fmt.Sprintf("iso%02d", i)
		placement := tenancy.Shared
		if i == 9 {
			placement = tenancy.Silo
		}
		tn := e.tenant(slug, placement, "")
		token := e.adminOf(tn, fmt.Sprintf("boss@%s.test", slug))
		all = append(all, &tenantApps{slug: slug, token: token, tn: tn, app: e.createApp(slug, token, webApp(slug))})
	}
	for i, b := range all {
		a := all[(i+1)%len(all)] // another tenant, the silo's neighbours included
		for _, c := range []struct {
			method, suffix string
			body           any
		}{
			{"GET", "", nil},
			{"PATCH", "", map[string]any{"name": "taken"}},
			{"DELETE", "", nil},
			{"POST", "/secret", nil},
		} {
			theirs := e.problemOf(e.do(c.method, b.slug, "/v1/admin/apps/"+a.app.ID.String()+c.suffix, b.token, c.body), 404)
			madeUp := e.problemOf(e.do(c.method, b.slug, "/v1/admin/apps/"+uuid.NewString()+c.suffix, b.token, c.body), 404)
			if theirs.Detail != madeUp.Detail || theirs.Code != madeUp.Code {
				t.Fatalf("%s another tenant's app on %s answers %+v, a made-up one %+v", c.method, b.slug, theirs, madeUp)
			}
		}
		var list struct{ Apps []identity.App }
		e.must(200, "GET", b.slug, "/v1/admin/apps", b.token, nil).json(t, &list)
		if len(list.Apps) != 1 || list.Apps[0].ID != b.app.ID {
			t.Fatalf("%s lists %+v", b.slug, list.Apps)
		}
		if e.verifies(b.tn, a.app.ClientID, a.app.ClientSecret) {
			t.Fatalf("%s's client authenticates on %s", a.slug, b.slug)
		}
		if _, err := e.svc.AppByClientID(ctx, b.tn, a.app.ClientID); problem.CodeOf(err) != problem.NotFound {
			t.Fatalf("%s's client id on %s: %v", a.slug, b.slug, err)
		}
		if _, err := e.svc.ClientKeys(ctx, b.tn, a.app.ClientID); problem.CodeOf(err) != problem.Unauthorized {
			t.Fatalf("%s's client keys on %s: %v", a.slug, b.slug, err)
		}
		// Its own admin's token does not reach across either.
		e.problemOf(e.do("GET", b.slug, "/v1/admin/apps/"+a.app.ID.String(), a.token, nil), 401)
	}
	for _, a := range all {
		var got identity.App
		e.must(200, "GET", a.slug, "/v1/admin/apps/"+a.app.ID.String(), a.token, nil).json(t, &got)
		if got.Name != a.slug || len(got.Secrets) != 1 || !e.verifies(a.tn, a.app.ClientID, a.app.ClientSecret) {
			t.Fatalf("%s's app after the other tenants' tries: %+v", a.slug, got)
		}
	}
}

// TestClientSecretsAreKeptOnlyAsHashes: a secret is in the answer that
// makes it and nowhere else: Postgres holds its SHA-256 (read as
// superuser, every app table searched), and neither reads, the audit
// trail nor the server's logs carry it.
func TestClientSecretsAreKeptOnlyAsHashes(t *testing.T) {
	t.Parallel()
	e, logs := newLoggingEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@hash.test").AccessToken
	ctx := context.Background()
	web := e.createApp("acme", boss, webApp("portal"))
	var rotated identity.RotatedSecret
	e.must(200, "POST", "acme", "/v1/admin/apps/"+web.ID.String()+"/secret", boss, map[string]any{"overlap_seconds": 3600}).json(t, &rotated)
	machine := e.createApp("acme", boss, map[string]any{"name": "cron", "kind": "machine", "token_endpoint_auth_method": "client_secret_post"})
	secrets := []string{web.ClientSecret, rotated.ClientSecret, machine.ClientSecret}

	var reads [][]byte
	reads = append(reads, e.must(200, "GET", "acme", "/v1/admin/apps", boss, nil).body)
	reads = append(reads, e.must(200, "GET", "acme", "/v1/admin/apps/"+web.ID.String(), boss, nil).body)
	reads = append(reads, e.must(200, "PATCH", "acme", "/v1/admin/apps/"+web.ID.String(), boss, map[string]any{"name": "Portal"}).body)

	// Postgres: the hashes, and nothing else of the secrets.
	rows, err := e.admin.Query(ctx, "select app_id, secret_hash from app.oidc_app_secrets")
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for rows.Next() {
		var app uuid.UUID
		var h []byte
		rows.Scan(&app, &h)
		stored[app.String()+fmt.Sprintf("%x", h)] = true
	}
	for _, c := range []struct {
		app    uuid.UUID
		secret string
	}{{web.ID, web.ClientSecret}, {web.ID, rotated.ClientSecret}, {machine.ID, machine.ClientSecret}} {
		h := sha256.Sum256([]byte(c.secret))
		if !stored[c.app.String()+fmt.Sprintf("%x", h)] {
			t.Fatalf("no SHA-256 of secret %.6s… stored for its app (stored: %v)", c.secret, stored)
		}
	}
	if len(stored) != 3 {
		t.Fatalf("%d stored secrets; want 3", len(stored))
	}
	tables, err := tenancy.AppTables(ctx, e.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		for _, s := range secrets {
			var n int
			if err := e.admin.QueryRow(ctx, fmt.Sprintf(`select count(*) from app.%q r where row_to_json(r)::text like '%%' || $1 || '%%'`, table), s).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatalf("app.%s holds a client secret in clear in %d rows", table, n)
			}
		}
	}
	var audited int
	e.admin.QueryRow(ctx, "select count(*) from app.audit_events where tenant_id = $1 and action in ('app.create', 'app.secret.rotate')", tn.ID.UUID()).Scan(&audited)
	if audited != 3 {
		t.Fatalf("%d creations and rotations audited; want 3 (so the search above saw them)", audited)
	}
	for _, body := range reads {
		for _, s := range secrets {
			if bytes.Contains(body, []byte(s)) {
				t.Fatalf("a read shows a secret: %s", body)
			}
		}
	}
	text := logs.String()
	if !strings.Contains(text, "/v1/admin/apps/"+web.ID.String()+"/secret") {
		t.Fatalf("the server's logs missed the requests, so they prove nothing:\n%s", text)
	}
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Fatal("the server's logs hold a client secret")
		}
	}
}

// lockedBuffer is a buffer a logger writes while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newLoggingEnv is newEnv whose server and background work log, at
// debug level, to the buffer it returns.
func newLoggingEnv(t *testing.T) (*env, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return newEnv(t, func(o *apptest.Options) { o.Log = log }), logs
}
