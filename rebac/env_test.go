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

const goodPassword = "violet-Harbor-93-lantern"

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
func (e *env) signup(slug, email, password string) {
	e.t.Helper()
	e.Must(202, "POST", slug, "/v1/auth/signup", "", map[string]string{"email": email, "password": password})
}

// login signs an account in and returns its tokens.
func (e *env) login(slug, email, password string) identity.Tokens {
	e.t.Helper()
	var tok identity.Tokens
	e.Must(200, "POST", slug, "/v1/auth/login", "", map[string]string{"email": email, "password": password}).JSON(e.t, &tok)
	return tok
}

// confirmed marks the address of an account as confirmed, as opening
// its confirmation mail does (the mail flow has tests of its own, in
// identity).
func (e *env) confirmed(email string) {
	e.t.Helper()
	confirmAddress(e.t, e.Env, email)
}

func confirmAddress(t testing.TB, a *apptest.Env, email string) {
	t.Helper()
	tag, err := a.Admin.Exec(context.Background(), "update app.users set email_verified_at = now() where email = $1", email)
	if err != nil || tag.RowsAffected() == 0 {
		t.Fatalf("confirm %s: %v (%d accounts)", email, err, tag.RowsAffected())
	}
}

// adminLogin signs up an account, makes it the tenant's admin and signs
// it in.
func (e *env) adminLogin(slug, email string) identity.Tokens {
	e.t.Helper()
	e.signup(slug, email, goodPassword)
	e.confirmed(email)
	if _, err := e.Accounts.SetRole(context.Background(), e.tenantNamed(slug), email, identity.RoleAdmin); err != nil {
		e.t.Fatal(err)
	}
	return e.login(slug, email, goodPassword)
}

// me returns the signed-in user.
func (e *env) me(slug, token string) identity.User {
	e.t.Helper()
	var u identity.User
	e.Must(200, "GET", slug, "/v1/me", token, nil).JSON(e.t, &u)
	return u
}

// member signs up a confirmed account and returns its token and id.
func (e *env) member(slug, email string) (token, id string) {
	e.t.Helper()
	e.signup(slug, email, goodPassword)
	e.confirmed(email)
	token = e.login(slug, email, goodPassword).AccessToken
	return token, e.me(slug, token).ID.String()
}

// role creates a custom role as token and returns its id.
func (e *env) role(slug, token, name string, perms ...string) string {
	e.t.Helper()
	var r struct{ ID string }
	e.Must(201, "POST", slug, "/v1/admin/roles", token, map[string]any{"name": name, "permissions": perms}).JSON(e.t, &r)
	return r.ID
}

// group creates a group as token and returns its id.
func (e *env) group(slug, token, name string) string {
	e.t.Helper()
	var g struct{ ID string }
	e.Must(201, "POST", slug, "/v1/admin/groups", token, map[string]string{"name": name}).JSON(e.t, &g)
	return g.ID
}

// assign assigns a role as token, which must answer status.
func (e *env) assign(status int, slug, token, role, typ, id string) {
	e.t.Helper()
	r := e.Do("POST", slug, "/v1/admin/roles/"+role+"/assignments", token, map[string]string{"type": typ, "id": id})
	if r.Status != status {
		e.t.Fatalf("assign role %s to %s %s: %d %s; want %d", role, typ, id, r.Status, r.Body, status)
	}
}

// addMember adds a member to a group as token, which must answer status.
func (e *env) addMember(status int, slug, token, group, typ, id string, manager bool) {
	e.t.Helper()
	r := e.Do("POST", slug, "/v1/admin/groups/"+group+"/members", token, map[string]any{"type": typ, "id": id, "manager": manager})
	if r.Status != status {
		e.t.Fatalf("add %s %s to group %s: %d %s; want %d", typ, id, group, r.Status, r.Body, status)
	}
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
