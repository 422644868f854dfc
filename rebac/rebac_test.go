package rebac_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMain(m *testing.M) {
	proctest.Main(m)
}

func ref(typ, id string) rebac.Ref { return rebac.Ref{Type: typ, ID: id} }

func user(id string) rebac.SubjectRef { return rebac.SubjectRef{Ref: ref("user", id)} }

func members(typ, id string) rebac.SubjectRef {
	return rebac.SubjectRef{Ref: ref(typ, id), Relation: map[string]string{"group": "member", "role": "assignee", "tenant": "member"}[typ]}
}

func rel(resType, resID, relation string, s rebac.SubjectRef) rebac.Relationship {
	return rebac.Relationship{Resource: ref(resType, resID), Relation: relation, Subject: s}
}

func TestSchemaIsAppliedOnce(t *testing.T) {
	t.Parallel()
	srv := spicedbtest.Shared(t)
	c, err := rebac.Connect(srv.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if wrote, err := c.EnsureSchema(ctx); err != nil || !wrote {
		t.Fatalf("first EnsureSchema: wrote %v, %v", wrote, err)
	}
	if wrote, err := c.EnsureSchema(ctx); err != nil || wrote {
		t.Fatalf("second EnsureSchema: wrote %v, %v; want no write", wrote, err)
	}
	for _, typ := range []string{"user", "tenant", "group", "role", "resource"} {
		if rebac.Schema[typ] == nil {
			t.Errorf("the parsed schema has no %s", typ)
		}
	}
	if !rebac.HasPermission("tenant", "manage_users") || rebac.HasPermission("tenant", "fly") || !rebac.Admits("group", "direct_member", "group", "member") {
		t.Error("the parsed schema does not match schema.zed")
	}
}

// TestSchemaAssertions checks the schema's meaning against a real
// SpiceDB: who may do what, given a small tenant.
func TestSchemaAssertions(t *testing.T) {
	t.Parallel()
	c := spicedbtest.Shared(t).Connect(t)
	ctx := context.Background()
	tn := tenancy.ID(uuid.New())
	at, err := c.Write(ctx, tn, []rebac.Relationship{
		rel("tenant", "t", "admin", user("alice")),
		rel("tenant", "t", "member", user("bob")),
		rel("tenant", "t", "member", user("carol")),
		// billing-admin carries view_audit; assigned to group finance,
		// of which group payroll (carol's) is a member.
		rel("role", "billing-admin", "view_audit", user("*")),
		rel("tenant", "t", "role", rebac.SubjectRef{Ref: ref("role", "billing-admin")}),
		rel("role", "billing-admin", "assignee", members("group", "finance")),
		rel("group", "finance", "tenant", rebac.SubjectRef{Ref: ref("tenant", "t")}),
		rel("group", "finance", "direct_member", members("group", "payroll")),
		rel("group", "payroll", "direct_member", user("carol")),
		rel("group", "payroll", "manager", user("dave")),
		// A folder and a document in it.
		rel("resource", "folder-1", "editor", user("frank")),
		rel("resource", "doc-1", "parent", rebac.SubjectRef{Ref: ref("resource", "folder-1")}),
		rel("resource", "doc-1", "owner", user("erin")),
		rel("resource", "doc-1", "viewer", members("role", "billing-admin")),
		rel("resource", "handbook", "viewer", members("tenant", "t")),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		who        string
		permission string
		on         rebac.Ref
		want       bool
	}{
		{"alice", "manage_users", ref("tenant", "t"), true},
		{"alice", "view_audit", ref("tenant", "t"), true},
		{"bob", "manage_users", ref("tenant", "t"), false},
		{"bob", "access", ref("tenant", "t"), true},
		{"carol", "view_audit", ref("tenant", "t"), true}, // role via nested groups
		{"carol", "manage_users", ref("tenant", "t"), false},
		{"dave", "member", ref("group", "payroll"), true}, // managers are members
		{"dave", "member", ref("group", "finance"), true}, // … of enclosing groups too
		{"alice", "manage", ref("group", "finance"), true},
		{"bob", "manage", ref("group", "finance"), false},
		{"erin", "delete", ref("resource", "doc-1"), true},
		{"frank", "edit", ref("resource", "doc-1"), true}, // from the folder
		{"frank", "delete", ref("resource", "doc-1"), false},
		{"carol", "view", ref("resource", "doc-1"), true}, // via the role
		{"carol", "edit", ref("resource", "doc-1"), false},
		{"bob", "view", ref("resource", "doc-1"), false},
		{"bob", "view", ref("resource", "handbook"), true},
		{"mallory", "view", ref("resource", "handbook"), false},
	} {
		got, _, err := c.Check(ctx, tn, user(a.who), a.permission, a.on, at)
		if err != nil || got != a.want {
			t.Errorf("%s %s on %s:%s = %v, %v; want %v", a.who, a.permission, a.on.Type, a.on.ID, got, err, a.want)
		}
	}

	// A removal is seen by the very next check made with its token.
	at, err = c.Write(ctx, tn, nil, []rebac.Relationship{rel("group", "payroll", "direct_member", user("carol"))})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.Check(ctx, tn, user("carol"), "view_audit", ref("tenant", "t"), at); err != nil || got {
		t.Fatalf("after removal from the group: %v, %v; want denied", got, err)
	}
}

func TestRelationshipsNeverJoinTenants(t *testing.T) {
	t.Parallel()
	c := spicedbtest.Shared(t).Connect(t)
	ctx := context.Background()
	a, b := tenancy.ID(uuid.New()), tenancy.ID(uuid.New())
	at, err := c.Write(ctx, a, []rebac.Relationship{rel("resource", "doc", "owner", user("u1"))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The same local ids in another tenant are other objects.
	if got, _, err := c.Check(ctx, b, user("u1"), "view", ref("resource", "doc"), at); err != nil || got {
		t.Fatalf("tenant B sees tenant A's relationship: %v, %v", got, err)
	}
	if got, _, _ := c.Check(ctx, a, user("u1"), "view", ref("resource", "doc"), at); !got {
		t.Fatal("tenant A does not see its own relationship")
	}
	// Naming another tenant's object through an id is refused.
	for _, id := range []string{a.String() + "|doc", "x|y", "|"} {
		_, _, err := c.Check(ctx, b, user("u1"), "view", ref("resource", id), at)
		if problem.CodeOf(err) != problem.Invalid || !strings.Contains(err.Error(), "resource.id: must not contain |") {
			t.Errorf("check with resource id %q: %v; want Invalid naming resource.id", id, err)
		}
		_, err = c.Write(ctx, b, []rebac.Relationship{rel("resource", "doc", "owner", user(id))}, nil)
		if problem.CodeOf(err) != problem.Invalid || !strings.Contains(err.Error(), "subject.id") {
			t.Errorf("write with subject id %q: %v; want Invalid naming subject.id", id, err)
		}
	}
}

func TestInputTheSchemaDoesNotTakeIsRefusedByName(t *testing.T) {
	t.Parallel()
	c := spicedbtest.Shared(t).Connect(t)
	ctx := context.Background()
	tn := tenancy.ID(uuid.New())
	for _, tc := range []struct {
		name  string
		write rebac.Relationship
		field string
	}{
		{"unknown type", rel("spaceship", "x", "owner", user("u")), "resource.type"},
		{"unknown relation", rel("resource", "x", "pilot", user("u")), "relation"},
		{"a permission is not a relation", rel("resource", "x", "view", user("u")), "relation"},
		{"subject type not admitted", rel("resource", "x", "owner", rebac.SubjectRef{Ref: ref("role", "r")}), "subject"},
		{"unknown subject relation", rel("resource", "x", "viewer", rebac.SubjectRef{Ref: ref("group", "g"), Relation: "fans"}), "subject.relation"},
		{"wildcard where none is allowed", rel("resource", "x", "owner", user("*")), "subject"},
		{"empty id", rel("resource", "", "owner", user("u")), "resource.id"},
		{"overlong id", rel("resource", strings.Repeat("x", 201), "owner", user("u")), "resource.id"},
		{"bad characters", rel("resource", "a b", "owner", user("u")), "resource.id"},
	} {
		_, err := c.Write(ctx, tn, []rebac.Relationship{tc.write}, nil)
		if problem.CodeOf(err) != problem.Invalid || !strings.HasPrefix(problem.MessageOf(err), tc.field+":") {
			t.Errorf("%s: %v; want Invalid naming %s", tc.name, err, tc.field)
		}
	}
	_, _, err := c.Check(ctx, tn, user("u"), "fly", ref("resource", "x"), "")
	if problem.CodeOf(err) != problem.Invalid || !strings.HasPrefix(problem.MessageOf(err), "permission:") {
		t.Errorf("unknown permission: %v", err)
	}
}

func TestUnreachableSpiceDBDenies(t *testing.T) {
	t.Parallel()
	srv := spicedbtest.Start(t)
	c := srv.Connect(t)
	ctx := context.Background()
	tn := tenancy.ID(uuid.New())
	at, err := c.Write(ctx, tn, []rebac.Relationship{rel("resource", "doc", "owner", user("u"))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	got, _, err := c.Check(ctx, tn, user("u"), "view", ref("resource", "doc"), at)
	if got || problem.CodeOf(err) != problem.Unavailable || strings.Contains(problem.MessageOf(err), "rpc") {
		t.Fatalf("check with SpiceDB down: %v, %v (%q); want denied, Unavailable, no gRPC text", got, err, problem.MessageOf(err))
	}
	if _, err := c.Write(ctx, tn, []rebac.Relationship{rel("resource", "doc", "viewer", user("v"))}, nil); problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("write with SpiceDB down: %v", err)
	}
}

func TestRelationshipsSurviveARestartOnPostgres(t *testing.T) {
	t.Parallel()
	cluster := pgtest.Primary(t)
	srv := spicedbtest.StartPostgres(t, cluster.URL(cluster.NewDatabase(t, "")))
	c := srv.Connect(t)
	ctx := context.Background()
	tn := tenancy.ID(uuid.New())
	at, err := c.Write(ctx, tn, []rebac.Relationship{rel("resource", "doc", "owner", user("u"))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Restart(t)
	// The write's token still holds: what the restarted server knows, it
	// read back from Postgres.
	got, _, err := c.Check(ctx, tn, user("u"), "delete", ref("resource", "doc"), at)
	if err != nil || !got {
		t.Fatalf("after a restart: %v, %v; want the relationship back", got, err)
	}
	if wrote, err := c.EnsureSchema(ctx); err != nil || wrote {
		t.Fatalf("schema after a restart: wrote %v, %v; want it kept", wrote, err)
	}
}
