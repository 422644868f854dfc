package rebac_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/tenancy"
)

// lookup returns the resources on which user who holds perm, as the
// check API lists them on host, sorted, each once (SpiceDB may list a
// resource reached two ways twice).
func (e *env) lookup(host, token, who, perm string) []string {
	e.t.Helper()
	var r struct{ Resources []string }
	e.Must(200, "POST", host, "/v1/permissions/lookup-resources", token, map[string]any{
		"subject": obj("user", who), "permission": perm, "resource_type": "resource",
	}).JSON(e.t, &r)
	slices.Sort(r.Resources)
	return slices.Compact(r.Resources)
}

// TestDisabledAccountIsDeniedAppsResources: while an account is
// disabled, whatever grants it a right on an app's resource (a direct
// grant, a group, a role, tenant membership, a parent resource) answers
// no to a check, a bulk check and a lookup, also when the app asks for
// a relation rather than a permission; others holding the same grants,
// and the same id in another tenant, keep theirs; enabling the account
// gives back exactly what it had.
func TestDisabledAccountIsDeniedAppsResources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	acme := e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@apps-disable.test").AccessToken
	other := e.adminLogin("globex", "app@apps-disable.test").AccessToken
	_, carol := e.member("acme", "carol@apps-disable.test")
	_, dave := e.member("acme", "dave@apps-disable.test")
	group := e.group("acme", boss, "readers")
	role := e.role("acme", boss, "reviewer")
	for _, id := range []string{carol, dave} {
		e.addMember(204, "acme", boss, group, "user", id, false)
		e.assign(204, "acme", boss, role, "user", id)
	}
	// Tenant membership is Gatehouse's to record (apps may not write the
	// tenant's relationships): through the outbox, as the service does.
	ctx := context.Background()
	if err := e.Data.Tx(ctx, acme, func(q *queries.Queries) error {
		for _, id := range []string{carol, dave} {
			member := rebac.Relationship{
				Resource: rebac.Ref{Type: "tenant", ID: rebac.TenantObject}, Relation: "member",
				Subject: rebac.SubjectRef{Ref: rebac.Ref{Type: "user", ID: id}},
			}
			if err := rebac.Enqueue(ctx, q, acme.ID, rebac.Touch, member); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.Authz.Flush(ctx, acme)

	rel := func(res, relation string, sub map[string]string) map[string]any {
		return map[string]any{"resource": obj("resource", res), "relation": relation, "subject": sub}
	}
	members := func(typ, id, relation string) map[string]string {
		return map[string]string{"type": typ, "id": id, "relation": relation}
	}
	e.Must(200, "POST", "acme", "/v1/relationships", boss, map[string]any{"touch": []any{
		rel("doc-direct", "viewer", obj("user", carol)),
		rel("doc-direct", "viewer", obj("user", dave)),
		rel("doc-group", "viewer", members("group", group, "member")),
		rel("doc-role", "editor", members("role", role, "assignee")),
		rel("doc-tenant", "viewer", members("tenant", rebac.TenantObject, "member")),
		rel("folder", "owner", obj("user", carol)),
		rel("folder", "owner", obj("user", dave)),
		rel("doc-parent", "parent", obj("resource", "folder")),
	}})
	// The same ids in another tenant are other objects: carol's id holds
	// a grant of globex's own there.
	e.Must(200, "POST", "globex", "/v1/relationships", other, map[string]any{"touch": []any{
		rel("doc-direct", "viewer", obj("user", carol)),
	}})

	paths := []struct{ name, doc, permission string }{
		{"direct user", "doc-direct", "view"},
		{"a relation asked directly", "doc-direct", "viewer"},
		{"group#member", "doc-group", "view"},
		{"role#assignee", "doc-role", "view"},
		{"tenant#member", "doc-tenant", "view"},
		{"parent", "doc-parent", "view"},
	}
	everything := []string{"doc-direct", "doc-group", "doc-parent", "doc-role", "doc-tenant", "folder"}
	bulk := func(who string) []bool {
		t.Helper()
		items := []any{}
		for _, p := range paths {
			items = append(items, map[string]any{"subject": obj("user", who), "permission": p.permission, "resource": obj("resource", p.doc)})
		}
		var r struct{ Results []struct{ Allowed bool } }
		e.Must(200, "POST", "acme", "/v1/permissions/check-bulk", boss, map[string]any{"items": items}).JSON(t, &r)
		if len(r.Results) != len(paths) {
			t.Fatalf("bulk check of %d items: %d results", len(paths), len(r.Results))
		}
		out := make([]bool, len(r.Results))
		for i, res := range r.Results {
			out[i] = res.Allowed
		}
		return out
	}
	// holds asserts what carol and dave hold, through every path and API.
	holds := func(phase string, carolToo bool) {
		t.Helper()
		for who, want := range map[string]bool{carol: carolToo, dave: true} {
			name := map[string]string{carol: "carol", dave: "dave"}[who]
			inBulk := bulk(who)
			for i, p := range paths {
				if got := e.allowed("acme", boss, who, p.permission, p.doc); got != want {
					t.Errorf("%s: %s %s on %s through %s: check %v, want %v", phase, name, p.permission, p.doc, p.name, got, want)
				}
				if inBulk[i] != want {
					t.Errorf("%s: %s %s on %s through %s: bulk check %v, want %v", phase, name, p.permission, p.doc, p.name, inBulk[i], want)
				}
			}
			listed := e.lookup("acme", boss, who, "view")
			if want && !slices.Equal(listed, everything) || !want && len(listed) != 0 {
				t.Errorf("%s: %s may view %v", phase, name, listed)
			}
		}
		// Apps may ask Gatehouse's roles who holds them: not a disabled
		// account either.
		for who, want := range map[string]bool{carol: carolToo, dave: true} {
			var r struct{ Allowed bool }
			e.Must(200, "POST", "acme", "/v1/permissions/check", boss, map[string]any{
				"subject": obj("user", who), "permission": "assigned", "resource": obj("role", role),
			}).JSON(t, &r)
			if r.Allowed != want {
				t.Errorf("%s: role assigned to %s: %v, want %v", phase, who, r.Allowed, want)
			}
		}
		// Another tenant's grant to the same id is not touched.
		if !e.allowed("globex", other, carol, "view", "doc-direct") || !slices.Equal(e.lookup("globex", other, carol, "view"), []string{"doc-direct"}) {
			t.Errorf("%s: globex's grant to the same id does not hold", phase)
		}
	}

	holds("before", true)
	e.Must(200, "POST", "acme", "/v1/admin/users/"+carol+"/disable", boss, nil)
	holds("disabled", false)
	// Subject sets the account is in still answer for everyone else.
	var sets struct{ Results []struct{ Allowed bool } }
	e.Must(200, "POST", "acme", "/v1/permissions/check-bulk", boss, map[string]any{"items": []any{
		map[string]any{"subject": members("group", group, "member"), "permission": "view", "resource": obj("resource", "doc-group")},
		map[string]any{"subject": members("role", role, "assignee"), "permission": "view", "resource": obj("resource", "doc-role")},
	}}).JSON(t, &sets)
	if len(sets.Results) != 2 || !sets.Results[0].Allowed || !sets.Results[1].Allowed {
		t.Errorf("disabled: the group and the role lost their grants: %+v", sets.Results)
	}
	e.Must(200, "POST", "acme", "/v1/admin/users/"+carol+"/enable", boss, nil)
	holds("enabled again", true)
}

// TestFullBulkCheckDeniesOnlyTheDisabled: a bulk check as large as
// allowed, each item about another user, answers in one piece and
// denies the disabled account's item only.
func TestFullBulkCheckDeniesOnlyTheDisabled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@bulk-disable.test").AccessToken
	_, carol := e.member("acme", "carol@bulk-disable.test")
	users := []string{carol}
	for i := range rebac.MaxBulk - 1 {
		users = append(users, fmt.Sprintf("u%03d", i))
	}
	var touch, items []any
	for _, u := range users {
		touch = append(touch, map[string]any{"resource": obj("resource", "shared"), "relation": "viewer", "subject": obj("user", u)})
		items = append(items, map[string]any{"subject": obj("user", u), "permission": "view", "resource": obj("resource", "shared")})
	}
	e.Must(200, "POST", "acme", "/v1/relationships", boss, map[string]any{"touch": touch})
	e.Must(200, "POST", "acme", "/v1/admin/users/"+carol+"/disable", boss, nil)
	var r struct{ Results []struct{ Allowed bool } }
	e.Must(200, "POST", "acme", "/v1/permissions/check-bulk", boss, map[string]any{"items": items}).JSON(t, &r)
	if len(r.Results) != len(items) {
		t.Fatalf("%d results for %d items", len(r.Results), len(items))
	}
	for i, res := range r.Results {
		if res.Allowed != (i != 0) {
			t.Errorf("item %d (%s): allowed %v", i, users[i], res.Allowed)
		}
	}
}
