package identity_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

// confirmed marks the address of an account as confirmed, as opening
// its confirmation mail does (the mail flow has tests of its own).
func (e *env) confirmed(email string) {
	e.t.Helper()
	confirmAddress(e.t, e, email)
}

func confirmAddress(t testing.TB, e *env, email string) {
	t.Helper()
	tag, err := e.admin.Exec(context.Background(), "update app.users set email_verified_at = now() where email = $1", email)
	if err != nil || tag.RowsAffected() == 0 {
		t.Fatalf("confirm %s: %v (%d accounts)", email, err, tag.RowsAffected())
	}
}

// admin signs up an account, makes it the tenant's admin and signs it in.
func (e *env) adminLogin(slug, email string) identity.Tokens {
	e.t.Helper()
	e.signup(slug, email, goodPassword)
	e.confirmed(email)
	tn, err := e.reg.Get(context.Background(), slug)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.svc.SetRole(context.Background(), tn, email, identity.RoleAdmin); err != nil {
		e.t.Fatal(err)
	}
	return e.login(slug, email, goodPassword)
}

func TestAdminManagesUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@acme.test")
	for i := range 5 {
		e.signup("acme", fmt.Sprintf("user%d@acme.test", i), goodPassword)
	}

	// Pages of two, by email, then a search.
	var seen []string
	cursor := ""
	for {
		var page identity.UserPage
		e.must(200, "GET", "acme", "/v1/admin/users?limit=2&cursor="+url.QueryEscape(cursor), boss.AccessToken, nil).json(t, &page)
		for _, u := range page.Users {
			seen = append(seen, u.Email)
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	if len(seen) != 6 || seen[0] != "boss@acme.test" || seen[5] != "user4@acme.test" {
		t.Fatalf("paged through %v", seen)
	}
	var found identity.UserPage
	e.must(200, "GET", "acme", "/v1/admin/users?search=USER3", boss.AccessToken, nil).json(t, &found)
	if len(found.Users) != 1 || found.Users[0].Email != "user3@acme.test" {
		t.Fatalf("search: %+v", found.Users)
	}
	target := found.Users[0]

	// Create, update, disable (ends sessions), enable, delete.
	var created identity.User
	e.must(201, "POST", "acme", "/v1/admin/users", boss.AccessToken, map[string]string{"email": "New@Acme.test", "role": "admin"}).json(t, &created)
	if created.Email != "new@acme.test" || created.Role != "admin" {
		t.Fatalf("created %+v", created)
	}
	e.problemOf(e.do("POST", "acme", "/v1/admin/users", boss.AccessToken, map[string]string{"email": "new@acme.test"}), 409)
	e.problemOf(e.do("POST", "acme", "/v1/admin/users", boss.AccessToken, map[string]string{"email": "x@acme.test", "role": "owner"}), 400)

	victim := e.login("acme", "user3@acme.test", goodPassword)
	var updated identity.User
	e.must(200, "POST", "acme", "/v1/admin/users/"+target.ID.String()+"/disable", boss.AccessToken, nil).json(t, &updated)
	if updated.Status != "disabled" {
		t.Fatalf("after disable: %+v", updated)
	}
	e.problemOf(e.do("GET", "acme", "/v1/me", victim.AccessToken, nil), 401)
	if _, status := e.refresh("acme", victim.RefreshToken); status != 401 {
		t.Fatalf("refresh of a disabled user: %d", status)
	}
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "user3@acme.test", "password": goodPassword}), 401)
	e.must(200, "POST", "acme", "/v1/admin/users/"+target.ID.String()+"/enable", boss.AccessToken, nil)
	e.login("acme", "user3@acme.test", goodPassword)
	e.must(200, "PATCH", "acme", "/v1/admin/users/"+target.ID.String(), boss.AccessToken, map[string]string{"display_name": "Three"}).json(t, &updated)
	if updated.DisplayName != "Three" || updated.Status != "active" {
		t.Fatalf("after PATCH: %+v", updated)
	}
	e.problemOf(e.do("PATCH", "acme", "/v1/admin/users/"+target.ID.String(), boss.AccessToken, map[string]string{"status": "asleep"}), 400)
	e.problemOf(e.do("PATCH", "acme", "/v1/admin/users/"+target.ID.String(), boss.AccessToken, map[string]string{}), 400)

	// An admin cannot lock themselves out.
	var me identity.User
	e.must(200, "GET", "acme", "/v1/me", boss.AccessToken, nil).json(t, &me)
	e.problemOf(e.do("POST", "acme", "/v1/admin/users/"+me.ID.String()+"/disable", boss.AccessToken, nil), 409)
	e.problemOf(e.do("DELETE", "acme", "/v1/admin/users/"+me.ID.String(), boss.AccessToken, nil), 409)

	// Sessions of a user, and revoking one.
	var sessions struct{ Sessions []identity.Session }
	e.must(200, "GET", "acme", "/v1/admin/users/"+target.ID.String()+"/sessions", boss.AccessToken, nil).json(t, &sessions)
	if len(sessions.Sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions.Sessions))
	}
	e.must(204, "DELETE", "acme", "/v1/admin/users/"+target.ID.String()+"/sessions/"+sessions.Sessions[0].ID.String(), boss.AccessToken, nil)
	e.problemOf(e.do("DELETE", "acme", "/v1/admin/users/"+target.ID.String()+"/sessions/"+sessions.Sessions[0].ID.String(), boss.AccessToken, nil), 404)

	e.must(204, "DELETE", "acme", "/v1/admin/users/"+target.ID.String(), boss.AccessToken, nil)
	e.problemOf(e.do("GET", "acme", "/v1/admin/users/"+target.ID.String(), boss.AccessToken, nil), 404)
	var left int
	e.admin.QueryRow(context.Background(), "select count(*) from app.sessions where user_id = $1", target.ID).Scan(&left)
	if left != 0 {
		t.Fatalf("%d sessions left of a deleted user", left)
	}
}

func TestAdminAPIRefusesMembersAndOtherTenants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@acme.test")
	e.signup("acme", "member@acme.test", goodPassword)
	member := e.login("acme", "member@acme.test", goodPassword)
	globexBoss := e.adminLogin("globex", "boss@globex.test")
	var gUser identity.User
	e.must(200, "GET", "globex", "/v1/me", globexBoss.AccessToken, nil).json(t, &gUser)

	for _, path := range []string{"/v1/admin/users", "/v1/admin/audit", "/v1/admin/users/" + gUser.ID.String()} {
		e.problemOf(e.do("GET", "acme", path, member.AccessToken, nil), 403)
		e.problemOf(e.do("GET", "acme", path, "", nil), 401)
	}
	// acme's admin cannot reach globex's users, nor tell them from
	// nonexistent ones.
	missing := e.problemOf(e.do("GET", "acme", "/v1/admin/users/00000000-0000-4000-8000-000000000009", boss.AccessToken, nil), 404)
	other := e.problemOf(e.do("GET", "acme", "/v1/admin/users/"+gUser.ID.String(), boss.AccessToken, nil), 404)
	if missing.Detail != other.Detail {
		t.Fatalf("another tenant's user answers %q, a missing one %q", other.Detail, missing.Detail)
	}
	e.problemOf(e.do("POST", "acme", "/v1/admin/users/"+gUser.ID.String()+"/disable", boss.AccessToken, nil), 404)
	e.problemOf(e.do("DELETE", "acme", "/v1/admin/users/"+gUser.ID.String(), boss.AccessToken, nil), 404)
	e.must(200, "GET", "globex", "/v1/me", globexBoss.AccessToken, nil) // untouched
	// acme's admin token on globex's host is not an admin there.
	e.problemOf(e.do("GET", "globex", "/v1/admin/users", boss.AccessToken, nil), 401)

	var denied int
	e.admin.QueryRow(context.Background(), "select count(*) from app.audit_events where outcome = 'denied' and actor_id is not null").Scan(&denied)
	if denied != 3 {
		t.Fatalf("%d denied admin attempts audited, want 3", denied)
	}
}

func TestAdminReadsTheAuditTrail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@acme.test")
	e.signup("acme", "someone@acme.test", goodPassword)
	e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "someone@acme.test", "password": "wrong-password-here"})
	e.login("acme", "someone@acme.test", goodPassword)

	var page identity.AuditPage
	e.must(200, "GET", "acme", "/v1/admin/audit?action=login&limit=2", boss.AccessToken, nil).json(t, &page)
	if len(page.Events) != 2 || page.Next == 0 || page.Events[0].Seq < page.Events[1].Seq {
		t.Fatalf("first page %+v", page)
	}
	for _, ev := range page.Events {
		if ev.Action != "login" {
			t.Fatalf("filter let through %+v", ev)
		}
	}
	var older identity.AuditPage
	e.must(200, "GET", "acme", fmt.Sprintf("/v1/admin/audit?action=login&limit=2&cursor=%d", page.Next), boss.AccessToken, nil).json(t, &older)
	if len(older.Events) != 1 || older.Next != 0 || older.Events[0].Seq >= page.Events[1].Seq {
		t.Fatalf("second page %+v", older)
	}
	var failures identity.AuditPage
	e.must(200, "GET", "acme", "/v1/admin/audit?action=login&since=2000-01-01T00:00:00Z", boss.AccessToken, nil).json(t, &failures)
	if len(failures.Events) != 3 {
		t.Fatalf("%d login events since 2000", len(failures.Events))
	}
	for _, bad := range []string{"?limit=x", "?limit=1000", "?actor=nobody", "?since=yesterday", "?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z"} {
		d := e.problemOf(e.do("GET", "acme", "/v1/admin/audit"+bad, boss.AccessToken, nil), 400)
		if !strings.Contains(d.Detail, ":") {
			t.Errorf("%s: detail %q names no field", bad, d.Detail)
		}
	}
}
