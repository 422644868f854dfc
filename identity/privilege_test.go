package identity_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
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

// TestNoOneGivesWhatTheyDoNotHold: a role manager, a group manager and
// their nested groups may give only the permissions their giver holds,
// to anyone, themselves included.
func TestNoOneGivesWhatTheyDoNotHold(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@give.test").AccessToken
	rm, rmID := e.member("acme", "roles@give.test")
	_, otherID := e.member("acme", "other@give.test")
	gm, gmID := e.member("acme", "groups@give.test")
	rmRole := e.role("acme", boss, "role-manager", "manage_roles")
	e.assign(204, "acme", boss, rmRole, "user", rmID)

	// Roles: nothing the role manager lacks, in a new role or an old one.
	for _, perms := range [][]string{{"manage_users"}, {"manage_roles", "view_audit"}, {"manage_apps"}} {
		e.problemOf(e.do("POST", "acme", "/v1/admin/roles", rm, map[string]any{"name": "wider", "permissions": perms}), 403)
	}
	e.problemOf(e.do("PATCH", "acme", "/v1/admin/roles/"+rmRole, rm, map[string]any{"permissions": []string{"manage_roles", "manage_users"}}), 403)
	var got struct{ Permissions []string }
	e.must(200, "GET", "acme", "/v1/admin/roles/"+rmRole, rm, nil).json(t, &got)
	if strings.Join(got.Permissions, ",") != "manage_roles" {
		t.Fatalf("the role manager's role now carries %v", got.Permissions)
	}
	// What it holds, it may give, and a description is no grant.
	same := e.role("acme", rm, "deputy-role-manager", "manage_roles")
	e.assign(204, "acme", rm, same, "user", otherID)
	e.must(200, "PATCH", "acme", "/v1/admin/roles/"+rmRole, rm, map[string]any{"description": "manages roles"})
	// Nor another's role that carries more, to itself or to others.
	auditor := e.role("acme", boss, "auditor", "view_audit")
	e.assign(403, "acme", rm, auditor, "user", rmID)
	e.assign(403, "acme", rm, auditor, "user", otherID)
	admins := e.role("acme", boss, "user-admins", "manage_users")
	e.assign(403, "acme", rm, admins, "user", rmID)
	e.problemOf(e.do("GET", "acme", "/v1/admin/users", rm, nil), 403)
	e.problemOf(e.do("GET", "acme", "/v1/admin/audit", rm, nil), 403)

	// Groups: whoever runs a group that carries a role (here through the
	// group that contains it) adds no one to it unless they hold what it
	// carries. A user manager runs every group; a group's own manager is
	// a member, and so holds what the group carries.
	hr, hrID := e.member("acme", "hr@give.test")
	e.assign(204, "acme", boss, e.role("acme", boss, "hr", "manage_users"), "user", hrID)
	outer, inner, plain := e.group("acme", boss, "outer"), e.group("acme", boss, "inner"), e.group("acme", boss, "plain")
	e.addMember(204, "acme", boss, outer, "group", inner, false)
	e.assign(204, "acme", boss, auditor, "group", outer)
	e.addMember(403, "acme", hr, inner, "user", otherID, false)
	e.addMember(403, "acme", hr, inner, "user", hrID, true)
	e.addMember(204, "acme", hr, plain, "user", otherID, false)
	e.addMember(204, "acme", boss, inner, "user", gmID, true)
	e.addMember(204, "acme", gm, inner, "user", otherID, false)
	// Nesting a group into one that carries more: refused too.
	e.addMember(403, "acme", hr, outer, "group", plain, false)
	e.problemOf(e.do("GET", "acme", "/v1/admin/audit", hr, nil), 403)

	// What they hold: exactly what they were given.
	var eff struct {
		Permissions []struct {
			Permission string
			Allowed    bool
		}
	}
	e.must(200, "GET", "acme", "/v1/admin/users/"+otherID+"/permissions", boss, nil).json(t, &eff)
	for _, p := range eff.Permissions {
		if want := p.Permission == "manage_roles" || p.Permission == "view_audit"; p.Allowed != want {
			t.Errorf("other: %s allowed=%v, want %v (a role manager's role, and the group the group manager added them to)", p.Permission, p.Allowed, want)
		}
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

// TestEveryBearerRequestChecksItsSession: logout, disabling and
// revocation end a token's use on every endpoint at the next request,
// the check API included.
func TestEveryBearerRequestChecksItsSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@session.test").AccessToken
	_, appID := e.member("acme", "app@session.test")
	e.assign(204, "acme", boss, e.role("acme", boss, "app", "manage_apps"), "user", appID)
	check := map[string]any{"subject": obj("user", appID), "permission": "view", "resource": obj("resource", "doc")}
	write := map[string]any{"touch": []any{map[string]any{"resource": obj("resource", "doc"), "relation": "viewer", "subject": obj("user", appID)}}}

	// Logout.
	tok := e.login("acme", "app@session.test", goodPassword).AccessToken
	e.must(200, "POST", "acme", "/v1/permissions/check", tok, check)
	e.must(204, "POST", "acme", "/v1/auth/logout", tok, nil)
	e.problemOf(e.do("POST", "acme", "/v1/permissions/check", tok, check), 401)
	e.problemOf(e.do("POST", "acme", "/v1/relationships", tok, write), 401)

	// An admin ending the session.
	tok = e.login("acme", "app@session.test", goodPassword).AccessToken
	var sessions struct{ Sessions []struct{ ID string } }
	e.must(200, "GET", "acme", "/v1/admin/users/"+appID+"/sessions", boss, nil).json(t, &sessions)
	for _, s := range sessions.Sessions {
		e.must(204, "DELETE", "acme", "/v1/admin/users/"+appID+"/sessions/"+s.ID, boss, nil)
	}
	e.problemOf(e.do("POST", "acme", "/v1/permissions/check-bulk", tok, map[string]any{"items": []any{check}}), 401)

	// Disabling the account.
	tok = e.login("acme", "app@session.test", goodPassword).AccessToken
	e.must(200, "POST", "acme", "/v1/relationships", tok, write)
	e.must(200, "POST", "acme", "/v1/admin/users/"+appID+"/disable", boss, nil)
	e.problemOf(e.do("POST", "acme", "/v1/relationships", tok, write), 401)
	e.problemOf(e.do("POST", "acme", "/v1/permissions/lookup-resources", tok, map[string]any{
		"subject": obj("user", appID), "permission": "view", "resource_type": "resource",
	}), 401)
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

// TestDisabledAccountHoldsNoRight: disabling an account takes every
// right it held (admin, roles direct and through groups, group
// management) at once, as SpiceDB answers; enabling it gives back exactly
// those.
func TestDisabledAccountHoldsNoRight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@disable.test").AccessToken
	deputy := e.adminLogin("acme", "deputy@disable.test").AccessToken
	deputyID := e.me("acme", deputy).ID.String()
	_, carolID := e.member("acme", "carol@disable.test")
	group := e.group("acme", boss, "ops")
	e.assign(204, "acme", boss, e.role("acme", boss, "auditor", "view_audit"), "group", group)
	e.assign(204, "acme", boss, e.role("acme", boss, "apps", "manage_apps"), "user", carolID)
	e.addMember(204, "acme", boss, group, "user", carolID, true)

	allowed := func(id string) map[string]bool {
		var eff struct {
			Permissions []struct {
				Permission string
				Allowed    bool
			}
		}
		e.must(200, "GET", "acme", "/v1/admin/users/"+id+"/permissions", boss, nil).json(t, &eff)
		out := map[string]bool{}
		for _, p := range eff.Permissions {
			if p.Allowed {
				out[p.Permission] = true
			}
		}
		return out
	}
	manages := func(id string) bool {
		ok, err := e.authz.Allowed(context.Background(), e.tenantNamed("acme"), uuid.MustParse(id), identity.Object{Type: "group", ID: group}, "manage")
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// An app shares a document with the group.
	e.must(200, "POST", "acme", "/v1/relationships", boss, map[string]any{"touch": []any{
		map[string]any{"resource": obj("resource", "plan"), "relation": "viewer", "subject": map[string]string{"type": "group", "id": group, "relation": "member"}},
	}})
	if !e.allowed("acme", boss, carolID, "view", "plan") {
		t.Fatal("carol cannot view what her group may")
	}
	hr, hrID := e.member("acme", "hr@disable.test")
	e.assign(204, "acme", boss, e.role("acme", boss, "hr", "manage_users"), "user", hrID)
	before := map[string]map[string]bool{carolID: allowed(carolID), deputyID: allowed(deputyID)}
	if !before[carolID]["view_audit"] || !before[carolID]["manage_apps"] || !before[deputyID]["admin"] || !manages(carolID) {
		t.Fatalf("before: carol %v, deputy %v, carol manages the group: %v", before[carolID], before[deputyID], manages(carolID))
	}
	for _, id := range []string{carolID, deputyID} {
		e.must(200, "POST", "acme", "/v1/admin/users/"+id+"/disable", boss, nil)
		if got := allowed(id); len(got) != 0 {
			t.Fatalf("a disabled account still holds %v", got)
		}
	}
	if manages(carolID) {
		t.Fatal("a disabled group manager still manages the group")
	}
	if e.allowed("acme", boss, carolID, "view", "plan") {
		t.Fatal("a disabled account still views what its group may")
	}
	// Enabling gives back rights: only to those who hold them.
	e.problemOf(e.do("POST", "acme", "/v1/admin/users/"+carolID+"/enable", hr, nil), 403)
	for _, id := range []string{carolID, deputyID} {
		e.must(200, "POST", "acme", "/v1/admin/users/"+id+"/enable", boss, nil)
		if got := allowed(id); fmt.Sprint(got) != fmt.Sprint(before[id]) {
			t.Fatalf("enabled again, %s holds %v; before, %v", id, got, before[id])
		}
	}
	if !manages(carolID) || !e.allowed("acme", boss, carolID, "view", "plan") {
		t.Fatal("enabled again, carol no longer manages the group or views its document")
	}
}
