package identity_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

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
	e.must(201, "POST", slug, "/v1/admin/roles", token, map[string]any{"name": name, "permissions": perms}).json(e.t, &r)
	return r.ID
}

// group creates a group as token and returns its id.
func (e *env) group(slug, token, name string) string {
	e.t.Helper()
	var g struct{ ID string }
	e.must(201, "POST", slug, "/v1/admin/groups", token, map[string]string{"name": name}).json(e.t, &g)
	return g.ID
}

func (e *env) assign(status int, slug, token, role, typ, id string) {
	e.t.Helper()
	r := e.do("POST", slug, "/v1/admin/roles/"+role+"/assignments", token, map[string]string{"type": typ, "id": id})
	if r.status != status {
		e.t.Fatalf("assign role %s to %s %s: %d %s; want %d", role, typ, id, r.status, r.body, status)
	}
}

func (e *env) addMember(status int, slug, token, group, typ, id string, manager bool) {
	e.t.Helper()
	r := e.do("POST", slug, "/v1/admin/groups/"+group+"/members", token, map[string]any{"type": typ, "id": id, "manager": manager})
	if r.status != status {
		e.t.Fatalf("add %s %s to group %s: %d %s; want %d", typ, id, group, r.status, r.body, status)
	}
}

// TestOnlyAdminsActOnAdmins: a user manager manages members, never an
// admin; and no admin change leaves the tenant without an active admin.
func TestOnlyAdminsActOnAdmins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@admins.test").AccessToken
	second := e.adminLogin("acme", "second@admins.test")
	secondID := e.me("acme", second.AccessToken).ID.String()
	hr, hrID := e.member("acme", "hr@admins.test")
	_, plainID := e.member("acme", "plain@admins.test")
	e.assign(204, "acme", boss, e.role("acme", boss, "hr", "manage_users"), "user", hrID)
	var sessions struct{ Sessions []struct{ ID string } }
	e.must(200, "GET", "acme", "/v1/admin/users/"+secondID+"/sessions", hr, nil).json(t, &sessions)
	if len(sessions.Sessions) == 0 {
		t.Fatal("the second admin has no session")
	}

	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"DELETE", "/v1/admin/users/" + secondID, nil},
		{"PATCH", "/v1/admin/users/" + secondID, map[string]string{"status": "disabled"}},
		{"PATCH", "/v1/admin/users/" + secondID, map[string]string{"display_name": "Demoted"}},
		{"POST", "/v1/admin/users/" + secondID + "/disable", nil},
		{"POST", "/v1/admin/users/" + secondID + "/enable", nil},
		{"POST", "/v1/admin/users/" + secondID + "/unlock", nil},
		{"POST", "/v1/admin/users/" + secondID + "/reset-password", nil},
		{"DELETE", "/v1/admin/users/" + secondID + "/sessions/" + sessions.Sessions[0].ID, nil},
	} {
		e.problemOf(e.do(c.method, "acme", c.path, hr, c.body), 403)
	}
	if u := e.me("acme", second.AccessToken); u.Status != "active" || u.DisplayName == "Demoted" || u.Role != identity.RoleAdmin {
		t.Fatalf("the second admin after the user manager's tries: %+v", u)
	}
	// Members are the user manager's to manage.
	e.must(200, "POST", "acme", "/v1/admin/users/"+plainID+"/disable", hr, nil)
	e.must(200, "POST", "acme", "/v1/admin/users/"+plainID+"/enable", hr, nil)

	// Admins on admins: allowed. Two admins, the tenant's only ones,
	// demoting each other at once leave one of them admin.
	ctx := context.Background()
	for i := range 4 {
		a := e.adminLogin("acme", fmt.Sprintf("pair%da@admins.test", i)).AccessToken
		b := e.adminLogin("acme", fmt.Sprintf("pair%db@admins.test", i)).AccessToken
		aID, bID := e.me("acme", a).ID.String(), e.me("acme", b).ID.String()
		rows, err := e.admin.Query(ctx, "select id::text from app.users where tenant_id = $1 and role = 'admin' and id::text not in ($2, $3)", tn.ID.UUID(), aID, bID)
		if err != nil {
			t.Fatal(err)
		}
		others, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range others {
			e.must(200, "PATCH", "acme", "/v1/admin/users/"+id, a, map[string]string{"role": identity.RoleMember})
		}
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		wg.Go(func() {
			statuses[0] = e.do("PATCH", "acme", "/v1/admin/users/"+bID, a, map[string]string{"role": identity.RoleMember}).status
		})
		wg.Go(func() {
			statuses[1] = e.do("PATCH", "acme", "/v1/admin/users/"+aID, b, map[string]string{"role": identity.RoleMember}).status
		})
		wg.Wait()
		var active int
		e.admin.QueryRow(ctx, "select count(*) from app.users where tenant_id = $1 and role = 'admin' and status = 'active'", tn.ID.UUID()).Scan(&active)
		if active != 1 {
			t.Fatalf("round %d: two admins demoting each other (%v) left %d active admins, want 1", i, statuses, active)
		}
		if _, err := e.svc.SetRole(ctx, tn, "boss@admins.test", identity.RoleAdmin); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAdminRightsOnlyForConfirmedAddresses: an account whose owner never
// confirmed its address gets no admin rights and no manage_ role, and an
// operator's admin invitation of its address takes it over.
func TestAdminRightsOnlyForConfirmedAddresses(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@confirm.test").AccessToken
	// An attacker signs up the address of the customer's real admin,
	// before they do, and signs in without opening any mail.
	e.signup("acme", "cfo@customer.test", goodPassword)
	squatter := e.login("acme", "cfo@customer.test", goodPassword).AccessToken
	squatterID := e.me("acme", squatter).ID.String()

	d := e.problemOf(e.do("PATCH", "acme", "/v1/admin/users/"+squatterID, boss, map[string]string{"role": "admin"}), 409)
	if !strings.Contains(d.Detail, "not confirmed") {
		t.Fatalf("refusal says %q", d.Detail)
	}
	e.assign(409, "acme", boss, e.role("acme", boss, "apps", "manage_apps"), "user", squatterID)
	group := e.group("acme", boss, "finance")
	e.assign(204, "acme", boss, e.role("acme", boss, "finance-users", "manage_users"), "group", group)
	e.addMember(409, "acme", boss, group, "user", squatterID, false)
	readers := e.role("acme", boss, "readers", "view_audit")
	e.assign(204, "acme", boss, readers, "user", squatterID)
	if _, err := e.svc.SetRole(context.Background(), tn, "cfo@customer.test", identity.RoleAdmin); err == nil || !strings.Contains(err.Error(), "not confirmed") {
		t.Fatalf("an operator's grant to an unconfirmed account: %v", err)
	}

	// The operator invites the address as an admin: the squatter is out,
	// and the invitation goes to whoever owns the address.
	u, err := e.svc.InviteAdmin(context.Background(), tn, "cfo@customer.test", "CFO")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID.String() != squatterID || u.Role != identity.RoleAdmin || u.DisplayName != "CFO" {
		t.Fatalf("invited %+v", u)
	}
	var assigned struct{ Assignments []any }
	e.must(200, "GET", "acme", "/v1/admin/roles/"+readers+"/assignments", boss, nil).json(t, &assigned)
	if len(assigned.Assignments) != 0 {
		t.Fatalf("the squatter's role stayed with the account: %v", assigned.Assignments)
	}
	e.problemOf(e.do("GET", "acme", "/v1/me", squatter, nil), 401)
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "cfo@customer.test", "password": goodPassword}), 401)
	mails := e.mails("cfo@customer.test", 2) // the sign-up's confirmation, then the invitation
	acceptInvite(t, e, "acme", mails[1], "the-real-Cfo-password-77")
	cfo := e.login("acme", "cfo@customer.test", "the-real-Cfo-password-77").AccessToken
	e.must(200, "GET", "acme", "/v1/admin/users", cfo, nil)
}

// TestEmailChangeEndsOtherSessions: asking for a new address signs out
// every other session, as a password change does.
func TestEmailChangeEndsOtherSessions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "ada@move.test", goodPassword)
	here := e.login("acme", "ada@move.test", goodPassword).AccessToken
	there := e.login("acme", "ada@move.test", goodPassword).AccessToken
	e.must(202, "POST", "acme", "/v1/me/email", here, map[string]string{"email": "ada@new.test", "current_password": goodPassword})
	e.me("acme", here)
	e.problemOf(e.do("GET", "acme", "/v1/me", there, nil), 401)
}
