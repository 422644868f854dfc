package tenancy_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// seedUsers writes n users (with a session each) and one outbox row (an
// identity column) of tenant tn.
func seedUsers(t *testing.T, db *tenancy.DB, tn *tenancy.Tenant, from, n int) {
	t.Helper()
	if err := seed(db, tn, from, n); err != nil {
		t.Fatal(err)
	}
}

func seed(db *tenancy.DB, tn *tenancy.Tenant, from, n int) error {
	ctx := context.Background()
	return db.Tx(ctx, tn, func(q *queries.Queries) error {
		for i := from; i < from+n; i++ {
			u, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: fmt.Sprintf("u%d@%s.test", i, tn.Slug)})
			if err != nil {
				return err
			}
			if _, err := q.CreateSession(ctx, queries.CreateSessionParams{TenantID: tn.ID.UUID(), UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				return err
			}
		}
		return q.EnqueueRelationship(ctx, queries.EnqueueRelationshipParams{TenantID: tn.ID.UUID(), Op: "touch",
			ResourceType: "tenant", ResourceID: "tenant", Relation: "member", SubjectType: "user", SubjectID: fmt.Sprint(from)})
	})
}

func TestReplicationCopiesAndStreamsOneTenantThenLeavesNoTrace(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "mover", tenancy.Shared)
	b := e.tenant(t, "stayer", tenancy.Shared)
	seedUsers(t, e.data, a, 0, 300)
	seedUsers(t, e.data, b, 0, 50)
	// The target: a migrated silo database on the second cluster.
	silo := e.tenant(t, "target", tenancy.Silo)
	target := pgtest.Pool(t, e.siloDSN(t, silo, tenancy.AdminRole), 2)
	rep := &tenancy.Replication{Tenant: a.ID, Source: e.admin, Target: target, SourceConn: e.db.AdminURL}

	// Writes go on while the copy runs, to both tenants.
	var wg sync.WaitGroup
	var stop atomic.Bool
	var writeErr error
	written := 300
	wg.Go(func() {
		for !stop.Load() && writeErr == nil {
			if writeErr = seed(e.data, a, written, 5); writeErr == nil {
				writeErr = seed(e.data, b, written, 5)
			}
			written += 5
			time.Sleep(5 * time.Millisecond)
		}
	})
	if err := rep.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rep.Start(ctx); err != nil { // a resumed move starts again
		t.Fatalf("second Start: %v", err)
	}
	eventually(t, 60*time.Second, "the copy finishes", func() bool {
		ready, err := rep.Ready(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ready
	})
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	// The tenant's last write, then a mark behind its fence, which the
	// target shows only after everything before it.
	seedUsers(t, e.data, a, written, 1)
	fence, err := tenancy.RaiseFence(ctx, e.admin, a.ID, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	move := uuid.New()
	if err := fence.Mark(ctx, move, 1); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the target shows the mark", func() bool {
		ok, err := rep.Arrived(ctx, move, 1)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	})
	if _, err := fence.Lift(ctx); err != nil {
		t.Fatal(err)
	}
	if lag, err := rep.Lag(ctx); err != nil || lag < 0 {
		t.Fatalf("lag %d, %v", lag, err)
	}

	src, err := tenancy.Checksums(ctx, e.admin, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := tenancy.Checksums(ctx, target, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if src["users"].Rows != int64(written+1) || src["move_marks"].Rows != 1 || !maps.Equal(src, dst) {
		t.Fatalf("source %v\ntarget %v\n(%d users written)", src, dst, written+1)
	}
	// Nothing of the other tenant crossed.
	other, err := tenancy.Checksums(ctx, target, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	for table, s := range other {
		if s.Rows != 0 {
			t.Errorf("%d rows of another tenant reached the target's %s", s.Rows, table)
		}
	}

	for range 2 { // stopping twice is fine: an abort may be resumed
		if err := rep.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var slots, pubs, subs int
	e.admin.QueryRow(ctx, "select count(*) from pg_replication_slots where database = current_database()").Scan(&slots)
	e.admin.QueryRow(ctx, "select count(*) from pg_publication").Scan(&pubs)
	target.QueryRow(ctx, "select count(*) from pg_subscription where subdbid = (select oid from pg_database where datname = current_database())").Scan(&subs)
	if slots+pubs+subs != 0 {
		t.Fatalf("left behind %d slots, %d publications, %d subscriptions", slots, pubs, subs)
	}
	// The target keeps its copy; the source goes on alone.
	seedUsers(t, e.data, a, written+1, 1)
	if after, _ := tenancy.Checksums(ctx, target, a.ID); !maps.Equal(after, dst) {
		t.Fatal("the target still receives changes after Stop")
	}
}
