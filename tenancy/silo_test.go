package tenancy_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestSiloPoolsOpenLazilyAndCloseWhenIdle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "silo-one", tenancy.Silo)
	b := e.tenant(t, "silo-two", tenancy.Silo)
	c := e.tenant(t, "silo-three", tenancy.Silo)
	pools := tenancy.NewSiloPools(e.vault,
		tenancy.SiloPoolOptions{MaxConns: 2, MaxPools: 2, Idle: 200 * time.Millisecond})
	t.Cleanup(pools.Close)
	db := tenancy.NewDB(e.app, pools)
	touch := func(tn *tenancy.Tenant) {
		t.Helper()
		err := db.Tx(ctx, tn, func(q *queries.Queries) error {
			_, err := q.CountUsers(ctx, tn.ID.UUID())
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", tn.Slug, err)
		}
	}
	if n := pools.Open(); n != 0 {
		t.Fatalf("%d pools open before any use", n)
	}
	touch(a)
	touch(b)
	touch(c)                      // over MaxPools: the least recently used goes
	if n := pools.Open(); n > 2 { // fewer if the janitor was quicker
		t.Fatalf("%d pools open, want at most 2", n)
	}
	touch(a) // reopened on demand
	eventually(t, 3*time.Second, "idle pools closed", func() bool { return pools.Open() == 0 })
	touch(b)
	if n := pools.Open(); n != 1 {
		t.Fatalf("%d pools open after reuse, want 1", n)
	}
}

func TestUnreachableSiloIsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := tenancy.ID(uuid.New())
	gone := "postgres://postgres@127.0.0.1:1/gatehouse_gone?connect_timeout=2"
	ref, err := e.vault.StoreSilo(context.Background(), id, tenancy.SiloDSNs{Admin: gone, App: gone})
	if err != nil {
		t.Fatal(err)
	}
	tn := &tenancy.Tenant{ID: id, Slug: "gone", Status: tenancy.Active, Placement: tenancy.Silo, SiloRef: ref}
	err = e.data.Tx(context.Background(), tn, func(*queries.Queries) error {
		t.Fatal("fn ran without a connection")
		return nil
	})
	if problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("Tx on an unreachable silo = %v, want Unavailable", err)
	}
}
