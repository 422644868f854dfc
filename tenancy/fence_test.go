package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// createUser writes one user of tenant tn, through the tenant door.
func (e *env) createUser(tn *tenancy.Tenant, email string) error {
	ctx := context.Background()
	return e.data.Tx(ctx, tn, func(q *queries.Queries) error {
		_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: email})
		return err
	})
}

func TestFenceDrainsHoldsAndLetsThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "fenced", tenancy.Shared)
	b := e.tenant(t, "bystander", tenancy.Shared)
	write := func(tn *tenancy.Tenant, email string) error { return e.createUser(tn, email) }

	// A transaction in flight: the fence waits for it to finish.
	inside, finish := make(chan struct{}), make(chan struct{})
	finished := make(chan time.Time, 1)
	go func() {
		err := e.data.Tx(ctx, a, func(q *queries.Queries) error {
			if _, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: a.ID.UUID(), Email: "inflight@fenced.test"}); err != nil {
				return err
			}
			close(inside)
			<-finish
			finished <- time.Now() // then COMMIT
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}()
	<-inside
	go func() { time.Sleep(200 * time.Millisecond); close(finish) }()
	fence, err := tenancy.RaiseFence(ctx, e.admin, a.ID, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	raised := time.Now()
	if f := <-finished; raised.Before(f) {
		fence.Lift(ctx)
		t.Fatal("the fence was raised before the transaction in flight finished")
	}

	// New transactions of the tenant wait for the lift; others do not.
	if err := write(b, "free@bystander.test"); err != nil {
		t.Fatalf("another tenant's write behind the fence: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- write(a, "waited@fenced.test") }()
	select {
	case err := <-waited:
		t.Fatalf("a write passed the fence: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	held, err := fence.Lift(ctx)
	if err != nil || held < 300*time.Millisecond {
		t.Fatalf("lift: held %v, %v", held, err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("the write that waited: %v", err)
	}

	// Held past the wait a transaction accepts, writes are refused with
	// 503 and Retry-After, and nothing is half written.
	fence, err = tenancy.RaiseFence(ctx, e.admin, a.ID, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = write(a, "refused@fenced.test")
	var pe *problem.Error
	if !errors.As(err, &pe) || pe.Code != problem.Unavailable || pe.RetryAfter <= 0 {
		t.Fatalf("a write fenced too long: %v", err)
	}
	// Moved away: the tenant's transactions here fail; others go on.
	if err := fence.MarkMovedAway(ctx, uuid.New()); err != nil {
		t.Fatal(err)
	}
	if _, err := fence.Lift(ctx); err != nil {
		t.Fatal(err)
	}
	if err := write(a, "late@fenced.test"); problem.CodeOf(err) != problem.Unavailable || !errors.As(err, &pe) || pe.RetryAfter <= 0 {
		t.Fatalf("a write after the tenant moved away: %v", err)
	}
	if err := write(b, "still@bystander.test"); err != nil {
		t.Fatal(err)
	}
	var n int
	e.admin.QueryRow(ctx, "select count(*) from app.users where tenant_id = $1", a.ID.UUID()).Scan(&n)
	if n != 2 {
		t.Fatalf("tenant has %d users, want the in-flight and the waiting one", n)
	}
	// Welcomed back (a demotion), it writes here again.
	if err := tenancy.Welcome(ctx, e.admin, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := write(a, "back@fenced.test"); err != nil {
		t.Fatal(err)
	}
}

func TestFenceGivesUpWhenTransactionsDoNotDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "busy", tenancy.Shared)
	inside, finish := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- e.data.Tx(ctx, a, func(q *queries.Queries) error {
			if _, err := q.CountUsers(ctx, a.ID.UUID()); err != nil {
				return err
			}
			close(inside)
			<-finish
			return nil
		})
	}()
	<-inside
	if _, err := tenancy.RaiseFence(ctx, e.admin, a.ID, 200*time.Millisecond); err == nil {
		t.Fatal("the fence was raised over a transaction still running")
	}
	close(finish)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Given up, it holds nothing back.
	if err := e.data.Tx(ctx, a, func(q *queries.Queries) error { _, err := q.CountUsers(ctx, a.ID.UUID()); return err }); err != nil {
		t.Fatal(err)
	}
}

// TestFencedTenantLeavesConnectionsToOthers raises a move's fence over
// one tenant and sends it fifty transactions: they wait, holding only
// that tenant's share of the pool, while another tenant's transactions go
// through the rest of it at once.
func TestFencedTenantLeavesConnectionsToOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "moving", tenancy.Shared)
	b := e.tenant(t, "staying", tenancy.Shared)
	write := func(tn *tenancy.Tenant, email string) error { return e.createUser(tn, email) }
	fence, err := tenancy.RaiseFence(ctx, e.admin, a.ID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lift := sync.OnceValue(func() error { _, err := fence.Lift(ctx); return err })
	defer lift()
	results := make(chan error, 50)
	for i := range 50 {
		go func() { results <- write(a, fmt.Sprintf("waiting%d@moving.test", i)) }()
	}
	// Once the moving tenant's transactions stand at the fence, the other
	// tenant's writes, well before the fence would let any of them go
	// (2 s): none may wait for them.
	eventually(t, 5*time.Second, "the moving tenant's transactions at the fence", func() bool {
		var waiting int
		e.admin.QueryRow(ctx, `select count(*) from pg_stat_activity
			where datname = current_database() and usename = 'gatehouse_app' and state = 'active'
			and query like '%fence.enter%'`).Scan(&waiting)
		return waiting >= 2
	})
	start := time.Now()
	for i := range 20 {
		if err := write(b, fmt.Sprintf("user%d@staying.test", i)); err != nil {
			t.Fatalf("the other tenant's write %d behind the fence: %v", i, err)
		}
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the other tenant's 20 writes took %s with the moving tenant's fence raised", took)
	}
	select {
	case err := <-results:
		t.Fatalf("a write of the fenced tenant finished while fenced: %v", err)
	default:
	}
	if err := lift(); err != nil {
		t.Fatal(err)
	}
	// Lifted soon enough, every waiting write goes through, or is
	// refused with a clear 503 to retry: nothing else.
	for range 50 {
		if err := <-results; err != nil && problem.CodeOf(err) != problem.Unavailable {
			t.Fatalf("a waiting write of the moved tenant: %v", err)
		}
	}
}
