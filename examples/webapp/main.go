// Command webapp is a web app that signs its users in through a Gatehouse
// tenant, as any app does through an OpenID Connect provider: the
// authorization code flow with PKCE (github.com/coreos/go-oidc and
// golang.org/x/oauth2), the ID token verified, and logout through the
// provider.
//
//	GATEHOUSE_CLIENT_SECRET=… go run ./examples/webapp \
//	    -issuer http://acme.localhost:8080 -client-id …
//
// then open http://127.0.0.1:8081. `tools/dev.sh` registers acme's demo
// app for it and prints the command.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"html/template"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

func main() {
	issuer := flag.String("issuer", os.Getenv("GATEHOUSE_ISSUER"), "the tenant's issuer URL")
	clientID := flag.String("client-id", os.Getenv("GATEHOUSE_CLIENT_ID"), "the app's client id")
	addr := flag.String("addr", "127.0.0.1:8081", "where to listen")
	flag.Parse()
	secret := os.Getenv("GATEHOUSE_CLIENT_SECRET") // not a flag: flags show in ps
	if *issuer == "" || *clientID == "" || secret == "" {
		log.Fatal("set -issuer, -client-id and GATEHOUSE_CLIENT_SECRET")
	}
	ctx := oidc.ClientContext(context.Background(), &http.Client{Transport: localhostTransport(), Timeout: 10 * time.Second})
	provider, err := oidc.NewProvider(ctx, *issuer)
	if err != nil {
		log.Fatalf("discovery: %v", err)
	}
	var meta struct {
		EndSession string `json:"end_session_endpoint"`
	}
	if err := provider.Claims(&meta); err != nil {
		log.Fatal(err)
	}
	base := "http://" + *addr
	a := &app{
		ctx: ctx, issuer: *issuer, provider: provider, endSession: meta.EndSession, home: base + "/",
		verifier: provider.Verifier(&oidc.Config{ClientID: *clientID}),
		config: oauth2.Config{ClientID: *clientID, ClientSecret: secret, Endpoint: provider.Endpoint(), RedirectURL: base + "/callback",
			Scopes: []string{oidc.ScopeOpenID, "profile", "email"}},
		flows: map[string]flow{}, sessions: map[string]session{},
	}
	http.HandleFunc("GET /{$}", a.index)
	http.HandleFunc("GET /login", a.login)
	http.HandleFunc("GET /callback", a.callback)
	http.HandleFunc("POST /logout", a.logout)
	log.Printf("open %s", base)
	log.Fatal(http.ListenAndServe(*addr, nil))
}

// localhostTransport reaches <tenant>.localhost on this machine, as
// browsers do (RFC 6761); Go's resolver asks DNS for it.
func localhostTransport() http.RoundTripper {
	d := &net.Dialer{Timeout: 5 * time.Second}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".localhost") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return d.DialContext(ctx, network, addr)
	}
	return t
}

// app is the web app: its OpenID Connect client, and what it keeps in
// memory (a real app keeps these in its session store).
type app struct {
	ctx          context.Context
	issuer, home string
	endSession   string
	provider     *oidc.Provider
	verifier     *oidc.IDTokenVerifier
	config       oauth2.Config
	mu           sync.Mutex
	flows        map[string]flow    // by state: sign-ins under way
	sessions     map[string]session // by cookie: who is signed in
}

type flow struct {
	nonce, verifier string
	started         time.Time
}

type session struct {
	Name    string `json:"name"`
	Email   string `json:"email"`
	Subject string `json:"sub"`
	idToken string
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Demo app</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32em; margin: 3em auto">
<h1>Demo app</h1>
{{if .Subject}}<p>Signed in as <b>{{.Name}}</b> ({{.Email}}), subject {{.Subject}}.</p>
<form method="post" action="/logout"><button>Sign out</button></form>
{{else}}<p><a href="/login">Sign in</a></p>{{end}}
</body></html>`))

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	s, _ := a.session(r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	page.Execute(w, s)
}

func (a *app) login(w http.ResponseWriter, r *http.Request) {
	state, nonce, verifier := random(), random(), oauth2.GenerateVerifier()
	a.mu.Lock()
	for k, f := range a.flows {
		if time.Since(f.started) > 10*time.Minute {
			delete(a.flows, k)
		}
	}
	a.flows[state] = flow{nonce: nonce, verifier: verifier, started: time.Now()}
	a.mu.Unlock()
	// The sign-in belongs to this browser: the callback must come back to
	// it, or anyone could hand a victim a link that signs them in as
	// someone else (login CSRF).
	http.SetCookie(w, &http.Cookie{Name: "demo_flow", Value: state, Path: "/callback", HttpOnly: true,
		SameSite: http.SameSiteLaxMode, MaxAge: 600})
	http.Redirect(w, r, a.config.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), http.StatusFound)
}

func (a *app) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mine, err := r.Cookie("demo_flow")
	if err != nil || mine.Value != q.Get("state") {
		http.Error(w, "this sign-in was not started in this browser: sign in again", http.StatusBadRequest)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "demo_flow", Path: "/callback", MaxAge: -1})
	a.mu.Lock()
	f, ok := a.flows[q.Get("state")]
	delete(a.flows, q.Get("state"))
	a.mu.Unlock()
	switch {
	case !ok:
		http.Error(w, "unknown or spent state: sign in again", http.StatusBadRequest)
		return
	case q.Get("iss") != a.issuer: // RFC 9207: the answer is from our provider
		http.Error(w, "the answer names another issuer", http.StatusBadRequest)
		return
	case q.Get("error") != "":
		http.Error(w, "sign-in refused: "+q.Get("error")+": "+q.Get("error_description"), http.StatusForbidden)
		return
	}
	tok, err := a.config.Exchange(a.ctx, q.Get("code"), oauth2.VerifierOption(f.verifier))
	if err != nil {
		http.Error(w, "code exchange: "+err.Error(), http.StatusBadGateway)
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := a.verifier.Verify(a.ctx, raw)
	if err != nil || idt.Nonce != f.nonce {
		http.Error(w, "ID token refused", http.StatusBadGateway)
		return
	}
	var s session
	if err := idt.Claims(&s); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	s.idToken = raw
	id := random()
	a.mu.Lock()
	a.sessions[id] = s
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "demo", Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the app's session, then the provider's (RP-initiated
// logout), which sends the browser back home.
func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	s, id := a.session(r)
	a.mu.Lock()
	delete(a.sessions, id)
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "demo", Path: "/", MaxAge: -1})
	if s.idToken == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	v := url.Values{"id_token_hint": {s.idToken}, "post_logout_redirect_uri": {a.home}}
	http.Redirect(w, r, a.endSession+"?"+v.Encode(), http.StatusSeeOther)
}

func (a *app) session(r *http.Request) (session, string) {
	c, err := r.Cookie("demo")
	if err != nil {
		return session{}, ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[c.Value], c.Value
}

func random() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
