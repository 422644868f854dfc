package tenancy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// tenantPolicy is the one policy expression every app table must carry, as
// Postgres prints it back.
const tenantPolicy = `(tenant_id = (NULLIF(current_setting('gatehouse.tenant_id'::text, true), ''::text))::uuid)`

// catalogViolations lists every way schema app (and the roles around it)
// breaks DESIGN.md's isolation rules. Each check reads the catalog, so a
// table added later is checked without anyone remembering to.
func catalogViolations(ctx context.Context, db *pgxpool.Pool) ([]string, error) {
	checks := []struct{ what, sql string }{
		{"table without tenant_id uuid not null", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and c.relkind in ('r','p') and not exists (
				select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id'
				and a.atttypid = 'uuid'::regtype and a.attnotnull and not a.attisdropped)`},
		{"table whose primary key does not start with tenant_id", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and c.relkind in ('r','p') and not exists (
				select 1 from pg_constraint k join pg_attribute a on a.attrelid = c.oid and a.attnum = k.conkey[1]
				where k.conrelid = c.oid and k.contype = 'p' and a.attname = 'tenant_id')`},
		{"foreign key or unique constraint not led by tenant_id on both sides", `
			select c.relname || '.' || k.conname from pg_constraint k
			join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and k.contype in ('f','u','p','x') and (
				(select attname from pg_attribute where attrelid = k.conrelid and attnum = k.conkey[1]) <> 'tenant_id'
				or (k.contype = 'f' and (select attname from pg_attribute where attrelid = k.confrelid and attnum = k.confkey[1]) <> 'tenant_id'))`},
		{"unique index not led by tenant_id", `
			select i.relname from pg_index x join pg_class i on i.oid = x.indexrelid
			join pg_class c on c.oid = x.indrelid join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and x.indisunique and
				(x.indkey[0] = 0 or (select attname from pg_attribute where attrelid = c.oid and attnum = x.indkey[0]) <> 'tenant_id')`},
		{"foreign key reaching outside schema app", `
			select c.relname || '.' || k.conname from pg_constraint k
			join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
			join pg_class p on p.oid = k.confrelid join pg_namespace pn on pn.oid = p.relnamespace
			where k.contype = 'f' and (n.nspname = 'app') <> (pn.nspname = 'app')`},
		{"table without ENABLE and FORCE ROW LEVEL SECURITY", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and c.relkind in ('r','p') and not (c.relrowsecurity and c.relforcerowsecurity)`},
		{"table without the tenant_isolation policy", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and c.relkind in ('r','p') and not exists (
				select 1 from pg_policies p where p.schemaname = 'app' and p.tablename = c.relname
				and p.permissive = 'PERMISSIVE' and p.cmd = 'ALL'
				and p.qual = $1 and p.with_check = $1)`},
		{"permissive policy other than the tenant policy (it would widen access)", `
			select tablename || '.' || policyname from pg_policies
			where schemaname = 'app' and permissive = 'PERMISSIVE'
				and (qual is distinct from $1 or with_check is distinct from $1)`},
		{"view without security_invoker", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and c.relkind in ('v','m')
				and not coalesce('security_invoker=true' = any(c.reloptions), false)`},
		{"SECURITY DEFINER function outside the system schemas", `
			select n.nspname || '.' || p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
			where p.prosecdef and n.nspname not in ('pg_catalog', 'information_schema')`},
		{"app object not owned by gatehouse_owner", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname = 'app' and pg_get_userbyid(c.relowner) <> 'gatehouse_owner'`},
		{"object owned by gatehouse_app", `
			select c.relname from pg_class c where pg_get_userbyid(c.relowner) = 'gatehouse_app'
			union all select nspname from pg_namespace where pg_get_userbyid(nspowner) = 'gatehouse_app'
			union all select proname from pg_proc where pg_get_userbyid(proowner) = 'gatehouse_app'`},
		{"gatehouse_app may bypass RLS, is superuser or may create roles or databases", `
			select rolname from pg_roles where rolname = 'gatehouse_app'
				and (rolsuper or rolbypassrls or rolcreaterole or rolcreatedb or rolreplication)`},
		{"gatehouse_app may write outside schema app", `
			select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
			where n.nspname in ('control', 'gatehouse', 'public') and c.relkind in ('r','p')
				and (has_table_privilege('gatehouse_app', c.oid, 'INSERT')
				  or has_table_privilege('gatehouse_app', c.oid, 'UPDATE')
				  or has_table_privilege('gatehouse_app', c.oid, 'DELETE')
				  or has_table_privilege('gatehouse_app', c.oid, 'TRUNCATE'))`},
	}
	var found []string
	for _, c := range checks {
		var args []any
		if strings.Contains(c.sql, "$1") {
			args = append(args, tenantPolicy)
		}
		rows, err := db.Query(ctx, c.sql, args...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return nil, err
			}
			found = append(found, c.what+": "+name)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
	}
	return found, nil
}

func TestCatalogEveryAppTableIsTenantScoped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	silo := e.tenant(t, "silo-tenant", tenancy.Silo)
	ctx := context.Background()
	siloDSN := e.siloDSN(t, silo, tenancy.AdminRole)
	for name, url := range map[string]string{"shared": e.db.AdminURL, "silo": siloDSN} {
		t.Run(name, func(t *testing.T) {
			pool := pgtest.Pool(t, url, 1)
			tables, err := tenancy.AppTables(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			if len(tables) == 0 {
				t.Fatal("schema app has no tables: the checks below would pass vacuously")
			}
			v, err := catalogViolations(ctx, pool)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range v {
				t.Error(s)
			}
		})
	}
}

// TestCatalogCheckCatchesABadTable shows the catalog test can fail: a table
// that forgets each rule is reported for each.
func TestCatalogCheckCatchesABadTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.db.Cluster.Exec(t, e.db.Name,
		"set role gatehouse_owner",
		`create table app.careless (id uuid primary key, tenant_id uuid, note text unique)`,
		`create table app.half_done (tenant_id uuid not null, id uuid not null, primary key (tenant_id, id))`,
		`alter table app.half_done enable row level security`,
		`create policy everyone on app.half_done using (true)`,
		`create view app.peek as select * from app.careless`,
		"reset role",
		`alter table app.careless owner to gatehouse_app`,
	)
	v, err := catalogViolations(context.Background(), e.admin)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(v, "\n")
	for _, want := range []string{
		"table without tenant_id uuid not null: careless",
		"table whose primary key does not start with tenant_id: careless",
		"foreign key or unique constraint not led by tenant_id on both sides: careless.careless_note_key",
		"unique index not led by tenant_id: careless_pkey",
		"table without ENABLE and FORCE ROW LEVEL SECURITY: careless",
		"table without ENABLE and FORCE ROW LEVEL SECURITY: half_done",
		"table without the tenant_isolation policy: half_done",
		"permissive policy other than the tenant policy (it would widen access): half_done.everyone",
		"view without security_invoker: peek",
		"app object not owned by gatehouse_owner: careless",
		"object owned by gatehouse_app: careless",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("violations do not include %q; got:\n%s", want, got)
		}
	}
}
