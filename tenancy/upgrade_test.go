package tenancy_test

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/migrations"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// TestUpgradeQueuesDisabledAndAdminAccountsForSpiceDB: accounts disabled
// or made admin before SpiceDB knew of disabled accounts reach the
// relationship outbox when the tenant migrations run, although row level
// security is forced on the owner the migrations run as.
func TestUpgradeQueuesDisabledAndAdminAccountsForSpiceDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPrimary(t)
	p := pgtest.Migrations(t, db.AdminURL, migrations.Tenant(), "gatehouse.tenant_migrations")
	if _, err := p.DownTo(ctx, 12); err != nil {
		t.Fatal(err)
	}
	// Two tenants' accounts as they stood.
	admin := pgtest.Pool(t, db.AdminURL, 1) // a superuser: sees every tenant's rows
	tenants := []uuid.UUID{uuid.New(), uuid.New()}
	for _, tn := range tenants {
		if _, err := admin.Exec(ctx, `insert into app.users (tenant_id, email, role, status) values
			($1, 'off@upgrade.test', 'member', 'disabled'), ($1, 'boss@upgrade.test', 'admin', 'active'),
			($1, 'plain@upgrade.test', 'member', 'active')`, tn); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tn := range tenants {
		rows, err := admin.Query(ctx, `select o.relation || ':' || u.email from app.rebac_outbox o
			join app.users u on u.tenant_id = o.tenant_id and u.id::text = o.subject_id
			where o.tenant_id = $1 and o.delivered_at is null order by 1`, tn)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] != "admin:boss@upgrade.test" || got[1] != "disabled:off@upgrade.test" {
			t.Fatalf("tenant %s queued %v; want its admin and its disabled account", tn, got)
		}
	}
	var forced bool
	admin.QueryRow(ctx, "select relforcerowsecurity from pg_class where oid = 'app.users'::regclass").Scan(&forced)
	if !forced {
		t.Fatal("row level security is no longer forced on app.users")
	}
}
