package tenancy_test

import (
	"context"
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// TestMoveResumesAfterPostgresCrashes stops a promotion in the middle of
// its verification, crashes both clusters (immediate shutdown, recovery on
// start), and resumes it. Clusters of its own: crashing the shared ones
// would fail other tests.
func TestMoveResumesAfterPostgresCrashes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var clusters []*pgtest.Cluster
	for range 2 {
		c, err := pgtest.Start()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Stop)
		clusters = append(clusters, c)
	}
	source, silo := clusters[0], clusters[1]
	e := newEnvOn(t, pgtest.NewPrimaryOn(t, source))
	tn := e.tenant(t, "crashy", tenancy.Shared)
	seedUsers(t, e.data, tn, 0, 2000)
	want := emails(t, e.admin, tn.ID)

	m := tenancy.NewMover(e.reg)
	m.Interrupt = func(at string) error {
		if at == "verify" {
			return errKilled
		}
		return nil
	}
	mv, err := m.Begin(ctx, "crashy", tenancy.Promote, tenancy.MoveOptions{SiloCluster: silo.URL("postgres"), MaxPause: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run(ctx, mv.ID, nil); !errors.Is(err, errKilled) {
		t.Fatalf("the run was not stopped: %v", err)
	}
	for _, c := range clusters {
		if err := c.Crash(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // pooled sessions are checked after a second idle

	m.Interrupt = nil
	if mv, err = m.Run(ctx, mv.ID, nil); err != nil || mv.State != tenancy.MoveDone {
		t.Fatalf("resume after the crash: %v; %+v", err, mv)
	}
	tn, err = e.reg.Get(ctx, "crashy")
	if err != nil || tn.Placement != tenancy.Silo {
		t.Fatalf("after the move: %+v %v", tn, err)
	}
	if got := emails(t, pgtest.Pool(t, e.siloDSN(t, tn, tenancy.AdminRole), 1), tn.ID); !maps.Equal(got, want) {
		t.Fatalf("the silo has %d users, want %d", len(got), len(want))
	}
	for _, c := range clusters {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var left int
		conn.QueryRow(ctx, "select (select count(*) from pg_replication_slots) + (select count(*) from pg_subscription)").Scan(&left)
		conn.Close(ctx)
		if left != 0 {
			t.Fatalf("%d slots or subscriptions left on the cluster on port %d", left, c.Port)
		}
	}
}
