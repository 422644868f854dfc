package tenancy

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// run is one process's hold on a move: the move's lock, on a connection
// of its own, held until the run ends or the process dies.
type run struct {
	m        *Mover
	mv       *Move
	lock     *pgx.Conn // a session of its own, not a pooled one
	progress func(*Move)
	s        *sides
	errBase  *int64 // the target's replication errors when this run first looked
}

// errBusy says another process holds a move.
func errBusy(id uuid.UUID) error {
	return problem.Errorf(problem.Conflict, "move %s is being run by another process", id)
}

// moveLockKey is the advisory lock of move id, in the primary database.
func moveLockKey(id uuid.UUID) string { return "gatehouse.move." + id.String() }

// claim takes move id for this process. Returns NotFound, or Conflict if
// another process runs it.
func (m *Mover) claim(ctx context.Context, id uuid.UUID, progress func(*Move)) (*run, error) {
	mv, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, m.reg.primaryDSN)
	if err != nil {
		return nil, unavailable(err)
	}
	// A process that just died may hold the lock a moment longer, until
	// its server notices: wait that long, no longer.
	var ok bool
	for try := 0; !ok; try++ {
		if ok, err = queries.New(conn).TryLockMove(ctx, moveLockKey(id)); err != nil {
			conn.Close(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("claim move %s: %w", id, err)
		}
		if !ok && try == 20 {
			conn.Close(context.WithoutCancel(ctx))
			return nil, errBusy(id)
		}
		if !ok {
			if err := sleep(ctx, 100*time.Millisecond); err != nil {
				conn.Close(context.WithoutCancel(ctx))
				return nil, err
			}
		}
	}
	// Read again under the lock: the last holder may have moved it on.
	if mv, err = m.Get(ctx, id); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	if progress == nil {
		progress = func(*Move) {}
	}
	return &run{m: m, mv: mv, lock: conn, progress: progress}, nil
}

// release lets the move go by closing the lock's session, as a process
// that dies does.
func (r *run) release() {
	if r.s != nil {
		r.s.close()
	}
	r.lock.Close(context.Background())
}

// errInterrupted wraps what Interrupt returned.
type errInterrupted struct{ err error }

func (e errInterrupted) Error() string { return e.err.Error() }
func (e errInterrupted) Unwrap() error { return e.err }

func (r *run) interrupt(at string) error {
	if r.m.Interrupt == nil {
		return nil
	}
	if err := r.m.Interrupt(at); err != nil {
		return errInterrupted{err}
	}
	return nil
}

// save records the move as it now stands.
func (r *run) save(ctx context.Context, change func(p *queries.SaveMoveParams)) error {
	row, err := queries.New(r.m.reg.admin).SaveMove(ctx, saveParams(r.mv.row(), change))
	if err != nil {
		return fmt.Errorf("record move %s: %w", r.mv.ID, err)
	}
	mv, err := moveFromRow(row)
	if err != nil {
		return err
	}
	mv.Slug = r.mv.Slug
	r.mv = mv
	r.progress(mv)
	return nil
}

// Run drives move id from wherever it stands to its end: the flip, the
// removal of the replication, and, once KeepOldFor has passed, of the old
// copy (if it has not passed yet, Run returns with the move retiring; see
// Retire). Resuming an interrupted or failed move is running it again.
// progress, if set, is called each time the move changes.
//
// Returns NotFound for an unknown move, Conflict if another process runs
// it or it is finished, or the error that stopped it, which is recorded.
func (m *Mover) Run(ctx context.Context, id uuid.UUID, progress func(*Move)) (*Move, error) {
	r, err := m.claim(ctx, id, progress)
	if err != nil {
		return nil, err
	}
	err = r.drive(ctx)
	var died errInterrupted
	if errors.As(err, &died) {
		r.release()
		return r.mv, err
	}
	if err != nil && ctx.Err() == nil && (r.mv.State == MoveRunning || r.mv.State == MoveFailed) {
		msg := problem.MessageOf(err)
		if problem.CodeOf(err) == problem.Internal {
			msg = err.Error()
		}
		if len(msg) > 2000 {
			msg = msg[:2000]
		}
		// Recorded with a context of its own: the run's may be the one
		// that failed.
		saveCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_ = r.save(saveCtx, func(p *queries.SaveMoveParams) { p.State = string(MoveFailed); p.Error = &msg })
		cancel()
	}
	r.release()
	return r.mv, err
}

func (r *run) drive(ctx context.Context) error {
	switch r.mv.State {
	case MoveDone, MoveAborted:
		return problem.Errorf(problem.Conflict, "move %s is %s", r.mv.ID, r.mv.State)
	case MoveAborting:
		return problem.Errorf(problem.Conflict, "move %s was being aborted; finish that with abort", r.mv.ID)
	case MoveFailed:
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.State = string(MoveRunning); p.Error = nil }); err != nil {
			return err
		}
	}
	steps := map[Phase]func(context.Context) error{
		PhaseStart: r.start, PhaseTarget: r.target, PhaseCopy: r.copy, PhaseCatchUp: r.catchUp,
		PhaseVerify: r.verify, PhaseSwitch: r.switchOver, PhaseCleanup: r.cleanup,
		PhaseRetire: func(ctx context.Context) error { return r.retire(ctx, false) },
	}
	for r.mv.Phase != PhaseDone {
		if err := r.interrupt(string(r.mv.Phase)); err != nil {
			return err
		}
		at := r.mv.Phase
		if err := steps[at](ctx); err != nil {
			return err
		}
		if r.mv.Phase == at { // retiring, not yet due
			break
		}
	}
	if table, state, ok := r.mv.unsettled(); ok && r.mv.State == MoveRetiring {
		return errUnsettled(r.mv, table, state)
	}
	return nil
}

// next records that the move goes on to the phase after its current one.
func (r *run) next(ctx context.Context, change func(p *queries.SaveMoveParams)) error {
	i := slices.Index(phaseOrder, r.mv.Phase)
	return r.save(ctx, func(p *queries.SaveMoveParams) {
		p.Phase = string(phaseOrder[i+1])
		if change != nil {
			change(p)
		}
	})
}

// sides are the two databases of a move, as an administrator, and the
// replication between them. Each run has pools of its own for them, so
// that moves running at once never wait on each other's connections.
type sides struct {
	rep            *Replication
	source, target *pgxpool.Pool
	close          func()
}

// open connects to both sides of a move of tenant t. sourceRef is the
// silo a demotion leaves; targetRef the silo a promotion goes to, or ""
// with cluster naming where it will be made (its database need not
// exist: the target is then the cluster's postgres database, enough to
// check it).
func (m *Mover) open(ctx context.Context, t ID, dir Direction, sourceRef, targetRef, cluster string) (*sides, error) {
	s := &sides{close: func() {}}
	var closers []func()
	s.close = func() {
		for _, c := range closers {
			c()
		}
	}
	pool := func(dsn string) (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, errors.New("a silo's connection settings are malformed") // the parse error would quote them
		}
		cfg.MaxConns = 6
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			return nil, err
		}
		closers = append(closers, p.Close)
		return p, nil
	}
	var sourceDSN string
	var err error
	switch dir {
	case Promote:
		sourceDSN = m.reg.primaryDSN
		targetDSN := cluster
		if targetRef != "" {
			if targetDSN, err = m.reg.secrets.SiloDSN(ctx, t, targetRef, AdminRole); err != nil {
				return nil, err
			}
		}
		if s.source, err = pool(sourceDSN); err == nil {
			s.target, err = pool(targetDSN)
		}
	case Demote:
		if sourceDSN, err = m.reg.secrets.SiloDSN(ctx, t, sourceRef, AdminRole); err != nil {
			return nil, err
		}
		if s.source, err = pool(sourceDSN); err == nil {
			s.target, err = pool(m.reg.primaryDSN)
		}
	}
	if err != nil {
		s.close()
		return nil, err
	}
	conn, err := withoutPassword(sourceDSN)
	if err != nil {
		s.close()
		return nil, err
	}
	for _, p := range []*pgxpool.Pool{s.source, s.target} {
		if err := p.Ping(ctx); err != nil {
			s.close()
			return nil, problem.Wrap(problem.Unavailable, err, "a database of the move is unreachable: "+errText(err))
		}
	}
	s.rep = &Replication{Tenant: t, Source: s.source, Target: s.target, SourceConn: conn}
	return s, nil
}

// errText is err's message without connection details a driver may add.
func errText(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return "cannot connect"
	}
	return "cannot connect"
}

// withoutPassword is dsn as a subscription may keep it: Postgres stores a
// subscription's connection string in its catalog in plain text, so the
// target's server must find the password elsewhere (.pgpass, a client
// certificate, or trust on a private network).
func withoutPassword(dsn string) (string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", errors.New("a database's connection settings are malformed")
	}
	if u.User != nil {
		u.User = url.User(u.User.Username())
	}
	q := u.Query()
	if q.Has("password") || q.Has("sslpassword") {
		q.Del("password")
		q.Del("sslpassword")
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// sides opens the move's two databases once per run.
func (r *run) sides(ctx context.Context) (*sides, error) {
	if r.s != nil {
		return r.s, nil
	}
	s, err := r.m.open(ctx, r.mv.Tenant, r.mv.Direction, r.mv.sourceRef, r.mv.targetRef, "")
	if err != nil {
		return nil, err
	}
	s.rep.SubscriptionOID = r.mv.subscription
	r.s = s
	return s, nil
}

func (r *run) start(ctx context.Context) error { return r.next(ctx, nil) }

// target makes the target ready for the tenant's rows: a promotion's silo
// is made and migrated; a demotion clears the shared database of any rows
// the tenant left there (an aborted move's).
func (r *run) target(ctx context.Context) error {
	switch r.mv.Direction {
	case Promote:
		dsn, err := r.m.reg.secrets.SiloDSN(ctx, r.mv.Tenant, r.mv.targetRef, AdminRole)
		if err != nil {
			return err
		}
		if err := r.m.reg.ensureSiloDatabase(ctx, dsn, "silo "+r.mv.Slug); err != nil {
			return err
		}
	case Demote:
		s, err := r.sides(ctx)
		if err != nil {
			return err
		}
		if err := adminTenantTx(ctx, s.target, r.mv.Tenant, func(tx pgx.Tx) error { return deleteTenantRows(ctx, tx, r.mv.Tenant) }); err != nil {
			return err
		}
	}
	return r.next(ctx, nil)
}

// copy starts the replication and waits for the copy of existing rows.
func (r *run) copy(ctx context.Context) error {
	s, err := r.sides(ctx)
	if err != nil {
		return err
	}
	if err := s.rep.Start(ctx); err != nil {
		return err
	}
	tables := r.mv.Tables
	if len(tables) == 0 {
		names, err := AppTables(ctx, s.source)
		if err != nil {
			return err
		}
		counts, err := CountRows(ctx, s.source, r.mv.Tenant, names)
		if err != nil {
			return err
		}
		tables = make(map[string]TableProgress, len(names))
		for n, c := range counts {
			tables[n] = TableProgress{Rows: c, State: "waiting"}
		}
	}
	oid := int64(s.rep.SubscriptionOID)
	if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.SubscriptionOid = &oid; p.Tables = tablesJSON(tables) }); err != nil {
		return err
	}
	for {
		copies, err := s.rep.CopyProgress(ctx)
		if err != nil {
			return err
		}
		if err := r.checkErrors(ctx, s); err != nil {
			return err
		}
		done := len(copies) > 0
		for name, c := range copies {
			tp := tables[name]
			tp.State, tp.Copied = c.State, c.Rows
			if c.State == "copied" {
				tp.Copied = max(tp.Rows, c.Rows)
			}
			done = done && c.Ready
			tables[name] = tp
		}
		if done {
			return r.next(ctx, func(p *queries.SaveMoveParams) { p.Tables = tablesJSON(tables); p.CopiedAt = ptr(time.Now()) })
		}
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.Tables = tablesJSON(tables) }); err != nil {
			return err
		}
		if err := sleep(ctx, pollEvery); err != nil {
			return err
		}
	}
}

// maxReplicationErrors is how many failures of the target's replication
// workers (they retry) a move takes before it stops and says so, rather
// than wait forever for a copy that cannot succeed.
const maxReplicationErrors = 5

// checkErrors fails the move once the target's replication has failed
// maxReplicationErrors times during this run (the counts are the
// subscription's whole life's: a resumed run starts from zero).
func (r *run) checkErrors(ctx context.Context, s *sides) error {
	n, err := s.rep.Errors(ctx)
	if err != nil {
		return err
	}
	if r.errBase == nil {
		r.errBase = &n
	}
	if n -= *r.errBase; n >= maxReplicationErrors {
		return problem.Errorf(problem.Conflict, "the target failed %d times to copy or apply the tenant's rows; see its server's log, then resume or abort the move", n)
	}
	return nil
}

// catchUp waits until the target has nearly caught up with the source:
// until a mark written on the source shows on the target within a
// quarter of MaxPause, so that the fence, which waits for the same, is
// short. (The slot's byte lag is shown, but counts other tenants' and
// other databases' WAL the target never needs.)
func (r *run) catchUp(ctx context.Context) error {
	s, err := r.sides(ctx)
	if err != nil {
		return err
	}
	for {
		n, err := r.nextMark(ctx)
		if err != nil {
			return err
		}
		if err := s.rep.Mark(ctx, r.mv.ID, n); err != nil {
			return err
		}
		written, shown := time.Now(), time.Now()
		for {
			ok, err := s.rep.Arrived(ctx, r.mv.ID, n)
			if err != nil {
				return err
			}
			if ok {
				break
			}
			if err := sleep(ctx, 2*time.Millisecond); err != nil {
				return err
			}
			if time.Since(shown) > pollEvery {
				// Still behind: show how far, and keep waiting.
				if err := r.checkErrors(ctx, s); err != nil {
					return err
				}
				lag, err := s.rep.Lag(ctx)
				if err != nil {
					return err
				}
				if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.LagBytes = &lag }); err != nil {
					return err
				}
				shown = time.Now()
			}
		}
		took := time.Since(written)
		lag, err := s.rep.Lag(ctx)
		if err != nil {
			return err
		}
		if took < r.mv.MaxPause/4 {
			return r.next(ctx, func(p *queries.SaveMoveParams) { p.LagBytes = &lag })
		}
		if err := r.save(ctx, func(p *queries.SaveMoveParams) { p.LagBytes = &lag }); err != nil {
			return err
		}
	}
}

// nextMark records and returns the number of the move's next mark.
func (r *run) nextMark(ctx context.Context) (int, error) {
	n := r.mv.Marks + 1
	err := r.save(ctx, func(p *queries.SaveMoveParams) { p.Marks = int32(n) })
	return n, err
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
