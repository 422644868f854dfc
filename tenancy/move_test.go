package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// writer keeps writing users of one tenant until stopped, through the
// tenant's current placement as a server would find it, and remembers
// which writes were acknowledged.
type writer struct {
	e      *env
	slug   string
	stop   atomic.Bool
	wg     sync.WaitGroup
	mu     sync.Mutex
	acked  []string
	failed int
	err    error
}

// writers numbers writers, so that each writes addresses of its own.
var writers atomic.Int64

func startWriter(t *testing.T, e *env, slug string) *writer {
	t.Helper()
	w := &writer{e: e, slug: slug}
	run := writers.Add(1)
	w.wg.Go(func() {
		ctx := context.Background()
		tn, err := e.reg.Get(ctx, slug)
		for i := 0; err == nil && !w.stop.Load(); i++ {
			email := fmt.Sprintf("w%d-%d@%s.test", run, i, slug)
			werr := e.data.Tx(ctx, tn, func(q *queries.Queries) error {
				_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: email})
				return err
			})
			switch {
			case werr == nil:
				w.mu.Lock()
				w.acked = append(w.acked, email)
				w.mu.Unlock()
			case problem.CodeOf(werr) == problem.Unavailable:
				// Fenced too long, or moved: a server resolves the tenant
				// afresh (the flip's notification does that).
				w.failed++
				tn, err = e.reg.Get(ctx, slug)
			default:
				err = werr
			}
			time.Sleep(2 * time.Millisecond)
		}
		w.err = err
	})
	return w
}

// finish stops the writer and returns the acknowledged emails.
func (w *writer) finish(t *testing.T) []string {
	t.Helper()
	w.stop.Store(true)
	w.wg.Wait()
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	return w.acked
}

// emails returns tenant tn's user emails in db (an administrator pool).
func emails(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, tn tenancy.ID) map[string]int {
	t.Helper()
	rows, err := db.Query(context.Background(), "select email from app.users where tenant_id = $1", tn.UUID())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			t.Fatal(err)
		}
		got[e]++
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	return got
}

// leftovers counts the replication objects any move of tenant tn left:
// slots and subscriptions on both clusters, publications in the primary
// database and in dbs.
func (e *env) leftovers(t *testing.T, tn tenancy.ID, dbs ...*pgxpool.Pool) int {
	t.Helper()
	ctx := context.Background()
	name := "gatehouse_move_" + strings.ReplaceAll(tn.String(), "-", "")
	n := 0
	for _, c := range []*pgtest.Cluster{pgtest.Primary(t), pgtest.Second(t)} {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		var slots, subs int
		// Slots and subscriptions are cluster-wide catalogs.
		conn.QueryRow(ctx, `select count(*) from pg_replication_slots where slot_name = $1
			or slot_name like 'pg\_%\_sync\_%' and (database = $2 or database like $3)`,
			name, e.db.Name, "gatehouse_"+strings.ReplaceAll(tn.String(), "-", "")+"%").Scan(&slots)
		conn.QueryRow(ctx, "select count(*) from pg_subscription where subname = $1", name).Scan(&subs)
		conn.Close(ctx)
		n += slots + subs
	}
	for _, db := range append(dbs, e.admin) {
		var pubs int
		db.QueryRow(ctx, "select count(*) from pg_publication where pubname = $1", name).Scan(&pubs)
		n += pubs
	}
	return n
}

// siloDatabases counts tenant tn's silo databases on the silo cluster.
func siloDatabases(t *testing.T, tn tenancy.ID) int { return len(siloNames(t, tn)) }

// siloNames lists tenant tn's silo databases on the silo cluster.
func siloNames(t *testing.T, tn tenancy.ID) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.Second(t).URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "select datname from pg_database where datname like $1 order by datname",
		"gatehouse_"+strings.ReplaceAll(tn.String(), "-", "")+"%")
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func (e *env) promote(t *testing.T, m *tenancy.Mover, slug string, keep time.Duration) *tenancy.Move {
	t.Helper()
	mv, err := m.Begin(context.Background(), slug, tenancy.Promote, tenancy.MoveOptions{
		SiloCluster: pgtest.Second(t).URL("postgres"), MaxPause: time.Second, KeepOldFor: keep})
	if err != nil {
		t.Fatalf("begin promotion of %s: %v", slug, err)
	}
	return mv
}

// checkMoved asserts that tenant slug lives at placement with exactly
// the rows it had plus the acknowledged writes, that the other tenant's
// rows did not come along, and that no replication object is left; then
// writes one more user there, and adds it to want.
func (e *env) checkMoved(t *testing.T, slug string, placement tenancy.Placement, want map[string]int, other tenancy.ID) *tenancy.Tenant {
	t.Helper()
	ctx := context.Background()
	tn, err := e.reg.Get(ctx, slug)
	if err != nil {
		t.Fatal(err)
	}
	if tn.Placement != placement || tn.Status != tenancy.Active {
		t.Fatalf("tenant %s is %s in %s, want active in %s", slug, tn.Status, tn.Placement, placement)
	}
	db := e.admin
	if placement == tenancy.Silo {
		db = pgtest.Pool(t, e.siloDSN(t, tn, tenancy.AdminRole), 2)
		if n := emails(t, db, other); len(n) != 0 {
			t.Errorf("%d users of another tenant reached the silo", len(n))
		}
	}
	got := emails(t, db, tn.ID)
	if !maps.Equal(got, want) {
		var missing, extra []string
		for e := range want {
			if got[e] == 0 {
				missing = append(missing, e)
			}
		}
		for e, n := range got {
			if want[e] == 0 || n > 1 {
				extra = append(extra, e)
			}
		}
		t.Fatalf("tenant %s has %d users, want %d: missing %v, unexpected or doubled %v", slug, len(got), len(want), missing, extra)
	}
	if n := e.leftovers(t, tn.ID, db); n != 0 {
		t.Fatalf("%d replication slots, publications or subscriptions left behind", n)
	}
	// And it works there.
	email := fmt.Sprintf("after%d@%s.test", len(want), slug)
	if err := e.data.Tx(ctx, tn, func(q *queries.Queries) error {
		_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: email})
		return err
	}); err != nil {
		t.Fatalf("a write after the move: %v", err)
	}
	want[email]++
	return tn
}

func TestPromoteAndDemoteUnderWritesLoseNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "mover", tenancy.Shared)
	b := e.tenant(t, "stayer", tenancy.Shared)
	seedUsers(t, e.data, a, 0, 500)
	seedUsers(t, e.data, b, 0, 50)
	want := emails(t, e.admin, a.ID)
	m := tenancy.NewMover(e.reg)

	// A second server instance's resolver, with the tenant cached.
	resolver := tenancy.NewResolver(e.app, "localhost", quietLog())
	var mu sync.Mutex
	var heard []time.Time
	resolver.OnChange = func(id tenancy.ID) {
		if id == a.ID {
			mu.Lock()
			heard = append(heard, time.Now())
			mu.Unlock()
		}
	}
	rctx, stopResolver := context.WithCancel(ctx)
	defer stopResolver()
	go resolver.Run(rctx)
	eventually(t, 5*time.Second, "the resolver listens", resolver.Listening)

	// Promotion, while both tenants keep writing.
	wa, wb := startWriter(t, e, "mover"), startWriter(t, e, "stayer")
	mv := e.promote(t, m, "mover", time.Hour)
	var phases []tenancy.Phase
	mv, err := m.Run(ctx, mv.ID, func(mv *tenancy.Move) {
		if len(phases) == 0 || phases[len(phases)-1] != mv.Phase {
			phases = append(phases, mv.Phase)
		}
	})
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // a few writes on the silo
	for _, email := range wa.finish(t) {
		want[email]++
	}
	wb.finish(t)
	if mv.State != tenancy.MoveRetiring || mv.Phase != tenancy.PhaseRetire || mv.FlippedAt == nil || mv.Pause <= 0 || mv.Pause > time.Second {
		t.Fatalf("promotion ended %s", fmt.Sprintf("%+v", *mv))
	}
	if fmt.Sprint(phases) != "[target copy catch_up verify switch cleanup retire]" {
		t.Errorf("phases %v", phases)
	}
	if wb.failed != 0 {
		t.Errorf("the other tenant's writes were refused %d times", wb.failed)
	}
	tn := e.checkMoved(t, "mover", tenancy.Silo, want, b.ID)
	// The second instance heard of the flip within a second, and routes
	// to the silo.
	mu.Lock()
	i := slices.IndexFunc(heard, func(at time.Time) bool { return !at.Before(*mv.FlippedAt) })
	if i < 0 || heard[i].Sub(*mv.FlippedAt) > time.Second {
		t.Fatalf("the resolver heard of tenant changes at %v; the flip was at %v", heard, mv.FlippedAt)
	}
	mu.Unlock()
	eventually(t, time.Second, "the second instance resolves the silo", func() bool {
		r, err := resolver.Resolve(ctx, "mover.localhost")
		return err == nil && r.Placement == tenancy.Silo && r.SiloRef == tn.SiloRef
	})
	for table, p := range mv.Tables {
		if p.State != "verified" {
			t.Errorf("table %s: %+v", table, p)
		}
	}

	// The shared rows stay for the grace period, refusing the tenant.
	if n := len(emails(t, e.admin, a.ID)); n == 0 {
		t.Fatal("the shared copy went before its grace period ended")
	}
	stale := *a
	if err := e.data.Tx(ctx, &stale, func(q *queries.Queries) error { _, err := q.CountUsers(ctx, a.ID.UUID()); return err }); problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("a server that missed the flip reached the shared copy: %v", err)
	}
	if mv, err = m.Retire(ctx, mv.ID, false); err != nil || mv.State != tenancy.MoveDone {
		t.Fatalf("retire: %v, %+v", err, mv)
	}
	if n := len(emails(t, e.admin, a.ID)); n != 0 {
		t.Fatalf("%d shared rows left after retiring", n)
	}

	// Demotion, the same way back, writing all along.
	wa = startWriter(t, e, "mover")
	mv, err = m.Begin(ctx, "mover", tenancy.Demote, tenancy.MoveOptions{MaxPause: time.Second, KeepOldFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if mv, err = m.Run(ctx, mv.ID, func(mv *tenancy.Move) {
		t.Logf("%6.2fs %s", time.Since(start).Seconds(), mv.Phase)
	}); err != nil {
		t.Fatalf("demote: %v", err)
	}
	if mv.State != tenancy.MoveRetiring {
		t.Fatalf("demotion ended %s", fmt.Sprintf("%+v", *mv))
	}
	time.Sleep(100 * time.Millisecond)
	for _, email := range wa.finish(t) {
		want[email]++
	}
	e.checkMoved(t, "mover", tenancy.Shared, want, b.ID)
	if siloDatabases(t, a.ID) != 1 {
		t.Fatal("the old silo went before its grace period ended")
	}
	// Retired: the old silo and its secrets are gone.
	if _, err := m.Retire(ctx, mv.ID, false); err != nil {
		t.Fatal(err)
	}
	if n := siloDatabases(t, a.ID); n != 0 {
		t.Fatalf("%d silo databases left", n)
	}
	if _, err := e.vault.SiloDSN(ctx, a.ID, tn.SiloRef, tenancy.AdminRole); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("the old silo's secrets: %v", err)
	}
}

func TestMoveRefusesWhatItCannotDo(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "plain", tenancy.Shared)
	e.tenant(t, "siloed", tenancy.Silo)
	m := tenancy.NewMover(e.reg)
	for name, c := range map[string]struct {
		slug string
		dir  tenancy.Direction
		o    tenancy.MoveOptions
		want problem.Code
	}{
		"unknown tenant":         {"nobody", tenancy.Promote, tenancy.MoveOptions{}, problem.NotFound},
		"promote a silo":         {"siloed", tenancy.Promote, tenancy.MoveOptions{}, problem.Conflict},
		"demote a shared":        {"plain", tenancy.Demote, tenancy.MoveOptions{}, problem.Conflict},
		"pause too short":        {"plain", tenancy.Promote, tenancy.MoveOptions{MaxPause: time.Millisecond}, problem.Invalid},
		"negative grace":         {"plain", tenancy.Promote, tenancy.MoveOptions{KeepOldFor: -time.Second}, problem.Invalid},
		"bad cluster":            {"plain", tenancy.Promote, tenancy.MoveOptions{SiloCluster: "mysql://x"}, problem.Invalid},
		"cluster for a demotion": {"siloed", tenancy.Demote, tenancy.MoveOptions{SiloCluster: "postgres://h/db"}, problem.Invalid},
		"unreachable cluster":    {"plain", tenancy.Promote, tenancy.MoveOptions{SiloCluster: "postgres://postgres@127.0.0.1:1/postgres"}, problem.Unavailable},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := m.Begin(ctx, c.slug, c.dir, c.o)
			if problem.CodeOf(err) != c.want {
				t.Fatalf("got %v (%s), want %s", err, problem.CodeOf(err), c.want)
			}
		})
	}
	// One move at a time.
	mv, err := m.Begin(ctx, "plain", tenancy.Promote, tenancy.MoveOptions{SiloCluster: pgtest.Second(t).URL("postgres")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Begin(ctx, "plain", tenancy.Promote, tenancy.MoveOptions{}); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("a second move: %v", err)
	}
	if _, err := e.reg.Suspend(ctx, "plain"); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("suspending a moving tenant: %v", err)
	}
	if _, err := m.Abort(ctx, mv.ID); err != nil {
		t.Fatal(err)
	}
	if siloDatabases(t, mv.Tenant) != 0 {
		t.Fatal("an aborted move left its silo secrets or database")
	}
}

// errKilled stands for a process killed at a point of a move.
var errKilled = errors.New("killed")

func TestMoveKilledAtEachPhaseResumesOrAborts(t *testing.T) {
	t.Parallel()
	type kill struct {
		dir   tenancy.Direction
		at    string
		abort bool
	}
	var cases []kill
	for _, at := range []string{"start", "target", "copy", "catch_up", "verify", "switch", "switch:fenced", "cleanup", "retire"} {
		cases = append(cases, kill{tenancy.Promote, at, false})
		if !tenancy.Phase(at).Flipped() {
			cases = append(cases, kill{tenancy.Promote, at, true})
		}
	}
	for _, at := range []string{"copy", "switch:moved-away"} {
		cases = append(cases, kill{tenancy.Demote, at, false}, kill{tenancy.Demote, at, true})
	}
	for _, c := range cases {
		verb := "resume"
		if c.abort {
			verb = "abort"
		}
		t.Run(fmt.Sprintf("%s/%s/%s", c.dir, c.at, verb), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			ctx := context.Background()
			placement := tenancy.Shared
			if c.dir == tenancy.Demote {
				placement = tenancy.Silo
			}
			tn := e.tenant(t, "moving", placement)
			seedUsers(t, e.data, tn, 0, 200)
			from := e.admin
			if placement == tenancy.Silo {
				from = pgtest.Pool(t, e.siloDSN(t, tn, tenancy.AdminRole), 2)
			}
			before, err := tenancy.Checksums(ctx, from, tn.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := emails(t, from, tn.ID)

			m := tenancy.NewMover(e.reg)
			m.Interrupt = func(at string) error {
				if at == c.at {
					return errKilled
				}
				return nil
			}
			o := tenancy.MoveOptions{MaxPause: time.Second}
			if c.dir == tenancy.Promote {
				o.SiloCluster = pgtest.Second(t).URL("postgres")
			}
			mv, err := m.Begin(ctx, "moving", c.dir, o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.Run(ctx, mv.ID, nil); !errors.Is(err, errKilled) {
				t.Fatalf("the run was not killed at %s: %v", c.at, err)
			}
			m.Interrupt = nil
			killed, err := m.Get(ctx, mv.ID)
			if err != nil {
				t.Fatal(err)
			}
			if killed.State != tenancy.MoveRunning && killed.State != tenancy.MoveRetiring {
				t.Fatalf("after the kill the move is %s", fmt.Sprintf("%+v", *killed))
			}

			if !c.abort {
				if mv, err = m.Run(ctx, mv.ID, nil); err != nil || mv.State != tenancy.MoveDone {
					t.Fatalf("resume: %v; %+v", err, mv)
				}
				to := tenancy.Silo
				if c.dir == tenancy.Demote {
					to = tenancy.Shared
				}
				e.checkMoved(t, "moving", to, want, tenancy.ID{})
				return
			}
			if mv, err = m.Abort(ctx, mv.ID); err != nil || mv.State != tenancy.MoveAborted {
				t.Fatalf("abort: %v; %+v", err, mv)
			}
			after, err := tenancy.Checksums(ctx, from, tn.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(before, after) {
				t.Fatalf("abort did not restore the tenant:\nbefore %v\nafter  %v", before, after)
			}
			e.checkMoved(t, "moving", placement, want, tenancy.ID{})
			wantSilos := 0
			if placement == tenancy.Silo {
				wantSilos = 1
			}
			if n := siloDatabases(t, tn.ID); n != wantSilos {
				t.Fatalf("%d silo databases after abort, want %d", n, wantSilos)
			}
			if c.dir == tenancy.Demote {
				if n := len(emails(t, e.admin, tn.ID)); n != 0 {
					t.Fatalf("abort left %d of the tenant's rows in the shared database", n)
				}
			}
		})
	}
}

func TestVerificationMismatchStopsTheMoveBeforeTheFlip(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn := e.tenant(t, "drifting", tenancy.Shared)
	seedUsers(t, e.data, tn, 0, 100)
	want := emails(t, e.admin, tn.ID)
	m := tenancy.NewMover(e.reg)
	mv := e.promote(t, m, "drifting", 0)
	// A row that reached the target some other way than the replication.
	m.Interrupt = func(at string) error {
		if at != "verify" {
			return nil
		}
		target := pgtest.Pool(t, newSilo(t, tn.ID), 1)
		_, err := target.Exec(ctx, "insert into app.users (tenant_id, email) values ($1, 'stray@drifting.test')", tn.ID.UUID())
		return err
	}
	got, err := m.Run(ctx, mv.ID, nil)
	if problem.CodeOf(err) != problem.Conflict || got.State != tenancy.MoveFailed || !strings.Contains(got.Error, "table users has 100 rows (checksum") {
		t.Fatalf("a move whose sides differ: %v; %+v", err, got)
	}
	if tn, _ := e.reg.Get(ctx, "drifting"); tn.Placement != tenancy.Shared || tn.Status != tenancy.Moving {
		t.Fatalf("the tenant is %s in %s", tn.Status, tn.Placement)
	}
	m.Interrupt = nil
	if got, err = m.Run(ctx, mv.ID, nil); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("resumed, the move still finds the difference: %v; %+v", err, got)
	}
	if got, err = m.Abort(ctx, mv.ID); err != nil || got.State != tenancy.MoveAborted {
		t.Fatalf("abort: %v; %+v", err, got)
	}
	e.checkMoved(t, "drifting", tenancy.Shared, want, tenancy.ID{})
	if n := siloDatabases(t, tn.ID); n != 0 {
		t.Fatalf("%d silo databases after abort", n)
	}
}

// newSilo returns the administrator URL of the silo a promotion of
// tenant tn is making on the silo cluster.
func newSilo(t *testing.T, tn tenancy.ID) string {
	t.Helper()
	names := siloNames(t, tn)
	if len(names) != 1 {
		t.Fatalf("tenant %s has silos %v, want the one being made", tn, names)
	}
	return pgtest.Second(t).URL(names[0])
}

func TestPromotedTenantIsDeletedForGood(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn := e.tenant(t, "leaving", tenancy.Shared)
	seedUsers(t, e.data, tn, 0, 20)
	m := tenancy.NewMover(e.reg)
	mv := e.promote(t, m, "leaving", time.Hour)
	if _, err := m.Run(ctx, mv.ID, nil); err != nil {
		t.Fatal(err)
	}
	// The shared database refuses the tenant and keeps its old rows; the
	// deletion goes through all the same, old copy and silo included.
	if err := e.reg.Delete(ctx, "leaving"); err != nil {
		t.Fatalf("delete a promoted tenant: %v", err)
	}
	if n := len(emails(t, e.admin, tn.ID)); n != 0 {
		t.Fatalf("%d shared rows left", n)
	}
	if n := siloDatabases(t, tn.ID); n != 0 {
		t.Fatalf("%d silo databases left", n)
	}
	if _, err := e.reg.Create(ctx, tenancy.CreateParams{Slug: "leaving", Name: "Again"}); err != nil {
		t.Fatalf("the slug is not free again: %v", err)
	}
	if mv, err := m.Get(ctx, mv.ID); err != nil || mv.State != tenancy.MoveDone {
		t.Fatalf("the move: %v %+v", err, mv)
	}
}

func TestDifferenceAtTheFlipKeepsTheOldCopyUntilForced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn := e.tenant(t, "odd", tenancy.Shared)
	seedUsers(t, e.data, tn, 0, 30)
	m := tenancy.NewMover(e.reg)
	mv := e.promote(t, m, "odd", 0)
	m.Interrupt = func(at string) error {
		if at != "switch:fenced" {
			return nil
		}
		_, err := pgtest.Pool(t, newSilo(t, tn.ID), 1).Exec(ctx, "insert into app.users (tenant_id, email) values ($1, 'stray@odd.test')", tn.ID.UUID())
		return err
	}
	got, err := m.Run(ctx, mv.ID, nil)
	if problem.CodeOf(err) != problem.Conflict || got.State != tenancy.MoveRetiring || !strings.Contains(got.Error, "at the flip failed: table users") {
		t.Fatalf("a difference at the flip: %v; %+v", err, got)
	}
	if n := len(emails(t, e.admin, tn.ID)); n != 30 {
		t.Fatalf("the old copy has %d users, want all 30 kept", n)
	}
	if n := e.leftovers(t, tn.ID); n != 0 {
		t.Fatalf("%d replication objects left", n)
	}
	if _, err := m.RetireDue(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Retire(ctx, mv.ID, false); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("retired without force: %v", err)
	}
	if n := len(emails(t, e.admin, tn.ID)); n != 30 {
		t.Fatalf("the old copy went (%d users left)", n)
	}
	if got, err = m.Retire(ctx, mv.ID, true); err != nil || got.State != tenancy.MoveDone {
		t.Fatalf("forced: %v; %+v", err, got)
	}
	if n := len(emails(t, e.admin, tn.ID)); n != 0 {
		t.Fatalf("%d old rows left after a forced retirement", n)
	}
}

func TestMovesAtOnceShareTheAdministratorPool(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // its administrator pool has 4 connections
	ctx := context.Background()
	m := tenancy.NewMover(e.reg)
	var moves []*tenancy.Move
	for _, slug := range []string{"first", "second", "third"} {
		tn := e.tenant(t, slug, tenancy.Shared)
		seedUsers(t, e.data, tn, 0, 50)
		moves = append(moves, e.promote(t, m, slug, 0))
	}
	runCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var g sync.WaitGroup
	errs := make([]error, len(moves))
	for i, mv := range moves {
		g.Go(func() { _, errs[i] = m.Run(runCtx, mv.ID, nil) })
	}
	g.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("move %d: %v", i, err)
		}
	}
}

func TestStoppedBeforeComparingAtTheFlipKeepsTheOldCopy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn := e.tenant(t, "unsure", tenancy.Shared)
	seedUsers(t, e.data, tn, 0, 20)
	m := tenancy.NewMover(e.reg)
	mv := e.promote(t, m, "unsure", time.Hour)
	m.Interrupt = func(at string) error {
		if at == "switch:flipped" {
			return errKilled
		}
		return nil
	}
	if _, err := m.Run(ctx, mv.ID, nil); !errors.Is(err, errKilled) {
		t.Fatalf("not stopped after the flip: %v", err)
	}
	m.Interrupt = nil
	// Resumed, it finishes the move but says the copies were not
	// compared, and keeps the old one until forced.
	got, err := m.Run(ctx, mv.ID, nil)
	if problem.CodeOf(err) != problem.Conflict || !strings.Contains(err.Error(), "stopped before it compared") || got.State != tenancy.MoveRetiring {
		t.Fatalf("resume: %v; %+v", err, got)
	}
	if _, err := m.Retire(ctx, mv.ID, false); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("retired without force: %v", err)
	}
	if got, err = m.Retire(ctx, mv.ID, true); err != nil || got.State != tenancy.MoveDone {
		t.Fatalf("forced: %v; %+v", err, got)
	}
}

func TestAMoveBeingAbortedIsNotResumed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "halfway", tenancy.Shared)
	m := tenancy.NewMover(e.reg)
	mv := e.promote(t, m, "halfway", 0)
	// An abort that stops halfway leaves the move aborting.
	if _, err := e.admin.Exec(ctx, "update control.placement_moves set state = 'aborting' where id = $1", mv.ID); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := m.Run(ctx, mv.ID, nil); problem.CodeOf(err) != problem.Conflict {
			t.Fatalf("resumed an aborting move: %v", err)
		}
		if got, _ := m.Get(ctx, mv.ID); got.State != tenancy.MoveAborting {
			t.Fatalf("the move is %s after a refused resume", got.State)
		}
	}
	if got, err := m.Abort(ctx, mv.ID); err != nil || got.State != tenancy.MoveAborted {
		t.Fatalf("abort: %v; %+v", err, got)
	}
}
