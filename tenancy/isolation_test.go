package tenancy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// fixtures insert one row into an app table for a tenant. Every table of
// schema app needs one: TestIsolation fails for a table without, so a new
// table cannot skip the suite. Both tenants get identical values apart from
// tenant_id, which also shows that unique constraints do not reveal
// another tenant's rows.
var fixtures = map[string]func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error{
	"oidc_apps": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.oidc_apps (tenant_id, id, client_id, name, kind, token_endpoint_auth_method, redirect_uris, grant_types)
			values ($1, '00000000-0000-4000-8000-000000000006', 'sameclientidsameclientid00', 'Same app', 'web', 'client_secret_basic',
			'{https://same.example.com/cb}', '{authorization_code}')`, tenant)
		return err
	},
	"oidc_app_secrets": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.oidc_app_secrets (tenant_id, app_id, id, secret_hash, created_at)
			values ($1, '00000000-0000-4000-8000-000000000006', '00000000-0000-4000-8000-000000000007', sha256('same secret'), now())`, tenant)
		return err
	},
	"branding": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.branding (tenant_id, display_name, primary_color, logo, logo_type)
			values ($1, 'Same Name', '#123456', '\x89504e47', 'image/png')`, tenant)
		return err
	},
	"oidc_client_assertions": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.oidc_client_assertions (tenant_id, client_id, jti, expires_at)
			values ($1, 'sameclientidsameclientid00', 'same-jti', now() + interval '1 minute')`, tenant)
		return err
	},
	"oidc_auth_requests": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.oidc_auth_requests (tenant_id, id, client_id, redirect_uri, scopes, user_id, auth_time, code_hash, expires_at)
			values ($1, '00000000-0000-4000-8000-000000000008', 'sameclientidsameclientid00', 'https://same.example.com/cb', '{openid}',
			'00000000-0000-4000-8000-000000000001', now(), sha256('same code'), now() + interval '1 minute')`, tenant)
		return err
	},
	"oidc_consents": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.oidc_consents (tenant_id, user_id, client_id, scopes)
			values ($1, '00000000-0000-4000-8000-000000000001', 'sameclientidsameclientid00', '{openid}')`, tenant)
		return err
	},
	"users": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.users (tenant_id, id, email, display_name)
			values ($1, '00000000-0000-4000-8000-000000000001', 'same@example.com', 'Same Name')`, tenant)
		return err
	},
	"sessions": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.sessions (tenant_id, id, user_id, expires_at)
			values ($1, '00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', now() + interval '1 day')`, tenant)
		return err
	},
	"refresh_tokens": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.refresh_tokens (tenant_id, token_hash, session_id, idle_expires_at)
			values ($1, sha256('same token'), '00000000-0000-4000-8000-000000000002', now() + interval '1 day')`, tenant)
		return err
	},
	"signing_keys": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.signing_keys (tenant_id, kid, public_key, private_key_sealed)
			values ($1, 'same-kid-1', sha256('public'), '\x01')`, tenant)
		return err
	},
	"audit_events": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.audit_events (tenant_id, seq, at, action, outcome, prev_hash, hash)
			values ($1, 1, now(), 'login', 'success', sha256(''), sha256('same event'))`, tenant)
		return err
	},
	"rate_limits": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.rate_limits (tenant_id, key, window_start, hits) values ($1, 'login/tenant', '2026-01-01', 1)`, tenant)
		return err
	},
	"email_tokens": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.email_tokens (tenant_id, token_hash, user_id, purpose, email, expires_at)
			values ($1, sha256('same mailed token'), '00000000-0000-4000-8000-000000000001', 'reset_password', 'same@example.com', now() + interval '1 hour')`, tenant)
		return err
	},
	"mail_outbox": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.mail_outbox (tenant_id, id, kind, payload_sealed)
			values ($1, '00000000-0000-4000-8000-000000000003', 'reset_password', '\x01')`, tenant)
		return err
	},
	"groups": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.groups (tenant_id, id, name) values ($1, '00000000-0000-4000-8000-000000000004', 'Same group')`, tenant)
		return err
	},
	"group_members": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.group_members (tenant_id, group_id, member_type, member_id)
			values ($1, '00000000-0000-4000-8000-000000000004', 'user', '00000000-0000-4000-8000-000000000001')`, tenant)
		return err
	},
	"roles": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.roles (tenant_id, id, name, permissions)
			values ($1, '00000000-0000-4000-8000-000000000005', 'same-role', '{view_audit}')`, tenant)
		return err
	},
	"role_assignments": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.role_assignments (tenant_id, role_id, subject_type, subject_id)
			values ($1, '00000000-0000-4000-8000-000000000005', 'user', '00000000-0000-4000-8000-000000000001')`, tenant)
		return err
	},
	"rebac_outbox": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.rebac_outbox (tenant_id, op, resource_type, resource_id, relation, subject_type, subject_id)
			values ($1, 'touch', 'tenant', 'tenant', 'admin', 'user', 'same-user')`, tenant)
		return err
	},
	"rebac_state": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.rebac_state (tenant_id, zedtoken) values ($1, 'same-token')`, tenant)
		return err
	},
	"move_marks": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.move_marks (tenant_id, move_id, n) values ($1, '00000000-0000-0000-0000-000000000001', 1)`, tenant)
		return err
	},
	"audit_heads": func(ctx context.Context, tx queries.DBTX, tenant uuid.UUID) error {
		_, err := tx.Exec(ctx, `insert into app.audit_heads (tenant_id, seq, hash) values ($1, 1, sha256('same event'))`, tenant)
		return err
	},
}

// refused lists, per table, the statements the app role may not run at
// all (append-only data): for them the suite expects a permission error
// where it would otherwise expect zero rows touched.
var refused = map[string]map[string]bool{
	"audit_events": {"update": true, "delete": true},
	"audit_heads":  {"delete": true},
}

func TestIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("shared", func(t *testing.T) {
		t.Parallel()
		a := e.tenant(t, "tenant-a", tenancy.Shared)
		b := e.tenant(t, "tenant-b", tenancy.Shared)
		isolationSuite(t, e.data, e.app, a, b)
	})
	t.Run("silo", func(t *testing.T) {
		t.Parallel()
		a := e.tenant(t, "silo-a", tenancy.Silo)
		// A silo normally holds one tenant. Put a second tenant's rows into
		// it (as a botched copy might) and check RLS still keeps them apart.
		b := &tenancy.Tenant{ID: tenancy.ID(uuid.New()), Slug: "silo-b", Status: tenancy.Active, Placement: tenancy.Silo}
		ref, err := e.vault.StoreSilo(context.Background(), b.ID, tenancy.SiloDSNs{
			Admin: e.siloDSN(t, a, tenancy.AdminRole), App: e.siloDSN(t, a, tenancy.AppRole),
		})
		if err != nil {
			t.Fatal(err)
		}
		b.SiloRef = ref
		isolationSuite(t, e.data, pgtest.Pool(t, e.siloDSN(t, a, tenancy.AppRole), 2), a, b)
	})
}

// isolationSuite checks, for every table of schema app, that gatehouse_app
// sees, changes and learns nothing across tenants. raw is a gatehouse_app
// pool on the same database as a's data, used without any tenant set.
func isolationSuite(t *testing.T, db *tenancy.DB, raw queries.DBTX, a, b *tenancy.Tenant) {
	ctx := context.Background()
	var tables []string
	err := db.RawTx(ctx, a, func(tx queries.DBTX) (err error) {
		tables, err = tenancy.AppTables(ctx, tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) == 0 {
		t.Fatal("no app tables visible")
	}
	for _, table := range tables {
		if fixtures[table] == nil {
			t.Errorf("table app.%s has no fixture: add one to fixtures so the isolation suite covers it", table)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// Seed both tenants, each through its own scoped transaction.
	for _, tn := range []*tenancy.Tenant{a, b} {
		err := db.RawTx(ctx, tn, func(tx queries.DBTX) error {
			for _, table := range tables {
				if err := fixtures[table](ctx, tx, tn.ID.UUID()); err != nil {
					return fmt.Errorf("seed %s for %s: %w", table, tn.Slug, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	for _, table := range tables {
		ident := pgx.Identifier{"app", table}.Sanitize()
		t.Run(table, func(t *testing.T) {
			t.Run("no tenant set: reads nothing, writes fail", func(t *testing.T) {
				if n := count(t, raw, "select count(*) from "+ident); n != 0 {
					t.Errorf("without a tenant, count = %d, want 0", n)
				}
				// What a pooled connection reads after an earlier scoped
				// transaction: the setting exists but is empty.
				err := pgx.BeginFunc(ctx, raw.(interface {
					Begin(context.Context) (pgx.Tx, error)
				}), func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "select set_config('gatehouse.tenant_id', '', true)"); err != nil {
						return err
					}
					if n := count(t, tx, "select count(*) from "+ident); n != 0 {
						t.Errorf("with an empty tenant setting, count = %d, want 0", n)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := raw.Exec(ctx, "update "+ident+" set tenant_id = tenant_id"); err != nil && !refused[table]["update"] {
					t.Fatal(err)
				}
				wantRLSError(t, fixtures[table](ctx, raw, a.ID.UUID()), "insert without a tenant")
			})

			err := db.RawTx(ctx, a, func(tx queries.DBTX) error {
				if n := count(t, tx, "select count(*) from "+ident); n != 1 {
					t.Errorf("tenant A counts %d rows, want its own 1", n)
				}
				if n := count(t, tx, "select count(*) from "+ident+" where tenant_id = $1", b.ID.UUID()); n != 0 {
					t.Errorf("tenant A reads %d of B's rows", n)
				}
				if n := count(t, tx, "select count(*) from "+ident+" where tenant_id <> $1", a.ID.UUID()); n != 0 {
					t.Errorf("tenant A reads %d rows of other tenants", n)
				}
				// Refused statements are checked below, each in a
				// transaction of its own (a failure aborts the rest).
				if !refused[table]["update"] {
					tag, err := tx.Exec(ctx, "update "+ident+" set tenant_id = tenant_id where tenant_id = $1", b.ID.UUID())
					if err != nil || tag.RowsAffected() != 0 {
						t.Errorf("tenant A updated B's rows: %v rows, err %v", tag.RowsAffected(), err)
					}
				}
				if !refused[table]["delete"] {
					tag, err := tx.Exec(ctx, "delete from "+ident+" where tenant_id = $1", b.ID.UUID())
					if err != nil || tag.RowsAffected() != 0 {
						t.Errorf("tenant A deleted B's rows: %v rows, err %v", tag.RowsAffected(), err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Each of these must fail, and in its own transaction (a failed
			// statement aborts the rest).
			err = db.RawTx(ctx, a, func(tx queries.DBTX) error { return fixtures[table](ctx, tx, b.ID.UUID()) })
			wantRLSError(t, err, "tenant A inserting a row with B's tenant_id")
			err = db.RawTx(ctx, a, func(tx queries.DBTX) error {
				_, err := tx.Exec(ctx, "update "+ident+" set tenant_id = $1", b.ID.UUID())
				return err
			})
			wantRLSError(t, err, "tenant A handing its row to B")

			for op, stmt := range map[string]string{"update": "update " + ident + " set tenant_id = tenant_id", "delete": "delete from " + ident} {
				if refused[table][op] {
					err := db.RawTx(ctx, a, func(tx queries.DBTX) error { _, err := tx.Exec(ctx, stmt); return err })
					wantRLSError(t, err, "tenant A running a refused "+op+" on "+table)
				}
			}

			// B's rows are all still there, untouched.
			err = db.RawTx(ctx, b, func(tx queries.DBTX) error {
				if n := count(t, tx, "select count(*) from "+ident+" where tenant_id = $1", b.ID.UUID()); n != 1 {
					t.Errorf("tenant B has %d rows after A's attempts, want 1", n)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func count(t *testing.T, q queries.DBTX, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := q.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// wantRLSError asserts err is Postgres refusing a row by its security policy.
func wantRLSError(t *testing.T, err error, what string) {
	t.Helper()
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || pgErr.Code != "42501" {
		t.Errorf("%s: err = %v, want a row level security violation (42501)", what, err)
	}
}

// TestTxPoolReuseKeepsTenantsApart runs many concurrent transactions that
// alternate tenants on a pool far smaller than the number of goroutines, so
// every connection serves both tenants over and over.
func TestTxPoolReuseKeepsTenantsApart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "pool-a", tenancy.Shared)
	b := e.tenant(t, "pool-b", tenancy.Shared)
	small := pgtest.Pool(t, e.db.AppURL, 3)
	db := tenancy.NewDB(small, nil)
	seed := map[tenancy.ID]int{a.ID: 7, b.ID: 3}
	for _, tn := range []*tenancy.Tenant{a, b} {
		err := db.Tx(ctx, tn, func(q *queries.Queries) error {
			for i := range seed[tn.ID] {
				if _, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: fmt.Sprintf("u%d@%s.test", i, tn.Slug)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 24 {
		wg.Go(func() {
			for i := range 40 {
				tn := a
				if (g+i)%2 == 1 {
					tn = b
				}
				err := db.RawTx(ctx, tn, func(tx queries.DBTX) error {
					// No tenant predicate: only RLS limits what is seen.
					rows, err := tx.Query(ctx, "select tenant_id from app.users")
					if err != nil {
						return err
					}
					ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
					if err != nil {
						return err
					}
					if len(ids) != seed[tn.ID] {
						return fmt.Errorf("%s saw %d rows, want %d", tn.Slug, len(ids), seed[tn.ID])
					}
					if i := slices.IndexFunc(ids, func(u uuid.UUID) bool { return u != tn.ID.UUID() }); i >= 0 {
						return fmt.Errorf("%s saw a row of tenant %s", tn.Slug, ids[i])
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// After all that, a connection used outside a transaction has no tenant.
	for range 3 {
		if n := count(t, small, "select count(*) from app.users"); n != 0 {
			t.Fatalf("a pooled connection outside Tx sees %d rows", n)
		}
	}
}

func TestTxRollsBackOnErrorAndPanic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "rollback", tenancy.Shared)
	create := func(q *queries.Queries, email string) error {
		_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: a.ID.UUID(), Email: email})
		return err
	}
	boom := errors.New("boom")
	if err := e.data.Tx(ctx, a, func(q *queries.Queries) error {
		if err := create(q, "kept-not@example.com"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Tx returned %v, want fn's error", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Tx swallowed fn's panic")
			}
		}()
		_ = e.data.Tx(ctx, a, func(q *queries.Queries) error {
			_ = create(q, "panicked@example.com")
			panic("boom")
		})
	}()
	// fn ignores a failed statement: the commit must not pretend success.
	err := e.data.Tx(ctx, a, func(q *queries.Queries) error {
		_ = create(q, "dup@example.com")
		_ = create(q, "dup@example.com") // unique violation aborts the transaction
		return nil
	})
	if !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatalf("commit after a failed statement = %v, want ErrTxCommitRollback", err)
	}
	if n := count(t, e.admin, "select count(*) from app.users where tenant_id = $1", a.ID.UUID()); n != 0 {
		t.Fatalf("%d users survived rolled-back transactions", n)
	}
	if err := e.data.Tx(ctx, nil, func(*queries.Queries) error { return nil }); err == nil {
		t.Fatal("Tx without a tenant succeeded")
	}
}

// TestPolicyUsesTenantIndex checks the plan of a query limited by RLS alone
// uses the (tenant_id, ...) index: the policy must stay inlinable.
func TestPolicyUsesTenantIndex(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "plan-a", tenancy.Shared)
	b := e.tenant(t, "plan-b", tenancy.Shared)
	for _, tn := range []*tenancy.Tenant{a, b} {
		e.db.Cluster.Exec(t, e.db.Name, fmt.Sprintf(`insert into app.users (tenant_id, email)
			select '%s', 'user' || i || '@example.com' from generate_series(1, 3000) i`, tn.ID))
	}
	e.db.Cluster.Exec(t, e.db.Name, "analyze app.users")
	var plan []string
	err := e.data.RawTx(ctx, a, func(tx queries.DBTX) error {
		rows, err := tx.Query(ctx, "explain select * from app.users where email = 'user42@example.com'")
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(plan, "\n")
	if !strings.Contains(text, "Index Cond: ((tenant_id = (NULLIF(current_setting('gatehouse.tenant_id'") {
		t.Fatalf("plan does not use the tenant index:\n%s", text)
	}
}

func TestOnceRunsOneScopedStatement(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	a := e.tenant(t, "once-a", tenancy.Shared)
	b := e.tenant(t, "once-b", tenancy.Shared)
	small := pgtest.Pool(t, e.db.AppURL, 1) // every call on the same connection
	db := tenancy.NewDB(small, nil)
	var theirs queries.AppUser
	err := db.Tx(ctx, b, func(q *queries.Queries) (err error) {
		theirs, err = q.CreateUser(ctx, queries.CreateUserParams{TenantID: b.ID.UUID(), Email: "u@once-b.test"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tenant *tenancy.Tenant
		want   error
	}{{a, pgx.ErrNoRows}, {b, nil}, {a, pgx.ErrNoRows}} {
		// Even naming the row's tenant, a statement sees only its own.
		err := db.Once(ctx, c.tenant, func(q *queries.Queries) error {
			_, err := q.GetUser(ctx, queries.GetUserParams{TenantID: b.ID.UUID(), ID: theirs.ID})
			return err
		})
		if !errors.Is(err, c.want) && err != c.want {
			t.Fatalf("%s reading b's user: %v, want %v", c.tenant.Slug, err, c.want)
		}
		// The setting ended with the statement's implicit transaction.
		if n := count(t, small, "select count(*) from app.users"); n != 0 {
			t.Fatalf("the connection after Once sees %d rows", n)
		}
	}
	err = db.Once(ctx, b, func(q *queries.Queries) error {
		if _, err := q.CountUsers(ctx, b.ID.UUID()); err != nil {
			return err
		}
		_, err := q.CountUsers(ctx, b.ID.UUID())
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "one statement") {
		t.Fatalf("a second statement in Once: %v", err)
	}
}
