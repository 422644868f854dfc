package rebac_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestCustomRoleThroughNestedGroups(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@authz.test")
	e.signup("acme", "carol@authz.test", goodPassword)
	carol := e.login("acme", "carol@authz.test", goodPassword)
	carolID := e.me("acme", carol.AccessToken).ID.String()

	// Not yet: a member may not read the audit trail.
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/audit", carol.AccessToken, nil), 403)

	var role, outer, inner struct{ ID string }
	e.Must(201, "POST", "acme", "/v1/admin/roles", boss.AccessToken, map[string]any{
		"name": "auditor", "description": "reads the audit trail", "permissions": []string{"view_audit"},
	}).JSON(t, &role)
	e.Must(201, "POST", "acme", "/v1/admin/groups", boss.AccessToken, map[string]string{"name": "Compliance"}).JSON(t, &outer)
	e.Must(201, "POST", "acme", "/v1/admin/groups", boss.AccessToken, map[string]string{"name": "Internal audit"}).JSON(t, &inner)
	e.Must(204, "POST", "acme", "/v1/admin/groups/"+outer.ID+"/members", boss.AccessToken, map[string]string{"type": "group", "id": inner.ID})
	e.Must(204, "POST", "acme", "/v1/admin/groups/"+inner.ID+"/members", boss.AccessToken, map[string]string{"type": "user", "id": carolID})
	e.Must(204, "POST", "acme", "/v1/admin/roles/"+role.ID+"/assignments", boss.AccessToken, map[string]string{"type": "group", "id": outer.ID})

	// The role reaches carol through both groups, and grants what it
	// carries only.
	e.Must(200, "GET", "acme", "/v1/admin/audit", carol.AccessToken, nil)
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/users", carol.AccessToken, nil), 403)

	// The effective permissions, explained.
	var eff struct {
		Permissions []struct {
			Permission string
			Allowed    bool
			GrantedBy  []struct {
				Via, Role string
				Through   []string
			} `json:"granted_by"`
		}
	}
	e.Must(200, "GET", "acme", "/v1/admin/users/"+carolID+"/permissions", boss.AccessToken, nil).JSON(t, &eff)
	got := map[string]string{}
	for _, p := range eff.Permissions {
		got[p.Permission] = fmt.Sprint(p.Allowed)
		for _, g := range p.GrantedBy {
			got[p.Permission] += fmt.Sprintf(" %s:%s%v", g.Via, g.Role, g.Through)
		}
	}
	if got["view_audit"] != "true role:auditor[group:Internal audit group:Compliance]" || got["manage_users"] != "false" || got["admin"] != "false" {
		t.Fatalf("carol's effective permissions: %v", got)
	}
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/users/"+carolID+"/permissions", carol.AccessToken, nil), 403)

	// Removal takes effect on the very next request.
	e.Must(204, "DELETE", "acme", "/v1/admin/groups/"+inner.ID+"/members/user/"+carolID, boss.AccessToken, nil)
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/audit", carol.AccessToken, nil), 403)

	// Every decision is audited, allowed and denied.
	var allowed, denied int
	e.Admin.QueryRow(context.Background(), `select count(*) filter (where outcome = 'success'), count(*) filter (where outcome = 'denied')
		from app.audit_events where (action = 'authz.check' and details->>'for' = 'audit.list') or (action = 'audit.list' and outcome = 'denied')`).Scan(&allowed, &denied)
	if allowed != 1 || denied != 2 {
		t.Fatalf("audited %d allowed and %d denied audit.list decisions, want 1 and 2", allowed, denied)
	}
}

func TestGroupManagersManageTheirGroupOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@managers.test")
	e.signup("acme", "lead@managers.test", goodPassword)
	e.signup("acme", "dev@managers.test", goodPassword)
	lead := e.login("acme", "lead@managers.test", goodPassword)
	dev := e.login("acme", "dev@managers.test", goodPassword)
	leadID, devID := e.me("acme", lead.AccessToken).ID.String(), e.me("acme", dev.AccessToken).ID.String()
	var team, other struct{ ID string }
	e.Must(201, "POST", "acme", "/v1/admin/groups", boss.AccessToken, map[string]string{"name": "Team"}).JSON(t, &team)
	e.Must(201, "POST", "acme", "/v1/admin/groups", boss.AccessToken, map[string]string{"name": "Other"}).JSON(t, &other)
	members := "/v1/admin/groups/" + team.ID + "/members"

	// Before being made manager, the lead may not touch the team.
	e.ProblemOf(e.Do("POST", "acme", members, lead.AccessToken, map[string]string{"type": "user", "id": devID}), 403)
	e.Must(204, "POST", "acme", members, boss.AccessToken, map[string]any{"type": "user", "id": leadID, "manager": true})

	// Now they run its membership...
	e.Must(204, "POST", "acme", members, lead.AccessToken, map[string]string{"type": "user", "id": devID})
	var list struct{ Members []struct{ ID string } }
	e.Must(200, "GET", "acme", members, lead.AccessToken, nil).JSON(t, &list)
	if len(list.Members) != 2 {
		t.Fatalf("the team has %d members, want the lead and dev", len(list.Members))
	}
	e.Must(204, "DELETE", "acme", members+"/user/"+devID, lead.AccessToken, nil)
	// ... and nothing else: not another group, not the group itself, not
	// the tenant's users; a group they cannot manage looks the same
	// whether or not it exists.
	d1 := e.ProblemOf(e.Do("POST", "acme", "/v1/admin/groups/"+other.ID+"/members", lead.AccessToken, map[string]string{"type": "user", "id": devID}), 403)
	d2 := e.ProblemOf(e.Do("POST", "acme", "/v1/admin/groups/"+uuid.NewString()+"/members", lead.AccessToken, map[string]string{"type": "user", "id": devID}), 403)
	if d1.Detail != d2.Detail {
		t.Fatalf("an unmanaged group and a missing one answer differently: %q, %q", d1.Detail, d2.Detail)
	}
	e.ProblemOf(e.Do("DELETE", "acme", "/v1/admin/groups/"+team.ID, lead.AccessToken, nil), 403)
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/users", lead.AccessToken, nil), 403)
	// Tenant admins still manage every group, and learn when one is missing.
	e.ProblemOf(e.Do("POST", "acme", "/v1/admin/groups/"+uuid.NewString()+"/members", boss.AccessToken, map[string]string{"type": "user", "id": devID}), 404)

	// Demoted to a plain member, the lead loses the right on the next request.
	e.Must(204, "POST", "acme", members, boss.AccessToken, map[string]any{"type": "user", "id": leadID, "manager": false})
	e.ProblemOf(e.Do("POST", "acme", members, lead.AccessToken, map[string]string{"type": "user", "id": devID}), 403)
	var audited int
	e.Admin.QueryRow(context.Background(), `select count(*) from app.audit_events
		where action = 'authz.check' and details->>'on' = 'group:'||$1 and details->>'permission' = 'manage'`, team.ID).Scan(&audited)
	if audited < 3 {
		t.Fatalf("%d allowed decisions on the team audited, want the lead's three at least", audited)
	}
}

func TestGroupAndRoleInputIsChecked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@input.test")
	other := e.adminLogin("globex", "boss@other.test")
	var g1, g2, foreign struct{ ID string }
	e.Must(201, "POST", "acme", "/v1/admin/groups", boss.AccessToken, map[string]string{"name": "one"}).JSON(t, &g1)
	e.Must(201, "POST", "acme", "/v1/admin/groups", boss.AccessToken, map[string]string{"name": "two"}).JSON(t, &g2)
	e.Must(201, "POST", "globex", "/v1/admin/groups", other.AccessToken, map[string]string{"name": "theirs"}).JSON(t, &foreign)
	e.Must(204, "POST", "acme", "/v1/admin/groups/"+g1.ID+"/members", boss.AccessToken, map[string]string{"type": "group", "id": g2.ID})

	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		field              string
	}{
		{"duplicate group", "POST", "/v1/admin/groups", map[string]string{"name": "one"}, 409, ""},
		{"no name", "POST", "/v1/admin/groups", map[string]string{"description": "x"}, 400, "name"},
		{"a cycle", "POST", "/v1/admin/groups/" + g2.ID + "/members", map[string]string{"type": "group", "id": g1.ID}, 400, "id"},
		{"itself", "POST", "/v1/admin/groups/" + g1.ID + "/members", map[string]string{"type": "group", "id": g1.ID}, 400, "id"},
		{"another tenant's group", "POST", "/v1/admin/groups/" + g1.ID + "/members", map[string]string{"type": "group", "id": foreign.ID}, 400, "id"},
		{"not an id", "POST", "/v1/admin/groups/" + g1.ID + "/members", map[string]string{"type": "user", "id": "bob"}, 400, "id"},
		{"unknown member type", "POST", "/v1/admin/groups/" + g1.ID + "/members", map[string]string{"type": "robot", "id": g2.ID}, 400, "type"},
		{"another tenant's group by path", "GET", "/v1/admin/groups/" + foreign.ID, nil, 404, ""},
		{"unknown permission", "POST", "/v1/admin/roles", map[string]any{"name": "x", "permissions": []string{"fly"}}, 400, "permissions"},
		{"bad role name", "POST", "/v1/admin/roles", map[string]any{"name": "Billing Admin"}, 400, "name"},
		{"unknown field", "POST", "/v1/admin/roles", map[string]any{"name": "x", "colour": "red"}, 400, "colour"},
	} {
		r := e.Do(c.method, "acme", c.path, boss.AccessToken, c.body)
		d := e.ProblemOf(r, c.status)
		if c.field != "" && (len(d.Errors) == 0 || d.Errors[0].Field != c.field) {
			t.Errorf("%s: %+v; want the field %s named", c.name, d, c.field)
		}
	}
	// Deleting a group takes its members' grants with it.
	e.Must(204, "DELETE", "acme", "/v1/admin/groups/"+g2.ID, boss.AccessToken, nil)
	var members struct{ Members []struct{ ID string } }
	e.Must(200, "GET", "acme", "/v1/admin/groups/"+g1.ID+"/members", boss.AccessToken, nil).JSON(t, &members)
	if len(members.Members) != 0 {
		t.Fatalf("group one still lists %v", members.Members)
	}
}

func TestSpiceDBOutageDeniesAndHeals(t *testing.T) {
	t.Parallel()
	cluster := pgtest.Second(t)
	srv := spicedbtest.StartPostgres(t, cluster.URL(cluster.NewDatabase(t, "")))
	e := newEnv(t, withSpiceDB(srv))
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@outage.test")
	e.signup("acme", "deputy@outage.test", goodPassword)
	deputy := e.login("acme", "deputy@outage.test", goodPassword)
	e.Must(200, "GET", "acme", "/v1/admin/users", boss.AccessToken, nil)
	appCheck := map[string]any{"subject": map[string]string{"type": "user", "id": "x"}, "permission": "view", "resource": map[string]string{"type": "resource", "id": "doc"}}
	e.Must(200, "POST", "acme", "/v1/permissions/check", boss.AccessToken, appCheck)

	srv.Stop(t)
	// Fail closed: no check can be made, so nothing is allowed.
	e.ProblemOf(e.Do("GET", "acme", "/v1/admin/users", boss.AccessToken, nil), 503)
	e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check", boss.AccessToken, appCheck), 503)
	if got := e.decisions("acme", "check", "unavailable"); got != 1 {
		t.Fatalf("%v check-API decisions counted unavailable, want 1", got)
	}
	// An operator's grant still commits; it waits in the outbox.
	e.confirmed("deputy@outage.test")
	if _, err := e.Accounts.SetRole(context.Background(), tn, "deputy@outage.test", identity.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	var waiting int
	e.Admin.QueryRow(context.Background(), "select count(*) from app.rebac_outbox where delivered_at is null").Scan(&waiting)
	if waiting != 1 {
		t.Fatalf("%d changes wait for SpiceDB, want 1", waiting)
	}

	srv.Restart(t)
	// The outbox catches up; the grant holds.
	e.Must(200, "GET", "acme", "/v1/admin/users", deputy.AccessToken, nil)
	e.Must(200, "GET", "acme", "/v1/admin/users", boss.AccessToken, nil)
}

// obj is an object (or subject) of the check API.
func obj(typ, id string) map[string]string { return map[string]string{"type": typ, "id": id} }

// allowed asks the check API on host, as token, whether user who holds
// perm on resource res.
func (e *env) allowed(host, token, who, perm, res string) bool {
	e.t.Helper()
	var r struct{ Allowed bool }
	e.Must(200, "POST", host, "/v1/permissions/check", token, map[string]any{
		"subject": obj("user", who), "permission": perm, "resource": obj("resource", res),
	}).JSON(e.t, &r)
	return r.Allowed
}

func TestSaaSAppWritesAndChecksItsResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	app := e.adminLogin("acme", "app@check.test").AccessToken
	other := e.adminLogin("globex", "app@other.test").AccessToken
	e.signup("acme", "member@check.test", goodPassword)
	member := e.login("acme", "member@check.test", goodPassword).AccessToken

	rel := func(res, relation string, sub map[string]string) map[string]any {
		return map[string]any{"resource": obj("resource", res), "relation": relation, "subject": sub}
	}
	var wrote struct {
		ConsistencyToken string `json:"consistency_token"`
	}
	e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"touch": []any{
		rel("doc-1", "owner", obj("user", "alice")),
		rel("folder-1", "editor", obj("user", "bob")),
		rel("doc-1", "parent", obj("resource", "folder-1")),
	}}).JSON(t, &wrote)
	if wrote.ConsistencyToken == "" {
		t.Fatal("no consistency token from the write")
	}
	check := e.allowed
	if !check("acme", app, "alice", "delete", "doc-1") || !check("acme", app, "bob", "edit", "doc-1") || check("acme", app, "bob", "delete", "doc-1") {
		t.Fatal("checks do not follow the relationships")
	}
	// Another tenant's app sees nothing of these.
	if check("globex", other, "alice", "delete", "doc-1") {
		t.Fatal("globex's app sees acme's relationships")
	}

	var bulk struct{ Results []struct{ Allowed bool } }
	items := []any{}
	for _, c := range [][3]string{{"alice", "view", "doc-1"}, {"bob", "view", "doc-1"}, {"carol", "view", "doc-1"}} {
		items = append(items, map[string]any{"subject": obj("user", c[0]), "permission": c[1], "resource": obj("resource", c[2])})
	}
	e.Must(200, "POST", "acme", "/v1/permissions/check-bulk", app, map[string]any{"items": items}).JSON(t, &bulk)
	if len(bulk.Results) != 3 || !bulk.Results[0].Allowed || !bulk.Results[1].Allowed || bulk.Results[2].Allowed {
		t.Fatalf("bulk: %+v", bulk.Results)
	}
	var lookup struct{ Resources []string }
	e.Must(200, "POST", "acme", "/v1/permissions/lookup-resources", app, map[string]any{
		"subject": obj("user", "bob"), "permission": "edit", "resource_type": "resource",
	}).JSON(t, &lookup)
	if len(lookup.Resources) != 2 {
		t.Fatalf("bob may edit %v; want doc-1 and folder-1", lookup.Resources)
	}

	// A removal is seen by the next check, without a token.
	e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"delete": []any{rel("folder-1", "editor", obj("user", "bob"))}})
	if check("acme", app, "bob", "edit", "doc-1") {
		t.Fatal("bob still edits after the removal")
	}

	// Bad input names its field, and nothing of SpiceDB's shows.
	many := make([]any, 101)
	for i := range many {
		many[i] = items[0]
	}
	for _, c := range []struct {
		name, path string
		body       any
		field      string
	}{
		{"the separator", "/v1/permissions/check", map[string]any{"subject": obj("user", "alice"), "permission": "view", "resource": obj("resource", "x|doc-1")}, "resource.id"},
		{"unknown permission", "/v1/permissions/check", map[string]any{"subject": obj("user", "alice"), "permission": "fly", "resource": obj("resource", "doc-1")}, "permission"},
		{"unknown type", "/v1/permissions/check", map[string]any{"subject": obj("user", "alice"), "permission": "view", "resource": obj("spaceship", "x")}, "resource.type"},
		{"missing subject", "/v1/permissions/check", map[string]any{"permission": "view", "resource": obj("resource", "doc-1")}, "subject.id"},
		{"too many", "/v1/permissions/check-bulk", map[string]any{"items": many}, "items"},
		{"an item's field", "/v1/permissions/check-bulk", map[string]any{"items": []any{items[0], map[string]any{"subject": obj("user", "a"), "permission": "view", "resource": obj("resource", "")}}}, "items[1].resource.id"},
		{"not the app's type", "/v1/relationships", map[string]any{"touch": []any{map[string]any{"resource": obj("tenant", "tenant"), "relation": "admin", "subject": obj("user", "mallory")}}}, "touch[0].resource.type"},
		{"a subject the relation refuses", "/v1/relationships", map[string]any{"touch": []any{rel("doc-1", "owner", obj("role", "r"))}}, "subject"},
	} {
		d := e.ProblemOf(e.Do("POST", "acme", c.path, app, c.body), 400)
		if len(d.Errors) == 0 || d.Errors[0].Field != c.field || strings.Contains(d.Detail, "rpc") {
			t.Errorf("%s: %+v; want field %s", c.name, d, c.field)
		}
	}
	// Members may not use the check API.
	e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check", member, map[string]any{
		"subject": obj("user", "alice"), "permission": "view", "resource": obj("resource", "doc-1"),
	}), 403)
	// Decisions are counted, each item of a bulk check too...
	a, d, bulkDenied := e.decisions("acme", "check", "allowed"), e.decisions("acme", "check", "denied"), e.decisions("acme", "check_bulk", "denied")
	if a != 2 || d != 2 || bulkDenied != 1 || e.decisions("globex", "check", "denied") != 1 {
		t.Fatalf("counted %v allowed and %v denied checks, %v denied bulk items; want 2, 2 and 1, and globex's one apart", a, d, bulkDenied)
	}
	// ... and sampled into the audit trail (every one, here).
	var sampled int
	if err := e.Admin.QueryRow(context.Background(), "select count(*) from app.audit_events where action = 'permission.check'").Scan(&sampled); err != nil || sampled < 8 {
		t.Fatalf("%d sampled check decisions audited (%v), want at least 8", sampled, err)
	}
}

func TestDeletedUsersLoseWhatAppsGrantedThem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	app := e.adminLogin("acme", "app@forget.test").AccessToken
	other := e.adminLogin("globex", "app@forget.test").AccessToken
	e.signup("acme", "leaver@forget.test", goodPassword)
	e.signup("acme", "stayer@forget.test", goodPassword)
	leaver := e.me("acme", e.login("acme", "leaver@forget.test", goodPassword).AccessToken).ID.String()
	stayer := e.me("acme", e.login("acme", "stayer@forget.test", goodPassword).AccessToken).ID.String()

	rel := func(res, relation, user string) map[string]any {
		return map[string]any{"resource": obj("resource", res), "relation": relation, "subject": obj("user", user)}
	}
	e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"touch": []any{
		rel("doc-1", "owner", leaver), rel("doc-2", "viewer", leaver), rel("doc-1", "viewer", stayer),
	}})
	// The same user id in another tenant is another subject altogether.
	e.Must(200, "POST", "globex", "/v1/relationships", other, map[string]any{"touch": []any{rel("doc-1", "owner", leaver)}})
	check := e.allowed
	if !check("acme", app, leaver, "delete", "doc-1") || !check("acme", app, leaver, "view", "doc-2") {
		t.Fatal("the app's grants do not hold before the deletion")
	}

	e.Must(204, "DELETE", "acme", "/v1/admin/users/"+leaver, app, nil)
	if check("acme", app, leaver, "view", "doc-1") || check("acme", app, leaver, "view", "doc-2") {
		t.Fatal("a deleted user keeps what the app granted them")
	}
	if !check("acme", app, stayer, "view", "doc-1") || !check("globex", other, leaver, "delete", "doc-1") {
		t.Fatal("the deletion took others' relationships with it")
	}
	// Granted again after the deletion (an app replaying old writes), it
	// stands: forgetting is a change in order, not a ban.
	e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"touch": []any{rel("doc-3", "viewer", leaver)}})
	if !check("acme", app, leaver, "view", "doc-3") {
		t.Fatal("a write after the deletion was lost")
	}
}
