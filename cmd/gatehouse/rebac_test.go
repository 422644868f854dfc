package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// spicedbClient connects to the SpiceDB datastore that flags (from
// spicedbFlags) name, as the commands given them do.
func spicedbClient(t *testing.T, flags []string) *rebac.Client {
	t.Helper()
	key, err := os.ReadFile(flags[len(flags)-1])
	if err != nil {
		t.Fatal(err)
	}
	cfg := spicedbtest.Shared(t).Config()
	cfg.Key = string(key)
	client, err := rebac.Connect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func TestRebacReconcileRepairsDrift(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	flags := spicedbFlags(t)
	c.must("tenant", "create", "--slug", "acme", "--name", "Acme", "--admin-email", "boss@drift.test")
	reconcile := func(extra ...string) string {
		return c.must(append(append([]string{"rebac", "reconcile", "--tenant", "acme"}, flags...), extra...)...)
	}
	// The admin recorded by the operator's command is delivered first:
	// no drift.
	if out := reconcile("--dry-run"); !strings.Contains(out, "acme: found 0 missing and 0 extra") {
		t.Fatalf("first dry run:\n%s", out)
	}

	// Drift: an intruder made admin behind Postgres's back, the real
	// admin's relationship lost.
	client := spicedbClient(t, flags)
	ctx := context.Background()
	acme := tenantID(t, c, "acme")
	admins, err := client.Read(ctx, acme, "tenant")
	if err != nil || len(admins) != 1 {
		t.Fatalf("relationships of the tenant: %v, %v", admins, err)
	}
	intruder := rebac.Relationship{Resource: admins[0].Resource, Relation: "admin", Subject: rebac.SubjectRef{Ref: rebac.Ref{Type: "user", ID: "intruder"}}}
	if _, err := client.Write(ctx, acme, []rebac.Relationship{intruder}, admins); err != nil {
		t.Fatal(err)
	}
	out := reconcile("--dry-run")
	if !strings.Contains(out, "found 1 missing and 1 extra") || !strings.Contains(out, "- tenant:tenant#admin@user:intruder#") {
		t.Fatalf("dry run with drift:\n%s", out)
	}
	if out := reconcile(); !strings.Contains(out, "repaired 1 missing and 1 extra") {
		t.Fatalf("reconcile:\n%s", out)
	}
	if out := reconcile("--dry-run"); !strings.Contains(out, "found 0 missing and 0 extra") {
		t.Fatalf("after repair:\n%s", out)
	}
	c.fails(2, "give --tenant SLUG or --all", append([]string{"rebac", "reconcile"}, flags...)...)
}

// tenantID returns the id of the tenant slug.
func tenantID(t *testing.T, c *cli, slug string) tenancy.ID {
	t.Helper()
	out := c.must("tenant", "show", slug, "--json")
	i := strings.Index(out, `"id":"`)
	if i < 0 {
		t.Fatalf("tenant show: %s", out)
	}
	id, err := tenancy.ParseID(out[i+6 : i+42])
	if err != nil {
		t.Fatal(err)
	}
	return id
}
