package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// TestDeletingATenantDeletesItsRelationships fills SpiceDB with
// relationships of three tenants' objects of every kind, deletes two of
// the tenants (one with the command reaching SpiceDB, one left to the
// servers' purge), and reads SpiceDB: nothing of the deleted tenants is
// left, and the third tenant keeps all of its relationships.
func TestDeletingATenantDeletesItsRelationships(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	flags := spicedbFlags(t)
	client := spicedbClient(t, flags)
	if _, err := client.EnsureSchema(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ids := map[string]tenancy.ID{}
	for _, slug := range []string{"acme", "globex", "initech"} {
		c.must("tenant", "create", "--slug", slug, "--name", slug)
		ids[slug] = tenantID(t, c, slug)
		user := func(id string) rebac.SubjectRef { return rebac.SubjectRef{Ref: rebac.Ref{Type: "user", ID: id}} }
		var rs []rebac.Relationship
		for i := range 1200 { // more than one delete call takes
			rs = append(rs, rebac.Relationship{Resource: rebac.Ref{Type: "resource", ID: fmt.Sprintf("doc%d", i)}, Relation: "viewer", Subject: user("u1")})
		}
		rs = append(rs,
			rebac.Relationship{Resource: rebac.Ref{Type: "tenant", ID: rebac.TenantObject}, Relation: "admin", Subject: user("boss")},
			rebac.Relationship{Resource: rebac.Ref{Type: "group", ID: "g1"}, Relation: "direct_member", Subject: user("u1")},
			rebac.Relationship{Resource: rebac.Ref{Type: "role", ID: "r1"}, Relation: "manage_users", Subject: user("*")},
		)
		for len(rs) > 0 {
			n := min(len(rs), 500)
			if _, err := client.Write(ctx, ids[slug], rs[:n], nil); err != nil {
				t.Fatal(err)
			}
			rs = rs[n:]
		}
	}
	count := func(slug string) int {
		n := 0
		for typ := range rebac.Schema {
			rs, err := client.Read(ctx, ids[slug], typ)
			if err != nil {
				t.Fatal(err)
			}
			n += len(rs)
		}
		return n
	}
	const each = 1203
	if n := count("acme"); n != each {
		t.Fatalf("acme holds %d relationships before, want %d", n, each)
	}

	// The command reaches SpiceDB: the relationships go with the tenant.
	if out := c.must(append([]string{"tenant", "delete", "acme", "--yes"}, flags...)...); !strings.Contains(out, "removed its relationships from SpiceDB") {
		t.Fatalf("delete:\n%s", out)
	}
	if n := count("acme"); n != 0 {
		t.Fatalf("acme holds %d relationships after its deletion", n)
	}
	// Without SpiceDB, the command leaves them to the servers' purge.
	if out := c.must("tenant", "delete", "globex", "--yes"); !strings.Contains(out, "when a server next sweeps") {
		t.Fatalf("delete without SpiceDB:\n%s", out)
	}
	if n := count("globex"); n != each {
		t.Fatalf("globex holds %d relationships before the purge", n)
	}
	pool := pgtest.Pool(t, c.url, 2)
	purger := rebac.NewPurger(pool, client, nil)
	if n, err := purger.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("purge within the grace period: %d tenants, %v; want none yet", n, err)
	}
	purger.Grace = 0
	if n, err := purger.Purge(ctx); err != nil || n != 2 {
		t.Fatalf("purge: %d tenants, %v; want both deleted ones (acme's again: writes in flight)", n, err)
	}
	if n := count("globex"); n != 0 {
		t.Fatalf("globex holds %d relationships after the purge", n)
	}
	if n, err := purger.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("a second purge: %d tenants, %v; want none", n, err)
	}
	if n := count("initech"); n != each {
		t.Fatalf("initech, not deleted, holds %d relationships, want %d", n, each)
	}
}
