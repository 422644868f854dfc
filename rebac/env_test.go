package rebac_test

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/app/apptest"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// env is one test's Gatehouse (apptest.Env) and a client of its HTTP
// API, for tests of rebac's admin and check APIs.
type env struct {
	*apptest.Env
	*apptest.Client
	t *testing.T
}

// newEnv returns a running env for t, changed by options.
func newEnv(t *testing.T, options ...func(*apptest.Options)) *env {
	t.Helper()
	var o apptest.Options
	for _, f := range options {
		f(&o)
	}
	a := apptest.New(t, o)
	return &env{Env: a, Client: a.Client(t), t: t}
}

// withSpiceDB checks an env's permissions with srv.
func withSpiceDB(srv *spicedbtest.Server) func(*apptest.Options) {
	return func(o *apptest.Options) { o.SpiceDB = srv }
}

const goodPassword = apptest.Password

func (e *env) tenant(slug string, placement tenancy.Placement, signup tenancy.Signup) *tenancy.Tenant {
	e.t.Helper()
	p := tenancy.CreateParams{Slug: slug, Name: slug, Placement: placement, Signup: signup}
	if placement == tenancy.Silo {
		p.SiloCluster = pgtest.Second(e.t).URL("postgres")
	}
	tn, err := e.Registry.Create(context.Background(), p)
	if err != nil {
		e.t.Fatal(err)
	}
	return tn
}

// tenantNamed returns tenant slug as the registry has it now.
func (e *env) tenantNamed(slug string) *tenancy.Tenant {
	e.t.Helper()
	tn, err := e.Registry.Get(context.Background(), slug)
	if err != nil {
		e.t.Fatal(err)
	}
	return tn
}

// signup creates an account.
func (e *env) signup(slug, email, password string) { e.t.Helper(); e.SignUp(slug, email, password) }

// login signs an account in and returns its tokens.
func (e *env) login(slug, email, password string) identity.Tokens {
	e.t.Helper()
	return e.Login(slug, email, password)
}

// confirmed marks the address of an account as confirmed.
func (e *env) confirmed(email string) { e.t.Helper(); e.Confirm(email) }

// adminLogin signs up an account, makes it the tenant's admin and signs
// it in.
func (e *env) adminLogin(slug, email string) identity.Tokens {
	e.t.Helper()
	return e.Client.AdminLogin(slug, email)
}

// me returns the signed-in user.
func (e *env) me(slug, token string) identity.User { e.t.Helper(); return e.Me(slug, token) }

// member signs up a confirmed account and returns its token and id.
func (e *env) member(slug, email string) (token, id string) {
	e.t.Helper()
	return e.Member(slug, email)
}

// role creates a custom role as token and returns its id.
func (e *env) role(slug, token, name string, perms ...string) string {
	e.t.Helper()
	return e.Role(slug, token, name, perms...)
}

// group creates a group as token and returns its id.
func (e *env) group(slug, token, name string) string { e.t.Helper(); return e.Group(slug, token, name) }

// assign assigns a role as token, which must answer status.
func (e *env) assign(status int, slug, token, role, typ, id string) {
	e.t.Helper()
	e.Assign(status, slug, token, role, typ, id)
}

// addMember adds a member to a group as token, which must answer status.
func (e *env) addMember(status int, slug, token, group, typ, id string, manager bool) {
	e.t.Helper()
	e.AddMember(status, slug, token, group, typ, id, manager)
}

// decisions is the count of check-API decisions of tenant slug at
// endpoint with outcome, from the metrics.
func (e *env) decisions(slug, endpoint, outcome string) float64 {
	e.t.Helper()
	families, err := e.Metrics.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	want := map[string]string{"tenant": slug, "endpoint": endpoint, "outcome": outcome}
	for _, f := range families {
		if f.GetName() != "gatehouse_permission_decisions_total" {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// eventuallyTrue polls cond for up to 10 seconds.
func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
