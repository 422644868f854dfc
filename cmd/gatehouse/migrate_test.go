package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestMigrateRefusesAParallelOutOfRange(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	if out := c.must("help"); !strings.Contains(out, "gatehouse migrate [--parallel 8]") {
		t.Fatalf("help does not mention --parallel:\n%s", out)
	}
	for _, bad := range []string{"0", "-1", "65"} {
		c.fails(2, "migrate: --parallel must be from 1 to 64, got "+bad, "migrate", "--parallel", bad)
	}
	c.fails(2, `invalid value "many" for flag -parallel`, "migrate", "--parallel", "many")
	// Refused before touching the database.
	if out := c.must("migrate", "--parallel", "64"); !strings.Contains(out, "applied control migration") || !strings.Contains(out, "silos: none") {
		t.Fatalf("first migrate after the refusals:\n%s", out)
	}
}

func TestMigrateReportsAFailedSiloBySlugAndExitsNonZero(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.must("migrate")
	slugs := []string{"east", "north", "south", "west"}
	for _, slug := range slugs {
		c.must("tenant", "create", "--slug", slug, "--name", slug, "--placement", "silo")
	}
	south := tenantID(t, c, "south")
	pgtest.Primary(t).Exec(t, "postgres", "drop database gatehouse_"+strings.ReplaceAll(south.String(), "-", "")+" with (force)")

	code, out, errOut := c.run("", "migrate", "--parallel", "2")
	if code != 1 || !strings.Contains(errOut, "gatehouse: 1 of 4 silos failed to migrate: south") {
		t.Fatalf("migrate with a broken silo: exit %d, stderr %q; want 1, naming south\n%s", code, errOut, out)
	}
	want := []string{
		"silo east: already current at version ",
		"silo north: already current at version ",
		"silo south: failed (",
		"silo west: already current at version ",
		"silos: 0 migrated, 3 already current, 1 failed (4 in all)\nfailed: silo south: connect: ",
	}
	for k := 1; k <= len(slugs); k++ {
		want = append(want, fmt.Sprintf("(%d/4)", k))
	}
	for _, w := range want {
		if strings.Count(out, w) != 1 {
			t.Fatalf("migrate output has %q %d times, want once:\n%s", w, strings.Count(out, w), out)
		}
	}
	// A second run finds the same.
	if _, out, _ = c.run("", "migrate", "--parallel", "1"); !strings.Contains(out, "silos: 0 migrated, 3 already current, 1 failed (4 in all)") {
		t.Fatalf("second migrate:\n%s", out)
	}
}
