package apptest

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Background returns an Env for code that runs outside any test: a test
// binary's TestMain, for runnable examples that call a real Gatehouse.
// It also returns the testing.TB the Env's helpers take there (a failure
// panics, since there is no test to fail) and the function that stops
// the Env; call it before the test binary's servers stop (register it
// with proctest.AtExit after New).
func Background(o Options) (*Env, testing.TB, func()) {
	tb := &backgroundTB{}
	e := New(tb, o)
	return e, tb, tb.stop
}

// backgroundTB is the testing.TB of Background. testing.TB cannot be
// implemented outside package testing, so it embeds one (nil): the
// methods the Env and its helpers use are defined here, any other would
// panic.
type backgroundTB struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
}

func (b *backgroundTB) Helper()                   {}
func (b *backgroundTB) Name() string              { return "background" }
func (b *backgroundTB) Logf(string, ...any)       {}
func (b *backgroundTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (b *backgroundTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (b *backgroundTB) Errorf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func (b *backgroundTB) Cleanup(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, f)
}

func (b *backgroundTB) stop() {
	b.mu.Lock()
	fs := b.cleanups
	b.cleanups = nil
	b.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// HTTPClient returns an http.Client whose requests to a tenant's issuer
// (Issuer: https://<slug>.gatehouse.test) reach e's server in process,
// as that tenant's: for clients that are given the tenant's URL, as
// SaaS apps are (identity/client).
func (e *Env) HTTPClient() *http.Client {
	return &http.Client{Transport: inProcess{e}}
}

type inProcess struct{ e *Env }

func (p inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	slug, ok := strings.CutSuffix(r.URL.Hostname(), ".gatehouse.test")
	if !ok {
		return nil, fmt.Errorf("apptest: %s is no tenant of this Env", r.URL.Host)
	}
	r = r.Clone(r.Context())
	r.Host = slug + ".localhost"
	return p.e.HTTP.Test(r, 30_000)
}
