package identity_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/gatehouse/gatehouse/internal/app/apptest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// toolPath returns the program that the variable envVar names, else the
// first of names on PATH. Without it the test is skipped, except in CI
// (CI=true), where tools/test.sh installs it: there it fails.
func toolPath(t *testing.T, envVar string, names ...string) string {
	t.Helper()
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", envVar, p, err)
		}
		return p
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not set and none of %v is on PATH (tools/test.sh installs it)", envVar, names)
	}
	t.Skipf("%s is not set and none of %v is on PATH: run tools/test.sh", envVar, names)
	return ""
}

// newServedEnv is newEnv with its server on a TCP port of the loopback
// interface and the tenants' issuers there (apptest.Listener), for
// clients that make their own connections. The server's log is shown
// when the test fails.
func newServedEnv(t *testing.T) (*env, *apptest.Listener) {
	t.Helper()
	l := apptest.Listen(t)
	logs := &lockedBuffer{}
	e := newEnv(t, withConfig(l.Configure), func(o *apptest.Options) { o.Log = slog.New(slog.NewJSONHandler(logs, nil)) })
	l.Serve(t, e.env)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return e, l
}

// webRP is a web app's server side, written as an unmodified Go app
// writes it with go-oidc and x/oauth2: /login sends the browser to the
// provider with PKCE (S256), a state and a nonce; /callback checks the
// state and iss, exchanges the code, verifies the ID token, its nonce and
// at_hash, and shows whom it signed in as JSON in #result (or what
// failed, in #error).
type webRP struct {
	srv      *httptest.Server
	issuer   string
	provider *gooidc.Provider
	config   oauth2.Config
	ctx      context.Context // carries the HTTP client that reaches the server

	mu      sync.Mutex
	pending map[string]pendingLogin // by state
}

// pendingLogin is what the app keeps of a sign-in it started.
type pendingLogin struct{ verifier, nonce string }

// rpResult is what the app shows after a sign-in.
type rpResult struct {
	Subject     string `json:"sub"`
	Email       string `json:"email"`
	Nonce       string `json:"nonce"`
	Issuer      string `json:"iss"`
	AccessToken bool   `json:"access_token"`
	UserInfo    string `json:"userinfo_email"`
}

// newWebRP registers a web app (with body's settings and the RP's
// redirect URI) on tenant tn through its admin, and starts its server.
func (e *env) newWebRP(l *apptest.Listener, tn *tenancy.Tenant, admin string, body map[string]any) *webRP {
	e.t.Helper()
	rp := &webRP{pending: map[string]pendingLogin{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", rp.login)
	mux.HandleFunc("GET /callback", rp.callback)
	rp.srv = httptest.NewServer(mux)
	e.t.Cleanup(rp.srv.Close)

	body["kind"] = "web"
	body["redirect_uris"] = []string{rp.srv.URL + "/callback"}
	created := e.createApp(tn.Slug, admin, body)
	rp.issuer = l.Issuer(tn)
	rp.ctx = gooidc.ClientContext(context.Background(), l.HTTPClient())
	p, err := gooidc.NewProvider(rp.ctx, rp.issuer)
	if err != nil {
		e.t.Fatalf("discovery: %v", err)
	}
	rp.provider = p
	rp.config = oauth2.Config{ClientID: created.ClientID, ClientSecret: created.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: created.RedirectURIs[0], Scopes: []string{gooidc.ScopeOpenID, "profile", "email"}}
	return rp
}

func (rp *webRP) login(w http.ResponseWriter, r *http.Request) {
	state, nonce, verifier := oauth2.GenerateVerifier(), oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	rp.mu.Lock()
	rp.pending[state] = pendingLogin{verifier: verifier, nonce: nonce}
	rp.mu.Unlock()
	http.Redirect(w, r, rp.config.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), gooidc.Nonce(nonce)), http.StatusFound)
}

func (rp *webRP) callback(w http.ResponseWriter, r *http.Request) {
	res, err := rp.finish(r)
	if err != nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `<!doctype html><title>failed</title><p id="error">%s</p>`, html.EscapeString(err.Error()))
		return
	}
	b, _ := json.Marshal(res)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, `<!doctype html><title>signed in</title><pre id="result">%s</pre>`, html.EscapeString(string(b)))
}

// finish completes the sign-in that the callback request r answers.
func (rp *webRP) finish(r *http.Request) (rpResult, error) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return rpResult{}, fmt.Errorf("the provider answered %s: %s", e, q.Get("error_description"))
	}
	rp.mu.Lock()
	p, ok := rp.pending[q.Get("state")]
	delete(rp.pending, q.Get("state"))
	rp.mu.Unlock()
	if !ok {
		return rpResult{}, fmt.Errorf("unknown state %q", q.Get("state"))
	}
	if iss := q.Get("iss"); iss != rp.issuer {
		return rpResult{}, fmt.Errorf("iss %q is not the provider's %q (RFC 9207)", iss, rp.issuer)
	}
	tok, err := rp.config.Exchange(rp.ctx, q.Get("code"), oauth2.VerifierOption(p.verifier))
	if err != nil {
		return rpResult{}, fmt.Errorf("exchange: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := rp.provider.Verifier(&gooidc.Config{ClientID: rp.config.ClientID}).Verify(rp.ctx, raw)
	if err != nil {
		return rpResult{}, fmt.Errorf("ID token: %w", err)
	}
	if idt.Nonce != p.nonce {
		return rpResult{}, fmt.Errorf("ID token nonce %q, want %q", idt.Nonce, p.nonce)
	}
	if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
		return rpResult{}, fmt.Errorf("at_hash: %w", err)
	}
	var claims struct{ Email string }
	if err := idt.Claims(&claims); err != nil {
		return rpResult{}, err
	}
	info, err := rp.provider.UserInfo(rp.ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		return rpResult{}, fmt.Errorf("userinfo: %w", err)
	}
	if info.Subject != idt.Subject {
		return rpResult{}, fmt.Errorf("userinfo sub %q, ID token sub %q", info.Subject, idt.Subject)
	}
	return rpResult{Subject: idt.Subject, Email: claims.Email, Nonce: idt.Nonce, Issuer: idt.Issuer,
		AccessToken: tok.AccessToken != "", UserInfo: info.Email}, nil
}

// chromiumPath returns the Chromium to run (see toolPath).
func chromiumPath(t *testing.T) string {
	t.Helper()
	return toolPath(t, "GATEHOUSE_CHROMIUM_BIN", "chromium", "chromium-browser")
}

// newChromium starts the headless Chromium bin for the test, and returns
// the context that drives its tab. Everything it does must end within a
// minute and a half.
func newChromium(t *testing.T, bin string) context.Context {
	t.Helper()
	out := &lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin),
		chromedp.NoSandbox, // tests may run as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancel()
		if t.Failed() {
			// Less its complaints that the machine has no D-Bus.
			var lines []string
			for line := range strings.Lines(out.String()) {
				if !strings.Contains(line, "dbus") {
					lines = append(lines, line)
				}
			}
			t.Logf("chromium's output:\n%s", strings.Join(lines, ""))
		}
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	return bctx
}

// visit opens rawURL in the tab, and returns where the tab ended up once
// the page (after its redirects) loaded.
func visit(t *testing.T, ctx context.Context, rawURL string) *url.URL {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(rawURL)); err != nil {
		t.Fatalf("open %s: %v", rawURL, err)
	}
	return location(t, ctx)
}

// submit clicks the form's button sel in the tab, and returns where the
// tab ended up once the answer (after its redirects) loaded.
func submit(t *testing.T, ctx context.Context, sel string) *url.URL {
	t.Helper()
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
	return location(t, ctx)
}

// location returns the address of the tab's page.
func location(t *testing.T, ctx context.Context) *url.URL {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// signedIn returns what the app shows on its callback page, which the tab
// shows; it fails the test on any other page, or if the app refused the
// sign-in.
func signedIn(t *testing.T, ctx context.Context) rpResult {
	t.Helper()
	page, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`({
		result: document.querySelector('#result')?.textContent ?? '',
		error: document.querySelector('#error')?.textContent ?? '',
	})`))
	if err != nil {
		t.Fatal(err)
	}
	loc := location(t, ctx)
	switch {
	case page["error"] != "":
		t.Fatalf("the app refused the sign-in at %s: %s", loc, page["error"])
	case page["result"] == "":
		t.Fatalf("the tab shows %s, not the app's callback: %q", loc, shown(ctx))
	}
	var res rpResult
	if err := json.Unmarshal([]byte(page["result"]), &res); err != nil {
		t.Fatalf("the app's page at %s shows %q: %v", loc, page["result"], err)
	}
	return res
}

// shown returns the text that the tab's page shows, for failures.
func shown(ctx context.Context) string {
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body?.innerText ?? ''`))
	if err != nil {
		return err.Error()
	}
	return text
}

// heading returns the text of the page's h1.
func heading(t *testing.T, ctx context.Context) string {
	t.Helper()
	h, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('h1')?.textContent ?? ''`))
	if err != nil {
		t.Fatalf("read the heading: %v", err)
	}
	return h
}

// TestCodeFlowInChromium signs a user in through the hosted pages in a
// real headless Chromium, for web apps written with go-oidc and
// x/oauth2, on a listening Gatehouse: the sign-in form, the session that
// spares a second sign-in, and a third-party app's consent.
func TestCodeFlowInChromium(t *testing.T) {
	bin := chromiumPath(t)
	e, l := newServedEnv(t)
	browser := newChromium(t, bin) // closed before the server stops
	tn := e.tenant("acme", tenancy.Shared, tenancy.SignupOpen)
	admin := e.adminOf(tn, "admin@acme.test")
	e.signup("acme", "ada@acme.test", goodPassword)
	first := e.newWebRP(l, tn, admin, map[string]any{"name": "Web", "first_party": true})
	third := e.newWebRP(l, tn, admin, map[string]any{"name": "Partner", "first_party": false})

	// The first sign-in shows the form, which Chromium fills and sends.
	form := visit(t, browser, first.srv.URL+"/login")
	if form.Host != fmt.Sprintf("acme.localhost:%d", l.Port) || form.Path != "/oauth/login" {
		t.Fatalf("the app's /login led the browser to %s, not the hosted sign-in: %q", form, shown(browser))
	}
	if h := heading(t, browser); h != "Sign in" {
		t.Fatalf("the sign-in page's heading is %q", h)
	}
	err := chromedp.Do(browser,
		chromedp.SendKeys(chromedp.ID("email"), "ada@acme.test"),
		chromedp.SendKeys(chromedp.ID("password"), goodPassword),
	)
	if err != nil {
		t.Fatalf("fill in the sign-in form: %v", err)
	}
	if back := submit(t, browser, `form button[type=submit]`); back.Path != "/callback" {
		t.Fatalf("the sign-in ended at %s, not back at the app: %q", back, shown(browser))
	}
	ada := signedIn(t, browser)
	if ada.Email != "ada@acme.test" || ada.UserInfo != "ada@acme.test" || ada.Subject == "" || !ada.AccessToken ||
		ada.Issuer != l.Issuer(tn) {
		t.Fatalf("the app signed in %+v", ada)
	}

	// Signed in, the browser goes straight back: no form.
	back := visit(t, browser, first.srv.URL+"/login")
	if back.Host != strings.TrimPrefix(first.srv.URL, "http://") || back.Path != "/callback" {
		t.Fatalf("a second sign-in ended at %s, not back at the app: %q", back, shown(browser))
	}
	if again := signedIn(t, browser); again.Subject != ada.Subject || again.Nonce == ada.Nonce {
		t.Fatalf("the second sign-in gave %+v; the first %+v", again, ada)
	}

	// A third-party app asks for consent first, once.
	consent := visit(t, browser, third.srv.URL+"/login")
	if consent.Path != "/oauth/login" {
		t.Fatalf("the third-party app's sign-in ended at %s, not the consent page: %q", consent, shown(browser))
	}
	if h := heading(t, browser); h != "Allow Partner?" {
		t.Fatalf("the consent page's heading is %q", h)
	}
	asks, err := chromedp.Run(browser, chromedp.Evaluate[[]string](`[...document.querySelectorAll('main li')].map(li => li.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Know who you are", "See your name", "See your email address"}; strings.Join(asks, "|") != strings.Join(want, "|") {
		t.Fatalf("the consent page asks %q; want %q", asks, want)
	}
	if back := submit(t, browser, `button[value=consent]`); back.Path != "/callback" {
		t.Fatalf("allowing ended at %s, not back at the app: %q", back, shown(browser))
	}
	if partner := signedIn(t, browser); partner.Subject != ada.Subject || partner.Email != "ada@acme.test" {
		t.Fatalf("the third-party app signed in %+v", partner)
	}
	if back := visit(t, browser, third.srv.URL+"/login"); back.Path != "/callback" {
		t.Fatalf("once allowed, the third-party app's sign-in ended at %s, not back at the app: %q", back, shown(browser))
	}
	signedIn(t, browser)
}
