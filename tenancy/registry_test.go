package tenancy_test

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestCreateRefusesBadInputAndChangesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "acme", tenancy.Shared)
	tests := []struct {
		name string
		p    tenancy.CreateParams
		code problem.Code
		msg  string
	}{
		{"bad slug", tenancy.CreateParams{Slug: "Bad_Slug", Name: "X"}, problem.Invalid, "slug"},
		{"reserved slug", tenancy.CreateParams{Slug: "admin", Name: "X"}, problem.Invalid, "reserved"},
		{"empty name", tenancy.CreateParams{Slug: "noname", Name: "  "}, problem.Invalid, "name"},
		{"bad placement", tenancy.CreateParams{Slug: "placed", Name: "X", Placement: "cloud"}, problem.Invalid, "placement"},
		{"cluster for shared", tenancy.CreateParams{Slug: "clustered", Name: "X", SiloCluster: "postgres://h/db"}, problem.Invalid, "silo-cluster"},
		{"duplicate", tenancy.CreateParams{Slug: "acme", Name: "Acme again"}, problem.Conflict, "already exists"},
		{"duplicate silo", tenancy.CreateParams{Slug: "acme", Name: "Acme again", Placement: tenancy.Silo}, problem.Conflict, "already exists"},
		{"silo cluster not a URL", tenancy.CreateParams{Slug: "badurl", Name: "X", Placement: tenancy.Silo, SiloCluster: "host=x"}, problem.Invalid, "postgres:// URL"},
		{"unreachable silo cluster", tenancy.CreateParams{Slug: "faraway", Name: "X", Placement: tenancy.Silo,
			SiloCluster: "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2"}, problem.Unavailable, "unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.reg.Create(ctx, tt.p)
			if problem.CodeOf(err) != tt.code || !strings.Contains(problem.MessageOf(err), tt.msg) {
				t.Fatalf("Create = %v (code %s), want %s mentioning %q", err, problem.CodeOf(err), tt.code, tt.msg)
			}
		})
	}
	if n := count(t, e.admin, "select count(*) from control.tenants"); n != 1 {
		t.Fatalf("%d tenants recorded, want only acme", n)
	}
}

func TestCreateSiloKeepsItsCredentialsInVaultOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	second := pgtest.Second(t)
	withPassword := strings.Replace(second.URL("postgres"), "postgres@", "postgres:s3cret@", 1)
	tn, err := e.reg.Create(ctx, tenancy.CreateParams{Slug: "globex", Name: "Globex", Placement: tenancy.Silo, SiloCluster: withPassword})
	if err != nil {
		t.Fatal(err)
	}
	if want := "vault:kv/tenants/" + tn.ID.String() + "/silo/gatehouse_" + strings.ReplaceAll(tn.ID.String(), "-", "") + "#dsn"; tn.SiloRef != want {
		t.Fatalf("silo ref %q, want %q", tn.SiloRef, want)
	}
	if n := count(t, e.admin, "select count(*) from control.tenants t where t::text like '%s3cret%' or t::text like '%127.0.0.1%'"); n != 0 {
		t.Fatal("the control plane stores the silo's location or password")
	}
	if dsn := e.siloDSN(t, tn, tenancy.AdminRole); !strings.Contains(dsn, "s3cret") {
		t.Fatal("Vault lost the silo cluster's password")
	}
	err = e.data.Tx(ctx, tn, func(q *queries.Queries) error {
		_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: "hiro@globex.test"})
		return err
	})
	if err != nil {
		t.Fatalf("write to the silo: %v", err)
	}
	if n := count(t, e.admin, "select count(*) from app.users"); n != 0 {
		t.Fatalf("the silo tenant's user landed in the shared database (%d rows)", n)
	}
	siloDB := pgtest.Pool(t, e.siloDSN(t, tn, tenancy.AdminRole), 1)
	if n := count(t, siloDB, "select count(*) from app.users where email = 'hiro@globex.test'"); n != 1 {
		t.Fatalf("silo has %d matching users, want 1", n)
	}
	if e.silos.Open() != 1 {
		t.Fatalf("%d silo pools open, want 1", e.silos.Open())
	}
}

func TestConcurrentCreateOfOneSlugLeavesOneTenantAndNoStraySilo(t *testing.T) {
	// Not parallel: it counts databases on the shared second cluster.
	e := newEnv(t)
	ctx := context.Background()
	second := pgtest.Second(t)
	admin := pgtest.Pool(t, second.URL("postgres"), 1)
	before := count(t, admin, "select count(*) from pg_database where datname like 'gatehouse\\_%'")
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = e.reg.Create(ctx, tenancy.CreateParams{Slug: "racer", Name: "Racer", Placement: tenancy.Silo, SiloCluster: second.URL("postgres")})
		})
	}
	wg.Wait()
	var ok int
	for _, err := range errs {
		switch problem.CodeOf(err) {
		case "":
			ok++
		case problem.Conflict:
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d creates succeeded, want exactly 1 (errors: %v)", ok, errs)
	}
	after := count(t, admin, "select count(*) from pg_database where datname like 'gatehouse\\_%'")
	if after != before+1 {
		t.Fatalf("silo databases went from %d to %d, want one more", before, after)
	}
}

func TestSuspendAndResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "acme", tenancy.Shared)
	for _, step := range []struct {
		do   func(context.Context, string) (*tenancy.Tenant, error)
		want tenancy.Status
	}{
		{e.reg.Suspend, tenancy.Suspended},
		{e.reg.Suspend, tenancy.Suspended}, // idempotent
		{e.reg.Resume, tenancy.Active},
		{e.reg.Resume, tenancy.Active},
	} {
		tn, err := step.do(ctx, "acme")
		if err != nil || tn.Status != step.want {
			t.Fatalf("got %v, %v; want status %s", tn, err, step.want)
		}
		got, _ := e.reg.Get(ctx, "acme")
		if got.Status != step.want {
			t.Fatalf("stored status %s, want %s", got.Status, step.want)
		}
	}
	if _, err := e.reg.Suspend(ctx, "nobody"); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("suspend unknown tenant = %v, want NotFound", err)
	}
	e.db.Cluster.Exec(t, e.db.Name, "update control.tenants set status = 'moving' where slug = 'acme'")
	if _, err := e.reg.Suspend(ctx, "acme"); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("suspend a moving tenant = %v, want Conflict", err)
	}
	if err := e.reg.Delete(ctx, "acme"); problem.CodeOf(err) != problem.Conflict {
		t.Fatalf("delete a moving tenant = %v, want Conflict", err)
	}
}

func TestDeleteSharedTenantRemovesOnlyItsRows(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	doomed := e.tenant(t, "doomed", tenancy.Shared)
	kept := e.tenant(t, "kept", tenancy.Shared)
	for _, tn := range []*tenancy.Tenant{doomed, kept} {
		err := e.data.Tx(ctx, tn, func(q *queries.Queries) error {
			_, err := q.CreateUser(ctx, queries.CreateUserParams{TenantID: tn.ID.UUID(), Email: "a@example.com"})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.reg.AddDomain(ctx, "doomed", "login.doomed.test"); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Delete(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, e.admin, "select count(*) from app.users where tenant_id = $1", doomed.ID.UUID()); n != 0 {
		t.Fatalf("%d rows of the deleted tenant remain", n)
	}
	if n := count(t, e.admin, "select count(*) from app.users where tenant_id = $1", kept.ID.UUID()); n != 1 {
		t.Fatalf("the other tenant has %d rows, want 1", n)
	}
	if n := count(t, e.admin, "select count(*) from control.tenant_domains"); n != 0 {
		t.Fatalf("%d domains of the deleted tenant remain", n)
	}
	if _, err := e.reg.Get(ctx, "doomed"); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("Get deleted tenant = %v, want NotFound", err)
	}
	if err := e.reg.Delete(ctx, "doomed"); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("second Delete = %v, want NotFound", err)
	}
	// The slug is free again, for a new and unrelated tenant.
	again := e.tenant(t, "doomed", tenancy.Shared)
	if again.ID == doomed.ID {
		t.Fatal("a re-created tenant reused the deleted tenant's id")
	}
}

func TestDeleteSiloTenantDropsItsDatabase(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn := e.tenant(t, "siloed", tenancy.Silo)
	admin := pgtest.Pool(t, pgtest.Second(t).URL("postgres"), 1)
	u, err := url.Parse(e.siloDSN(t, tn, tenancy.AdminRole))
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	exists := func() int64 { return count(t, admin, "select count(*) from pg_database where datname = $1", dbName) }
	if exists() != 1 {
		t.Fatalf("silo database %s missing after create", dbName)
	}
	if err := e.reg.Delete(ctx, "siloed"); err != nil {
		t.Fatal(err)
	}
	if exists() != 0 {
		t.Fatalf("silo database %s still exists after delete", dbName)
	}
	if n := count(t, e.admin, "select count(*) from control.tenants where id = $1 and status = 'deleted'", tn.ID.UUID()); n != 1 {
		t.Fatal("no tombstone for the deleted silo tenant")
	}
	if _, err := e.vault.SiloDSN(ctx, tn.ID, tn.SiloRef, tenancy.AdminRole); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("silo credentials after delete: %v, want NotFound", err)
	}
}

func TestDeleteResumesAfterSecretsWereShredded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	tn := e.tenant(t, "half-gone", tenancy.Silo)
	// An earlier Delete dropped the silo and shredded the secrets, then
	// failed before writing the tombstone.
	if _, err := e.reg.Suspend(ctx, "half-gone"); err != nil {
		t.Fatal(err)
	}
	dsn := e.siloDSN(t, tn, tenancy.AdminRole)
	u, _ := url.Parse(dsn)
	pgtest.Second(t).Exec(t, "postgres", "drop database "+strings.TrimPrefix(u.Path, "/")+" with (force)")
	if err := e.vault.Shred(ctx, tn.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Delete(ctx, "half-gone"); err != nil {
		t.Fatalf("resumed delete: %v", err)
	}
	if _, err := e.reg.Get(ctx, "half-gone"); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("tenant after resumed delete: %v, want NotFound", err)
	}
}

func TestTenantKeyLivesAndDiesWithTheTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	for _, placement := range []tenancy.Placement{tenancy.Shared, tenancy.Silo} {
		slug := "keyed-" + string(placement)
		tn := e.tenant(t, slug, placement)
		sealer := secrets.NewSealer(e.vault, secrets.ControlPlane(e.admin), secrets.SealerOptions{})
		aad := secrets.AAD("t", "c", "r")
		sealed, err := sealer.Seal(ctx, tn.ID, aad, []byte("tenant data"))
		if err != nil {
			t.Fatalf("%s: seal with the tenant's new key: %v", slug, err)
		}
		if err := e.reg.Delete(ctx, slug); err != nil {
			t.Fatal(err)
		}
		sealer.Forget(tn.ID) // in a server, the resolver's change notification does this
		fresh := secrets.NewSealer(e.vault, secrets.GenerationsFunc(func(context.Context, tenancy.ID) (uint16, error) { return 1, nil }), secrets.SealerOptions{})
		if _, err := fresh.Open(ctx, tn.ID, aad, sealed); problem.CodeOf(err) != problem.NotFound {
			t.Fatalf("%s: open after delete: %v, want NotFound (key destroyed)", slug, err)
		}
		if _, err := sealer.Seal(ctx, tn.ID, aad, []byte("more")); err == nil {
			t.Fatalf("%s: sealing for a deleted tenant succeeded", slug)
		}
	}
}

func TestControlPlaneRefusesSiloRefOutsideTheTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.tenant(t, "silo-a", tenancy.Silo)
	b := e.tenant(t, "silo-b", tenancy.Silo)
	for _, ref := range []string{
		a.SiloRef, // another tenant's
		strings.Replace(a.SiloRef, "/silo#", "/x/tenants/"+b.ID.String()+"/silo#", 1), // b's folder nested in a's
		"vault:kv/tenants/" + b.ID.String() + "/../" + a.ID.String() + "/silo#dsn",
	} {
		_, err := e.admin.Exec(context.Background(), "update control.tenants set silo_ref = $1 where id = $2", ref, b.ID.UUID())
		if err == nil || !strings.Contains(err.Error(), "check constraint") {
			t.Fatalf("setting b's silo ref to %s: %v, want a check violation", ref, err)
		}
	}
}

func TestDomains(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.tenant(t, "acme", tenancy.Shared)
	e.tenant(t, "globex", tenancy.Shared)
	if _, err := e.reg.AddDomain(ctx, "acme", "Login.Acme.TEST"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		slug, domain string
		code         problem.Code
	}{
		{"globex", "login.acme.test", problem.Conflict},
		{"acme", "login.acme.test", problem.Conflict},
		{"acme", "acme.localhost", problem.Invalid}, // under the base domain
		{"acme", "not a domain", problem.Invalid},
		{"acme", "login.acme.test:8443", problem.Invalid},
		{"nobody", "login.nobody.test", problem.NotFound},
	} {
		if _, err := e.reg.AddDomain(ctx, tt.slug, tt.domain); problem.CodeOf(err) != tt.code {
			t.Errorf("AddDomain(%s, %s) = %v, want %s", tt.slug, tt.domain, err, tt.code)
		}
	}
	ds, err := e.reg.Domains(ctx, "acme")
	if err != nil || len(ds) != 1 || ds[0].Name != "login.acme.test" || !ds[0].Verified {
		t.Fatalf("Domains = %v, %v; want login.acme.test, verified", ds, err)
	}
	if err := e.reg.RemoveDomain(ctx, "globex", "login.acme.test"); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("globex removing acme's domain = %v, want NotFound", err)
	}
	if err := e.reg.RemoveDomain(ctx, "acme", "login.acme.test"); err != nil {
		t.Fatal(err)
	}
	if ds, _ := e.reg.Domains(ctx, "acme"); len(ds) != 0 {
		t.Fatalf("domains after remove: %v", ds)
	}
}
