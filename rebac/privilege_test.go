package rebac_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/tenancy"
)

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
		e.ProblemOf(e.Do("POST", "acme", "/v1/admin/roles", rm, map[string]any{"name": "wider", "permissions": perms}), 403)
	}
	e.ProblemOf(e.Do("PATCH", "acme", "/v1/admin/roles/"+rmRole, rm, map[string]any{"permissions": []string{"manage_roles", "manage_users"}}), 403)
	var got struct{ Permissions []string }
	e.Must(200, "GET", "acme", "/v1/admin/roles/"+rmRole, rm, nil).JSON(t, &got)
	if strings.Join(got.Permissions, ",") != "manage_roles" {
		t.Fatalf("the role manager's role now carries %v", got.Permissions)
	}
	// What it holds, it may give, and a description is no grant.
	same := e.role("acme", rm, "deputy-role-manager", "manage_roles")
	e.assign(204, "acme", rm, same, "user", otherID)
	e.Must(200, "PATCH", "acme", "/v1/admin/roles/"+rmRole, rm, map[string]any{"description": "manages roles"})
	// Nor another's role that carries more, to itself or to others.
	auditor := e.role("acme", boss, "auditor", "view_audit")
	e.assign(403, "acme", rm, auditor, "user", rmID)
	e.assign(403, "acme", rm, auditor, "user", otherID)
	admins := e.role("acme", boss, "user-admins", "manage_users")
	e.assign(403, "acme", rm, admins, "user", rmID)
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/users", rm, nil), 403)
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/audit", rm, nil), 403)

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
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/audit", hr, nil), 403)

	// What they hold: exactly what they were given.
	var eff struct {
		Permissions []struct {
			Permission string
			Allowed    bool
		}
	}
	e.Must(200, "GET", "acme", "/v1/admin/users/"+otherID+"/permissions", boss, nil).JSON(t, &eff)
	for _, p := range eff.Permissions {
		if want := p.Permission == "manage_roles" || p.Permission == "view_audit"; p.Allowed != want {
			t.Errorf("other: %s allowed=%v, want %v (a role manager's role, and the group the group manager added them to)", p.Permission, p.Allowed, want)
		}
	}
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
	e.Must(200, "POST", "acme", "/v1/permissions/check", tok, check)
	e.Must(204, "POST", "acme", "/v1/auth/logout", tok, nil)
	e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check", tok, check), 401)
	e.ProblemOf(e.Do("POST", "acme", "/v1/relationships", tok, write), 401)

	// An admin ending the session.
	tok = e.login("acme", "app@session.test", goodPassword).AccessToken
	var sessions struct{ Sessions []struct{ ID string } }
	e.Must(200, "GET", "acme", "/v1/admin/users/"+appID+"/sessions", boss, nil).JSON(t, &sessions)
	for _, s := range sessions.Sessions {
		e.Must(204, "DELETE", "acme", "/v1/admin/users/"+appID+"/sessions/"+s.ID, boss, nil)
	}
	e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check-bulk", tok, map[string]any{"items": []any{check}}), 401)

	// Disabling the account.
	tok = e.login("acme", "app@session.test", goodPassword).AccessToken
	e.Must(200, "POST", "acme", "/v1/relationships", tok, write)
	e.Must(200, "POST", "acme", "/v1/admin/users/"+appID+"/disable", boss, nil)
	e.ProblemOf(e.Do("POST", "acme", "/v1/relationships", tok, write), 401)
	e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/lookup-resources", tok, map[string]any{
		"subject": obj("user", appID), "permission": "view", "resource_type": "resource",
	}), 401)
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
		e.Must(200, "GET", "acme", "/v1/admin/users/"+id+"/permissions", boss, nil).JSON(t, &eff)
		out := map[string]bool{}
		for _, p := range eff.Permissions {
			if p.Allowed {
				out[p.Permission] = true
			}
		}
		return out
	}
	manages := func(id string) bool {
		ok, err := e.Authz.Allowed(context.Background(), e.tenantNamed("acme"), uuid.MustParse(id), "group", group, "manage")
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	// An app shares a document with the group.
	e.Must(200, "POST", "acme", "/v1/relationships", boss, map[string]any{"touch": []any{
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
		e.Must(200, "POST", "acme", "/v1/admin/users/"+id+"/disable", boss, nil)
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
	e.ProblemOf(e.Do("POST", "acme", "/v1/admin/users/"+carolID+"/enable", hr, nil), 403)
	for _, id := range []string{carolID, deputyID} {
		e.Must(200, "POST", "acme", "/v1/admin/users/"+id+"/enable", boss, nil)
		if got := allowed(id); fmt.Sprint(got) != fmt.Sprint(before[id]) {
			t.Fatalf("enabled again, %s holds %v; before, %v", id, got, before[id])
		}
	}
	if !manages(carolID) || !e.allowed("acme", boss, carolID, "view", "plan") {
		t.Fatal("enabled again, carol no longer manages the group or views its document")
	}
}
