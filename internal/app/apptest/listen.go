package apptest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Listener is a TCP port on the loopback interface for an Env's server,
// for clients that cannot be handed an in-process transport: a browser, a
// program in another language. It is taken before the Env is made, so
// that the Env's tenants' issuers can name it: http://<slug>.localhost:<port>.
// Browsers treat *.localhost as a secure context (the hosted sign-in's
// Secure, __Host- cookies work over http there) and resolve it to the
// loopback interface themselves.
type Listener struct {
	ln   net.Listener
	Port int
}

// Listen takes a free port on 127.0.0.1 for the test. Pass Configure in
// the Env's Options (Options.Config), then Serve the Env.
func Listen(t testing.TB) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return &Listener{ln: ln, Port: ln.Addr().(*net.TCPAddr).Port}
}

// Issuer is the token issuer of tenant t on the listener:
// http://<slug>.localhost:<port>.
func (l *Listener) Issuer(t *tenancy.Tenant) string {
	return "http://" + t.Slug + ".localhost:" + strconv.Itoa(l.Port)
}

// Configure makes the listener's Issuer the app's.
func (l *Listener) Configure(c *app.Config) { c.Issuer = l.Issuer }

// Serve answers e's requests on the listener until the test ends: e's
// own server (HTTP), which tests drive in process too. Connections made
// before Serve wait for it. A second server (server.New) cannot be made
// for the Env, since its routes register their metrics once; so a
// connection on which no request arrives is answered as fasthttp does (a
// 408 after the read timeout) rather than closed silently as
// server.Server.Serve does.
func (l *Listener) Serve(t testing.TB, e *Env) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- e.HTTP.Listener(l.ln) }()
	t.Cleanup(func() {
		if err := e.HTTP.ShutdownWithTimeout(5 * time.Second); err != nil {
			t.Errorf("shut the server down: %v", err)
		}
		l.ln.Close() // in case the server had not started listening yet
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("server: %v", err)
		}
	})
}

// HTTPClient returns an http.Client that reaches the listener for every
// *.localhost host, which Go's resolver does not resolve, keeping the
// request's URL and Host as they are: for Go clients given a tenant's
// issuer.
func (l *Listener) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if host == "localhost" || strings.HasSuffix(host, ".localhost") {
			if port != strconv.Itoa(l.Port) {
				return nil, fmt.Errorf("apptest: %s is not the listener's port %d", addr, l.Port)
			}
			addr = l.ln.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
