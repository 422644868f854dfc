package tenancy_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// BenchmarkPromoteUnderLoad promotes tenants of 10k and 100k users (and 1M
// with GATEHOUSE_BENCH_MOVE_1M=1: seeding it alone takes minutes), each
// with a session, while a writer keeps adding users to the tenant, and
// reports:
//   - pause-ms: the longest the fence held the tenant's writes (the move's
//     own measure), and write-max-ms: the slowest write the writer saw;
//   - move-s: from Begin to the flip, and copy-s, the baseline: the same
//     rows copied offline with COPY, source to silo cluster, which is the
//     downtime of a move that stops the tenant; x-baseline is their ratio.
func BenchmarkPromoteUnderLoad(b *testing.B) {
	sizes := []int{10_000, 100_000}
	if os.Getenv("GATEHOUSE_BENCH_MOVE_1M") != "" {
		sizes = append(sizes, 1_000_000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			var pause, writeMax, move, copied time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := newEnv(b)
				ctx := context.Background()
				tn := e.tenant(b, fmt.Sprintf("big%d", i), tenancy.Shared)
				seedMany(b, e.admin, tn.ID, n)
				target := e.tenant(b, fmt.Sprintf("scratch%d", i), tenancy.Silo)
				copied += offlineCopy(b, e.admin, pgtest.Pool(b, e.siloDSN(b, target, tenancy.AdminRole), 2), tn.ID)
				e.data.Relocated = tenancy.NewResolver(e.app, "localhost", quietLog()).ByID

				var stop atomic.Bool
				var slowest atomic.Int64
				var wg sync.WaitGroup
				wg.Go(func() {
					for j := 0; !stop.Load(); j++ {
						start := time.Now()
						err := e.data.Tx(ctx, tn, func(q *queries.Queries) error {
							_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: fmt.Sprintf("w%d@load.test", j)})
							return err
						})
						if err == nil {
							if d := int64(time.Since(start)); d > slowest.Load() {
								slowest.Store(d)
							}
						}
						time.Sleep(time.Millisecond)
					}
				})
				m := tenancy.NewMover(e.reg)
				b.StartTimer()
				mv, err := m.Begin(ctx, tn.Slug, tenancy.Promote, tenancy.MoveOptions{SiloCluster: pgtest.Second(b).URL("postgres"), MaxPause: time.Second})
				if err == nil {
					mv, err = m.Run(ctx, mv.ID, nil)
				}
				b.StopTimer()
				stop.Store(true)
				wg.Wait()
				if err != nil {
					b.Fatal(err)
				}
				pause = max(pause, mv.Pause)
				writeMax = max(writeMax, time.Duration(slowest.Load()))
				move += mv.FlippedAt.Sub(mv.StartedAt)
			}
			b.ReportMetric(float64(pause)/1e6, "pause-ms")
			b.ReportMetric(float64(writeMax)/1e6, "write-max-ms")
			b.ReportMetric(move.Seconds()/float64(b.N), "move-s")
			b.ReportMetric(copied.Seconds()/float64(b.N), "copy-s")
			b.ReportMetric(float64(move)/float64(copied), "x-baseline")
		})
	}
}

// seedMany writes n users of tenant id, each with a session, as an
// administrator.
func seedMany(b *testing.B, admin *pgxpool.Pool, id tenancy.ID, n int) {
	b.Helper()
	ctx := context.Background()
	for _, sql := range []string{
		`insert into app.users (tenant_id, email) select $1, 'u' || g || '@big.test' from generate_series(1, $2::int) g`,
		`insert into app.sessions (tenant_id, user_id, expires_at) select tenant_id, id, now() + interval '1 day' from app.users where tenant_id = $1 and $2::int > 0`,
		`analyze app.users`,
	} {
		args := []any{id.UUID(), n}
		if sql == `analyze app.users` {
			args = nil
		}
		if _, err := admin.Exec(ctx, sql, args...); err != nil {
			b.Fatal(err)
		}
	}
}

// offlineCopy copies tenant id's users and sessions from source to target
// with COPY, as a move with downtime would, and returns how long it took.
func offlineCopy(b *testing.B, source, target *pgxpool.Pool, id tenancy.ID) time.Duration {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	for _, table := range []string{"users", "sessions"} {
		src, err := source.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		dst, err := target.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		r, w := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			_, err := src.Conn().PgConn().CopyTo(ctx, w, fmt.Sprintf("copy (select * from app.%s where tenant_id = '%s') to stdout", table, id))
			w.CloseWithError(err)
			errc <- err
		}()
		_, err = dst.Conn().PgConn().CopyFrom(ctx, r, "copy app."+table+" from stdin")
		if cerr := <-errc; err == nil {
			err = cerr
		}
		src.Release()
		dst.Release()
		if err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}
