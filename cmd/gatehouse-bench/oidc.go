package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// The OpenID Connect scenarios act as the first host's tenant's apps,
// which the bench registers once as an operator would (gatehouse app
// create) and whose secrets it replaces on every run (gatehouse app
// rotate-secret --overlap 0): a secret is shown only once.
const (
	machineAppName = "gatehouse-bench machine"
	webAppName     = "gatehouse-bench web"
	// benchRedirectURI is the web app's redirect URI. Nothing listens
	// there: the bench reads the code from the redirect.
	benchRedirectURI = "http://127.0.0.1/gatehouse-bench/callback"
)

// oidcClient is an app's client id and a valid secret of it.
type oidcClient struct{ id, secret string }

// basicAuth sets c's client_secret_basic credentials on req.
func (c oidcClient) basicAuth(req *http.Request) {
	req.SetBasicAuth(url.QueryEscape(c.id), url.QueryEscape(c.secret))
}

// cc measures client_credentials grants (POST /oauth/token) of a machine
// app of the first host's tenant, each answer a JWT access token,
// against /healthz.
func (b *bench) cc() error {
	host := b.hosts[0]
	app, err := b.oidcApp(host, machineAppName, "--kind", "machine")
	if err != nil {
		return err
	}
	base := b.baseline()
	grant := func(int, int) (*http.Request, error) { return b.ccRequest(host, app) }
	check := func(_ int, body []byte) error { _, err := accessToken(body); return err }
	b.measureWith("warm-up", grant, check, time.Second)
	r := b.measureWith("POST /oauth/token client_credentials", grant, check, b.d)
	b.compare(r, base)
	return nil
}

// introspect measures POST /oauth/introspect (RFC 7662) of a
// client_credentials access token by the app it was issued to,
// authenticated with its secret, against /healthz. Every answer must say
// the token is active.
func (b *bench) introspect() error {
	host := b.hosts[0]
	app, err := b.oidcApp(host, machineAppName, "--kind", "machine")
	if err != nil {
		return err
	}
	req, err := b.ccRequest(host, app)
	if err != nil {
		return err
	}
	status, body, err := b.do(req)
	if err != nil || status != http.StatusOK {
		return fmt.Errorf("client_credentials grant on %s: %d %s %v", host, status, body, err)
	}
	token, err := accessToken(body)
	if err != nil {
		return err
	}
	base := b.baseline()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()
	ask := func(int, int) (*http.Request, error) {
		req, err := b.formRequest(host, "/oauth/introspect", form)
		if err == nil {
			app.basicAuth(req)
		}
		return req, err
	}
	active := func(_ int, body []byte) error {
		var r struct {
			Active bool `json:"active"`
		}
		if err := json.Unmarshal(body, &r); err != nil || !r.Active {
			return errors.New("not active")
		}
		return nil
	}
	b.measureWith("warm-up", ask, active, time.Second)
	r := b.measureWith("POST /oauth/introspect", ask, active, b.d)
	b.compare(r, base)
	return nil
}

// code measures the authorization-code exchange, POST /oauth/token with
// grant_type=authorization_code and PKCE, of a first-party web app of the
// first host's tenant, against one tenant-scoped write transaction
// measured in the same run. Each client is a browser with an account of
// its own: it signs in once through the hosted sign-in; then every
// iteration is an authorization that its session cookie lets through
// without the form (GET /oauth/authorize, /oauth/login, the callback),
// which is not measured, then the exchange of its code, which is.
func (b *bench) code() error {
	ctx := context.Background()
	host := b.hosts[0]
	if err := b.signUp(); err != nil {
		return err
	}
	app, err := b.oidcApp(host, webAppName, "--kind", "web", "--first-party", "--redirect-uri", benchRedirectURI)
	if err != nil {
		return err
	}
	emails, err := b.signUpMany(host, b.conc)
	if err != nil {
		return err
	}
	browsers := make([]*browser, b.conc)
	for w := range browsers {
		br := &browser{b: b, host: host, cookies: map[string]string{}}
		code, verifier, err := br.signIn(app, emails[w])
		if err != nil {
			return err
		}
		// The first code is exchanged too, outside the measurement: the
		// exchange works before the load starts.
		req, err := b.codeRequest(host, app, code, verifier)
		if err != nil {
			return err
		}
		if status, body, err := b.do(req); err != nil || status != http.StatusOK {
			return fmt.Errorf("code exchange on %s: %d %s %v", host, status, body, err)
		}
		browsers[w] = br
	}
	base, err := b.writeTx(ctx, host, emails)
	if err != nil {
		return err
	}
	exchange := func(w, _ int) (*http.Request, error) {
		code, verifier, err := browsers[w].authorize(app)
		if err != nil {
			return nil, err
		}
		return b.codeRequest(host, app, code, verifier)
	}
	tokens := func(_ int, body []byte) error {
		var t struct {
			AccessToken string `json:"access_token"`
			IDToken     string `json:"id_token"`
		}
		if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" || t.IDToken == "" {
			return errors.New("no access and ID token")
		}
		return nil
	}
	b.measureWith("warm-up", exchange, tokens, time.Second)
	r := b.measureWith("POST /oauth/token authorization_code", exchange, tokens, b.d)
	b.reportRows = append(b.reportRows, fmt.Sprintf("%s: p50 %s, %.2fx the write transaction's p50 (%s); p99 %s, %.2fx its p99 (%s); %.1f iterations a second (authorization and exchange)",
		r.name, r.pct(50), ratio(r.pct(50), base.pct(50)), base.pct(50), r.pct(99), ratio(r.pct(99), base.pct(99)), base.pct(99), r.rate()))
	return nil
}

// writeTx measures the baseline of the code scenario: one write
// transaction through tenancy.DB.Tx as gatehouse_app (BEGIN, the tenant
// setting and the statement in one round trip, then COMMIT), on the same
// database as the server, from conc clients: each updates the display name
// of an account of its own (one row: no client waits for another's lock).
func (b *bench) writeTx(ctx context.Context, host string, emails []string) (result, error) {
	op, err := b.operator(ctx)
	if err != nil {
		return result{}, err
	}
	t, err := op.reg.Get(ctx, b.slugOf(host))
	if err != nil {
		return result{}, err
	}
	if t.Placement != tenancy.Shared {
		return result{}, fmt.Errorf("the write-transaction baseline needs a shared tenant; %s is in a silo", t.Slug)
	}
	appURL, err := tenancy.AppURL(os.Getenv("GATEHOUSE_DATABASE_URL"), os.Getenv("GATEHOUSE_APP_PASSWORD"))
	if err != nil {
		return result{}, err
	}
	cfg, err := pgxpool.ParseConfig(appURL)
	if err != nil {
		return result{}, err
	}
	// A tenant gets half of a DB's pool at most: twice the clients, so
	// that none waits for a connection.
	cfg.MaxConns = int32(2 * b.conc)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	defer pool.Close()
	db := tenancy.NewDB(pool, nil)
	users := make([]queries.AppUser, len(emails))
	for w, email := range emails {
		err := db.Once(ctx, t, func(q *queries.Queries) (err error) {
			users[w], err = q.GetUserByEmail(ctx, queries.GetUserByEmailParams{TenantID: t.ID.UUID(), Email: email})
			return err
		})
		if err != nil {
			return result{}, fmt.Errorf("account %s: %w", email, err)
		}
	}
	write := func(ctx context.Context, w, i int) (time.Duration, error) {
		t0 := time.Now()
		err := db.Tx(ctx, t, func(q *queries.Queries) error {
			_, err := q.UpdateDisplayName(ctx, queries.UpdateDisplayNameParams{TenantID: t.ID.UUID(), ID: users[w].ID, DisplayName: fmt.Sprintf("bench %d", i)})
			return err
		})
		return time.Since(t0), err
	}
	b.loop("warm-up", time.Second, write)
	return b.loop("baseline write transaction (DB.Tx)", b.d, write), nil
}

// slugOf is the slug of a tenant host: its first label.
func (b *bench) slugOf(host string) string { return strings.SplitN(host, ".", 2)[0] }

// oidcApp returns the client id and a fresh secret of the app name of
// host's tenant, registering it with args (gatehouse app create's flags)
// if the tenant does not have it yet.
func (b *bench) oidcApp(host, name string, args ...string) (oidcClient, error) {
	if c, ok := b.apps[name]; ok {
		return c, nil
	}
	slug := b.slugOf(host)
	out, err := b.gatehouse("app", "list", "--tenant", slug, "--json")
	if err != nil {
		return oidcClient{}, err
	}
	var apps []struct {
		ClientID string `json:"client_id"`
		Name     string `json:"name"`
	}
	if err := json.Unmarshal(out, &apps); err != nil {
		return oidcClient{}, fmt.Errorf("gatehouse app list: %w", err)
	}
	var c oidcClient
	for _, a := range apps {
		if a.Name == name {
			c.id = a.ClientID
		}
	}
	if c.id != "" {
		out, err := b.gatehouse("app", "rotate-secret", "--tenant", slug, "--overlap", "0", "--json", c.id)
		if err != nil {
			return oidcClient{}, err
		}
		var r struct {
			ClientSecret string `json:"client_secret"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			return oidcClient{}, fmt.Errorf("gatehouse app rotate-secret: %w", err)
		}
		c.secret = r.ClientSecret
	} else {
		out, err := b.gatehouse(append([]string{"app", "create", "--tenant", slug, "--name", name, "--json"}, args...)...)
		if err != nil {
			return oidcClient{}, err
		}
		var r struct {
			ClientID     string `json:"client_id"`
			ClientSecret string `json:"client_secret"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			return oidcClient{}, fmt.Errorf("gatehouse app create: %w", err)
		}
		c = oidcClient{r.ClientID, r.ClientSecret}
		b.reportRows = append(b.reportRows, fmt.Sprintf("setup: registered app %q (%s) of %s", name, c.id, slug))
	}
	if c.id == "" || c.secret == "" {
		return oidcClient{}, fmt.Errorf("app %q of %s: no client id or secret", name, slug)
	}
	if b.apps == nil {
		b.apps = map[string]oidcClient{}
	}
	b.apps[name] = c
	return c, nil
}

// gatehouse runs an operator command (the gatehouse binary, configured by
// the environment as for the bench's own set-up) and returns its output.
func (b *bench) gatehouse(args ...string) ([]byte, error) {
	bin := b.gatehouseBin
	if bin == "" {
		if bin, _ = exec.LookPath("gatehouse"); bin == "" {
			bin = ".cache/bin/gatehouse" // what tools/dev.sh builds
		}
	}
	args = append(args[:2:2], append([]string{"--base-domain", b.baseDomain}, args[2:]...)...)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", bin, strings.Join(args[:2], " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// ccRequest is app's client_credentials grant.
func (b *bench) ccRequest(host string, app oidcClient) (*http.Request, error) {
	req, err := b.formRequest(host, "/oauth/token", "grant_type=client_credentials")
	if err == nil {
		app.basicAuth(req)
	}
	return req, err
}

// codeRequest is app's exchange of code, with the PKCE verifier.
func (b *bench) codeRequest(host string, app oidcClient, code, verifier string) (*http.Request, error) {
	req, err := b.formRequest(host, "/oauth/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {benchRedirectURI}, "code_verifier": {verifier},
	}.Encode())
	if err == nil {
		app.basicAuth(req)
	}
	return req, err
}

// formRequest is a form POST to host's path.
func (b *bench) formRequest(host, path, form string) (*http.Request, error) {
	req, err := http.NewRequest("POST", "http://"+b.addr+path, strings.NewReader(form))
	if err != nil {
		return nil, err
	}
	req.Host = host
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req, nil
}

// accessToken returns the access token of a token endpoint's answer.
func accessToken(body []byte) (string, error) {
	var t struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" || t.TokenType != "Bearer" {
		return "", errors.New("no bearer access token")
	}
	return t.AccessToken, nil
}

// browser is one user agent of the code scenario: it keeps its cookies
// (the hosted sign-in's are __Host- and Secure, which a cookie jar would
// not send over plain http) and takes each redirect as one step.
type browser struct {
	b       *bench
	host    string
	cookies map[string]string
}

// noRedirects is the bench's client, stopping at each redirect.
func (b *bench) noRedirects() *http.Client {
	if b.stepClient == nil {
		c := *b.client
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		b.stepClient = &c
	}
	return b.stepClient
}

// step sends one request of the browser's to a path of its host (a path
// with its query: what a redirect names), with its cookies, and keeps
// the cookies of the answer.
func (br *browser) step(method, path string, form url.Values) (status int, location *url.URL, body []byte, err error) {
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, "http://"+br.b.addr+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Host = br.host
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for name, value := range br.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	resp, err := br.b.noRedirects().Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 || c.Value == "" {
			delete(br.cookies, c.Name)
		} else {
			br.cookies[c.Name] = c.Value
		}
	}
	location, _ = resp.Location()
	return resp.StatusCode, location, body, err
}

// follow takes the redirect the last step answered with, which must lead
// to path; it returns the next step's answer.
func (br *browser) follow(status int, location *url.URL, body []byte, path string) (int, *url.URL, []byte, error) {
	if (status != http.StatusFound && status != http.StatusSeeOther) || location == nil || location.Path != path {
		return 0, nil, nil, fmt.Errorf("want a redirect to %s, got %d to %v: %.300s", path, status, location, body)
	}
	return br.step("GET", location.RequestURI(), nil)
}

var formField = regexp.MustCompile(`name="(id|csrf)" value="([^"]*)"`)

// signIn runs the whole flow once, signing in with email through the
// hosted form, and returns the code and its PKCE verifier.
func (br *browser) signIn(app oidcClient, email string) (code, verifier string, err error) {
	authURL, verifier := authorizeURL(app)
	status, loc, body, err := br.step("GET", authURL, nil)
	if err == nil {
		status, loc, body, err = br.follow(status, loc, body, "/oauth/login")
	}
	if err != nil {
		return "", "", err
	}
	if status != http.StatusOK {
		return "", "", fmt.Errorf("sign-in page: %d %.300s", status, body)
	}
	fields := map[string]string{}
	for _, m := range formField.FindAllStringSubmatch(string(body), -1) {
		fields[m[1]] = m[2]
	}
	status, loc, body, err = br.step("POST", "/oauth/login", url.Values{
		"id": {fields["id"]}, "csrf": {fields["csrf"]}, "step": {"password"}, "email": {email}, "password": {br.b.password},
	})
	if err == nil {
		status, loc, body, err = br.follow(status, loc, body, "/oauth/authorize/callback")
	}
	if err != nil {
		return "", "", fmt.Errorf("sign in as %s: %w", email, err)
	}
	code, err = codeOf(status, loc, body)
	return code, verifier, err
}

// authorize runs an authorization that the browser's session lets
// through (authorize, the sign-in without its form, the callback), and
// returns the code and its PKCE verifier.
func (br *browser) authorize(app oidcClient) (code, verifier string, err error) {
	authURL, verifier := authorizeURL(app)
	status, loc, body, err := br.step("GET", authURL, nil)
	if err == nil {
		status, loc, body, err = br.follow(status, loc, body, "/oauth/login")
	}
	if err == nil {
		status, loc, body, err = br.follow(status, loc, body, "/oauth/authorize/callback")
	}
	if err != nil {
		return "", "", err
	}
	code, err = codeOf(status, loc, body)
	return code, verifier, err
}

// codeOf reads the code from the callback's redirect to the app.
func codeOf(status int, loc *url.URL, body []byte) (string, error) {
	if (status != http.StatusFound && status != http.StatusSeeOther) || loc == nil || loc.Query().Get("code") == "" {
		return "", fmt.Errorf("want a redirect to the app with a code, got %d to %v: %.300s", status, loc, body)
	}
	return loc.Query().Get("code"), nil
}

// authorizeURL is a new authorization request of app's (PKCE S256, state
// and nonce), and its code verifier.
func authorizeURL(app oidcClient) (path, verifier string) {
	verifier = randomString()
	sum := sha256.Sum256([]byte(verifier))
	return "/oauth/authorize?" + url.Values{
		"response_type": {"code"}, "client_id": {app.id}, "redirect_uri": {benchRedirectURI},
		"scope": {"openid profile email"}, "state": {randomString()}, "nonce": {randomString()},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}.Encode(), verifier
}

// randomString is 256 random bits, base64url.
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
