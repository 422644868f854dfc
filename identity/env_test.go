package identity_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/identity/mail/mailtest"
	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/internal/app/apptest"
	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/problem/problemtest"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMain(m *testing.M) {
	proctest.Main(m)
}

// env is one test's Gatehouse (apptest.Env), with helpers to drive its
// HTTP API.
type env struct {
	t      *testing.T
	env    *apptest.Env
	appURL string
	admin  *pgxpool.Pool
	reg    *tenancy.Registry
	data   *tenancy.DB
	svc    *identity.Service
	keys   *identity.Keys
	sealer *secrets.Sealer
	app    *fiber.App
	client *apptest.Client // drives app
	mail   *mailtest.Server
	outbox *mail.Outbox
	authz  *rebac.Service
	relay  *rebac.Relay
	// spicedb is the env's own SpiceDB client (datastore).
	spicedb *rebac.Client
	// metrics holds the check API's metrics.
	metrics *prometheus.Registry
}

var issuer = apptest.Issuer

type envOption func(*apptest.Options)

// withConfig changes the app's configuration of an env.
func withConfig(f func(*app.Config)) envOption {
	return func(o *apptest.Options) {
		prev := o.Config
		o.Config = func(c *app.Config) {
			if prev != nil {
				prev(c)
			}
			f(c)
		}
	}
}

// withCachingResolver runs the env's resolver as a server does, caching
// tenants and listening for their changes (benchmarks: tests want every
// change seen at once).
func withCachingResolver() envOption {
	return func(o *apptest.Options) { o.Caching = true }
}

// withMail sends an env's mail to srv.
func withMail(srv *mailtest.Server) envOption {
	return func(o *apptest.Options) { o.Mail = srv }
}

func newEnv(t *testing.T, options ...envOption) *env {
	t.Helper()
	e := newBenchEnv(t, options...)
	e.t = t
	return e
}

// newBenchEnv is newEnv for benchmarks too (no HTTP helpers).
func newBenchEnv(t testing.TB, options ...envOption) *env {
	t.Helper()
	var o apptest.Options
	for _, f := range options {
		f(&o)
	}
	a := apptest.New(t, o)
	return &env{
		env: a, appURL: a.DB.AppURL, admin: a.Admin, reg: a.Registry, data: a.Data, svc: a.Accounts, keys: a.Keys, sealer: a.Sealer,
		app: a.HTTP, client: a.Client(t), mail: a.Mail, outbox: a.Outbox, authz: a.Authz, relay: a.Relay, spicedb: a.SpiceDB, metrics: a.Metrics,
	}
}

func (e *env) tenant(slug string, placement tenancy.Placement, signup tenancy.Signup) *tenancy.Tenant {
	e.t.Helper()
	p := tenancy.CreateParams{Slug: slug, Name: slug, Placement: placement, Signup: signup}
	if placement == tenancy.Silo {
		p.SiloCluster = pgtest.Second(e.t).URL("postgres")
	}
	tn, err := e.reg.Create(context.Background(), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return tn
}

type response struct {
	status int
	header map[string]string
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %d %s: %v", r.status, r.body, err)
	}
}

// do sends a request to host (a tenant's slug, or a full host) with an
// optional bearer token and JSON body.
func (e *env) do(method, slug, path, token string, body any) response {
	e.t.Helper()
	return fromApp(e.client.Do(method, slug, path, token, body))
}

// send sends a request with the given headers and body to a tenant's host.
func (e *env) send(method, slug, path string, headers map[string]string, body string) response {
	e.t.Helper()
	return fromApp(e.client.Send(method, slug, path, headers, body))
}

// must sends a request that must answer want.
func (e *env) must(want int, method, slug, path, token string, body any) response {
	e.t.Helper()
	return fromApp(e.client.Must(want, method, slug, path, token, body))
}

func fromApp(r apptest.Response) response {
	return response{status: r.Status, header: r.Header, body: r.Body}
}

// problemOf asserts r is a problem+json answer with status and returns it.
func (e *env) problemOf(r response, status int) problem.Details {
	e.t.Helper()
	return problemtest.Want(e.t, r.status, r.header["Content-Type"], r.body, status, "")
}

const goodPassword = apptest.Password

// signup creates an account and returns nothing; login returns tokens.
func (e *env) signup(slug, email, password string) {
	e.t.Helper()
	e.must(202, "POST", slug, "/v1/auth/signup", "", map[string]string{"email": email, "password": password})
}

// mails waits for n mails to the address and returns them, oldest first.
func (e *env) mails(to string, n int) []mailtest.Message {
	e.t.Helper()
	return e.mail.Wait(e.t, to, n, 20*time.Second)
}

func (e *env) login(slug, email, password string) identity.Tokens {
	e.t.Helper()
	var tok identity.Tokens
	e.must(200, "POST", slug, "/v1/auth/login", "", map[string]string{"email": email, "password": password}).json(e.t, &tok)
	return tok
}
