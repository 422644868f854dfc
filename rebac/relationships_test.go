package rebac_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/tenancy"
)

// parentOf is a touch of res's parent link to parent.
func parentOf(res, parent string) map[string]any {
	return map[string]any{"resource": obj("resource", res), "relation": "parent", "subject": obj("resource", parent)}
}

// TestRelationshipWritesRefuseWhatWouldBreakChecks: loops of parents,
// chains too deep for SpiceDB, a relationship named twice, wildcard
// subjects and foreign consistency tokens are refused with 400 naming
// the field; and every check on the resources involved still answers.
func TestRelationshipWritesRefuseWhatWouldBreakChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	app := e.adminLogin("acme", "app@loops.test").AccessToken
	write := func(status int, field string, touch, del []any) {
		t.Helper()
		r := e.Do("POST", "acme", "/v1/relationships", app, map[string]any{"touch": touch, "delete": del})
		if r.Status != status {
			t.Fatalf("write %v / %v: %d %s; want %d", touch, del, r.Status, r.Body, status)
		}
		if status == 400 {
			if d := e.ProblemOf(r, 400); len(d.Errors) != 1 || d.Errors[0].Field != field {
				t.Fatalf("write %v: errors %+v, want one naming %s", touch, d.Errors, field)
			}
		}
	}
	viewer := map[string]any{"resource": obj("resource", "a"), "relation": "viewer", "subject": obj("user", "u1")}

	write(400, "touch[0]", []any{parentOf("a", "a")}, nil)
	write(200, "", []any{parentOf("a", "b"), parentOf("b", "c")}, nil)
	write(400, "touch[0]", []any{parentOf("c", "a")}, nil)                     // a->b->c->a
	write(400, "touch[0]", []any{parentOf("x", "y"), parentOf("y", "x")}, nil) // a loop within one write
	write(400, "touch[0]", []any{parentOf("d", "a"), parentOf("c", "d")}, nil) // half held, half written
	write(200, "", []any{parentOf("c", "d")}, []any{parentOf("b", "c")})       // a link removed in the same write frees the way
	write(400, "touch[1]", []any{viewer, viewer}, nil)                         // the same relationship twice
	write(400, "delete[0]", []any{viewer}, []any{viewer})                      // touched and deleted at once
	write(400, "touch[0].subject.id", []any{map[string]any{"resource": obj("resource", "a"), "relation": "viewer", "subject": obj("user", "*")}}, nil)

	// A chain as deep as allowed, then one link more above a resource:
	// also when a shortcut link makes the chain's other way short.
	var chain []any
	for i := range rebac.MaxParentDepth {
		chain = append(chain, parentOf(fmt.Sprintf("deep%02d", i), fmt.Sprintf("deep%02d", i+1)))
	}
	write(200, "", chain, nil)
	write(400, "touch[0]", []any{parentOf("bottom", "deep00")}, nil)
	write(200, "", []any{parentOf("shortcut", "deep01"), parentOf("shortcut", fmt.Sprintf("deep%02d", rebac.MaxParentDepth))}, nil)
	write(400, "touch[0]", []any{parentOf("under-shortcut", "shortcut")}, nil)
	e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"touch": []any{map[string]any{
		"resource": obj("resource", fmt.Sprintf("deep%02d", rebac.MaxParentDepth)), "relation": "viewer", "subject": obj("user", "u1"),
	}}})
	if !e.allowed("acme", app, "u1", "view", "deep00") {
		t.Fatal("a viewer of the top of the chain cannot view its bottom")
	}
	for _, res := range []string{"a", "b", "c", "d", "x", "y"} {
		e.allowed("acme", app, "u1", "view", res) // answers 200, not a 500 of a loop
	}
	// Chains grown from the top pass each write, but a check of their
	// bottom runs into SpiceDB's own depth limit: a clear 409, not a 500.
	for i := range 60 {
		write(200, "", []any{parentOf(fmt.Sprintf("tall%02d", i), fmt.Sprintf("tall%02d", i+1))}, nil)
	}
	d := e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check", app, map[string]any{
		"subject": obj("user", "u1"), "permission": "view", "resource": obj("resource", "tall00"),
	}), 409)
	if !strings.Contains(d.Detail, "too deep") {
		t.Fatalf("a check through a chain too deep: %+v", d)
	}
	// Relations of Gatehouse's own objects are not questions.
	d = e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check", app, map[string]any{
		"subject": obj("user", "u1"), "permission": "admin", "resource": obj("tenant", "tenant"),
	}), 400)
	if len(d.Errors) != 1 || d.Errors[0].Field != "permission" {
		t.Fatalf("a check of the tenant's admin relation: %+v", d)
	}

	// Checks: a wildcard subject, and tokens SpiceDB never gave out.
	check := func(subject, token string) map[string]any {
		return map[string]any{"subject": obj("user", subject), "permission": "view", "resource": obj("resource", "a"), "consistency_token": token}
	}
	var good struct {
		ConsistencyToken string `json:"consistency_token"`
	}
	e.Must(200, "POST", "acme", "/v1/permissions/check", app, check("u1", "")).JSON(t, &good)
	for name, c := range map[string]struct {
		body  map[string]any
		field string
	}{
		"wildcard subject":   {check("*", ""), "subject.id"},
		"token not base64":   {check("u1", "not a token!"), "consistency_token"},
		"token cut short":    {check("u1", good.ConsistencyToken[:len(good.ConsistencyToken)/2]), "consistency_token"},
		"token of elsewhere": {check("u1", "Z2F0ZWhvdXNl"), "consistency_token"},
	} {
		d := e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/check", app, c.body), 400)
		if len(d.Errors) != 1 || d.Errors[0].Field != c.field {
			t.Errorf("%s: errors %+v, want one naming %s", name, d.Errors, c.field)
		}
	}
	d = e.ProblemOf(e.Do("POST", "acme", "/v1/permissions/lookup-resources", app, map[string]any{
		"subject": obj("user", "*"), "permission": "view", "resource_type": "resource",
	}), 400)
	if !strings.Contains(d.Detail, "subject.id") {
		t.Errorf("lookup with a wildcard: %+v", d)
	}
}

// TestConcurrentNestingCannotMakeAGroupLoop nests each group of a ring
// into the next, all at once: each addition alone is fine, all of them
// together make a loop, so at least one must be refused. To make "at
// once" certain, the test holds the membership table against writes
// until every addition has read the groups and waits to write.
func TestConcurrentNestingCannotMakeAGroupLoop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@nest.test").AccessToken
	ctx := context.Background()
	const ring = 4
	for round := range 3 {
		groups := make([]string, ring)
		for i := range groups {
			groups[i] = e.group("acme", boss, fmt.Sprintf("g%d-%d", round, i))
		}
		hold, err := e.Admin.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hold.Exec(ctx, "lock table app.group_members in exclusive mode"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		statuses := make([]int, ring)
		for i := range groups {
			wg.Go(func() {
				statuses[i] = e.Do("POST", "acme", "/v1/admin/groups/"+groups[(i+1)%ring]+"/members", boss,
					map[string]string{"type": "group", "id": groups[i]}).Status
			})
		}
		eventuallyTrue(t, "every addition waiting", func() bool {
			var waiting int
			e.Admin.QueryRow(ctx, `select count(*) from pg_stat_activity
				where datname = current_database() and usename = 'gatehouse_app' and wait_event_type = 'Lock'`).Scan(&waiting)
			return waiting == ring
		})
		hold.Rollback(ctx)
		wg.Wait()
		added := 0
		for _, s := range statuses {
			if s == 204 {
				added++
			}
		}
		t.Logf("round %d: %v", round, statuses)
		if added != ring-1 {
			t.Fatalf("round %d: the ring's additions answered %v; want all but one to pass", round, statuses)
		}
	}
}

// TestAppWritesNeverMoveTheTenantsTokenBack: while another client keeps
// writing, a relationship just deleted never passes the next check
// (made without a token, so at the tenant's stored one).
func TestAppWritesNeverMoveTheTenantsTokenBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	app := e.adminLogin("acme", "app@order.test").AccessToken
	rel := func(res, user string) []any {
		return []any{map[string]any{"resource": obj("resource", res), "relation": "viewer", "subject": obj("user", user)}}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				e.Do("POST", "acme", "/v1/relationships", app, map[string]any{"touch": rel(fmt.Sprintf("noise-%d-%d", w, i), "n")})
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 40 {
		doc := fmt.Sprintf("doc-%d", i)
		e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"touch": rel(doc, "u")})
		e.Must(200, "POST", "acme", "/v1/relationships", app, map[string]any{"delete": rel(doc, "u")})
		if e.allowed("acme", app, "u", "view", doc) {
			t.Fatalf("round %d: a viewer removed by the last write still views", i)
		}
	}
}
