package tenancy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// Registry is the control plane's service for platform operators: it
// creates, lists, suspends, resumes and deletes tenants and their custom
// domains. It works as an administrator on the primary database and on silo
// clusters; the server never holds one.
type Registry struct {
	admin      *pgxpool.Pool
	primaryDSN string
	baseDomain string
	secrets    Secrets
	migrator   *Migrator
}

// NewRegistry returns a Registry over the primary database (admin pool and
// its URL, the default silo cluster). baseDomain is where <slug>. hosts live;
// custom domains may not fall under it. Tenants' keys and silo credentials
// go to secrets.
func NewRegistry(admin *pgxpool.Pool, primaryDSN, baseDomain string, secrets Secrets, m *Migrator) *Registry {
	return &Registry{admin: admin, primaryDSN: primaryDSN, baseDomain: baseDomain, secrets: secrets, migrator: m}
}

// CreateParams describes a new tenant.
type CreateParams struct {
	Slug      string
	Name      string
	Placement Placement // default Shared
	// SiloCluster is the admin URL of the cluster for a silo tenant's
	// database; empty means the primary cluster.
	SiloCluster string
	Plan        string // default "free"
	Signup      Signup // default SignupOpen
}

// Create registers a tenant. Its Transit key is created first; a silo
// tenant also gets its own database, created and migrated, with its
// credentials stored in the secret store, all before the tenant is
// recorded. If anything fails, the database is dropped and the tenant's
// secrets shredded, so a failed Create changes nothing.
//
// Returns Invalid for a bad slug, name, placement or cluster URL, Conflict if
// the slug is taken, Unavailable if the silo cluster or the secret store
// cannot be reached.
func (r *Registry) Create(ctx context.Context, p CreateParams) (*Tenant, error) {
	if err := ValidateSlug(p.Slug); err != nil {
		return nil, err
	}
	p.Name = strings.TrimSpace(p.Name)
	if err := ValidateName(p.Name); err != nil {
		return nil, err
	}
	if p.Placement == "" {
		p.Placement = Shared
	}
	if p.Placement != Shared && p.Placement != Silo {
		return nil, problem.InvalidField("placement", "must be shared or silo")
	}
	if p.SiloCluster != "" && p.Placement != Silo {
		return nil, problem.InvalidField("silo-cluster", "only applies to --placement silo")
	}
	if p.Plan == "" {
		p.Plan = "free"
	}
	if p.Signup == "" {
		p.Signup = SignupOpen
	}
	if p.Signup != SignupOpen && p.Signup != SignupInvite {
		return nil, problem.InvalidField("signup", "must be open or invite")
	}
	q := queries.New(r.admin)
	if _, err := q.GetLiveTenantBySlug(ctx, p.Slug); err == nil {
		return nil, problem.Errorf(problem.Conflict, "tenant %q already exists", p.Slug)
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return nil, err
	}

	id := ID(uuid.New())
	undo := func() {
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = r.secrets.Shred(cleanupCtx, id)
	}
	if err := r.secrets.CreateTenantKey(ctx, id); err != nil {
		undo()
		return nil, err
	}
	var ref *string
	if p.Placement == Silo {
		dsns, drop, err := r.createSiloDatabase(ctx, id, p.Slug, p.SiloCluster)
		if err != nil {
			undo()
			return nil, err
		}
		undoKey := undo
		undo = func() { drop(); undoKey() }
		siloRef, err := r.secrets.StoreSilo(ctx, id, dsns)
		if err != nil {
			undo()
			return nil, err
		}
		ref = &siloRef
	}
	row, err := q.CreateTenant(ctx, queries.CreateTenantParams{
		ID: id.UUID(), Slug: p.Slug, Name: p.Name, Placement: string(p.Placement),
		SiloRef: ref, Plan: p.Plan, Signup: string(p.Signup),
	})
	if err != nil {
		undo()
		if queries.IsUniqueViolation(err) {
			return nil, problem.Errorf(problem.Conflict, "tenant %q already exists", p.Slug)
		}
		return nil, fmt.Errorf("create tenant %s: %w", p.Slug, err)
	}
	return tenantFromRow(row), nil
}

// siloDatabaseName derives a silo's database name from the tenant id, so it
// never depends on a slug that may later be reused.
func siloDatabaseName(id ID) string {
	u := id.UUID()
	return "gatehouse_" + hex.EncodeToString(u[:])
}

// createSiloDatabase creates and migrates tenant id's database on cluster
// (admin URL; empty for the primary's). It returns the database's
// connection strings and a function that drops the database again.
func (r *Registry) createSiloDatabase(ctx context.Context, id ID, slug, cluster string) (SiloDSNs, func(), error) {
	if cluster == "" {
		cluster = r.primaryDSN
	}
	dsns, err := siloDSNs(cluster, siloDatabaseName(id), r.migrator.AppPassword)
	if err != nil {
		return SiloDSNs{}, nil, err
	}
	drop := func() {
		dropCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = dropDatabase(dropCtx, dsns.Admin)
	}
	if err := r.ensureSiloDatabase(ctx, dsns.Admin, "silo "+slug); err != nil {
		drop()
		return SiloDSNs{}, nil, err
	}
	return dsns, drop, nil
}

// siloDSNs returns the connection strings of database name on cluster
// (its administrator URL).
func siloDSNs(cluster, name, appPassword string) (SiloDSNs, error) {
	cu, err := url.Parse(cluster)
	if err != nil || (cu.Scheme != "postgres" && cu.Scheme != "postgresql") || cu.Host == "" {
		return SiloDSNs{}, problem.InvalidField("silo-cluster", "must be a postgres:// URL with a host")
	}
	siloURL := *cu
	siloURL.Path = "/" + name
	dsns := SiloDSNs{Admin: siloURL.String()}
	if dsns.App, err = AppURL(dsns.Admin, appPassword); err != nil {
		return SiloDSNs{}, err
	}
	return dsns, nil
}

// clusterOf splits a database's administrator URL into the URL of its
// cluster's postgres database and the database's name.
func clusterOf(dsn string) (*url.URL, string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("silo connection string is malformed")
	}
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres" // any database but the silo
	return u, name, nil
}

// connectCluster connects to the cluster of adminDSN. Returns Unavailable
// if it cannot be reached.
func connectCluster(ctx context.Context, adminDSN string) (*pgx.Conn, string, error) {
	u, name, err := clusterOf(adminDSN)
	if err != nil {
		return nil, "", err
	}
	connectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(connectCtx, u.String())
	if err != nil {
		return nil, "", problem.Wrap(problem.Unavailable, err, fmt.Sprintf("silo cluster %s is unreachable", u.Host))
	}
	return c, name, nil
}

// ensureSiloDatabase creates the database adminDSN names, if it does not
// exist, with Gatehouse's roles on its cluster, and migrates it.
func (r *Registry) ensureSiloDatabase(ctx context.Context, adminDSN, label string) error {
	c, name, err := connectCluster(ctx, adminDSN)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if err := r.migrator.EnsureRoles(ctx, c); err != nil {
		return err
	}
	var exists bool
	if err := c.QueryRow(ctx, "select exists (select 1 from pg_database where datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("create silo database: %w", err)
	}
	if !exists {
		if _, err := c.Exec(ctx, "create database "+pgx.Identifier{name}.Sanitize()+" owner "+OwnerRoleName); err != nil {
			return fmt.Errorf("create silo database: %w", err)
		}
	}
	return r.migrator.Silo(ctx, adminDSN, label)
}

// dropDatabase drops the database adminDSN names, if it exists.
func dropDatabase(ctx context.Context, adminDSN string) error {
	c, name, err := connectCluster(ctx, adminDSN)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	if _, err := c.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)"); err != nil {
		return fmt.Errorf("drop silo database: %w", err)
	}
	return nil
}

// Get returns the live tenant with the given slug. Returns NotFound if there
// is none.
func (r *Registry) Get(ctx context.Context, slug string) (*Tenant, error) {
	row, err := queries.New(r.admin).GetLiveTenantBySlug(ctx, slug)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, problem.Errorf(problem.NotFound, "no tenant %q", slug)
	}
	if err != nil {
		return nil, fmt.Errorf("get tenant %s: %w", slug, err)
	}
	return tenantFromRow(row), nil
}

// List returns every live tenant, ordered by slug.
func (r *Registry) List(ctx context.Context) ([]*Tenant, error) {
	return listLive(ctx, r.admin)
}

func listLive(ctx context.Context, db queries.DBTX) ([]*Tenant, error) {
	rows, err := queries.New(db).ListLiveTenants(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tenants: %w", err)
	}
	ts := make([]*Tenant, len(rows))
	for i, row := range rows {
		ts[i] = tenantFromRow(row)
	}
	return ts, nil
}

// Suspend stops a tenant from being served: every request to it is refused
// with 403 until Resume. Suspending a suspended tenant changes nothing.
// Returns NotFound for an unknown slug, Conflict while the tenant is moving.
func (r *Registry) Suspend(ctx context.Context, slug string) (*Tenant, error) {
	return r.setStatus(ctx, slug, Suspended, Active, Suspended)
}

// Resume serves a suspended tenant again. Returns NotFound for an unknown
// slug, Conflict while the tenant is moving.
func (r *Registry) Resume(ctx context.Context, slug string) (*Tenant, error) {
	return r.setStatus(ctx, slug, Active, Suspended, Active)
}

func (r *Registry) setStatus(ctx context.Context, slug string, to Status, from ...Status) (*Tenant, error) {
	t, err := r.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	fromText := make([]string, len(from))
	for i, s := range from {
		fromText[i] = string(s)
	}
	row, err := queries.New(r.admin).SetTenantStatus(ctx, queries.SetTenantStatusParams{
		ID: t.ID.UUID(), Status: string(to), FromStatuses: fromText,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, problem.Errorf(problem.Conflict, "tenant %q is %s", slug, t.Status)
	}
	if err != nil {
		return nil, fmt.Errorf("set tenant %s %s: %w", slug, to, err)
	}
	return tenantFromRow(row), nil
}

// Delete removes a tenant's data for good: its rows in the shared database,
// or its whole silo database, and every secret it has: its Transit keys
// are destroyed, so anything sealed under them, backups included, can never
// be opened again. The control plane keeps a tombstone, which frees the
// slug. Returns NotFound for an unknown slug, Conflict while the tenant is
// moving, Unavailable if the secret store or the silo cannot be reached.
//
// The tenant is suspended first, then its silo dropped and its secrets
// shredded, then its shared rows and tombstone written in one transaction:
// if any step fails the tenant stays suspended and Delete can simply be run
// again.
func (r *Registry) Delete(ctx context.Context, slug string) error {
	t, err := r.Get(ctx, slug)
	if err != nil {
		return err
	}
	if t.Status == Moving {
		return problem.Errorf(problem.Conflict, "tenant %q is moving; finish or abort the move first", slug)
	}
	if t.Status != Suspended {
		if _, err := r.Suspend(ctx, slug); err != nil {
			return err
		}
	}
	// A flipped move may still keep the tenant's old copy.
	if err := NewMover(r).retireTenant(ctx, t.ID, true); err != nil {
		return err
	}
	if t.Placement == Silo {
		if err := r.dropSiloDatabase(ctx, t.ID, t.SiloRef); err != nil {
			return err
		}
	}
	if err := r.secrets.Shred(ctx, t.ID); err != nil {
		return err
	}
	// Not a tenant transaction: that would enter the tenant's move fence,
	// and a tenant promoted to a silo is refused in the shared database.
	return adminTenantTx(ctx, r.admin, t.ID, func(tx pgx.Tx) error {
		if t.Placement == Shared {
			if err := deleteTenantRows(ctx, tx, t.ID); err != nil {
				return err
			}
		}
		q := queries.New(tx)
		if err := q.WelcomeBack(ctx, t.ID.UUID()); err != nil {
			return err
		}
		if err := q.ForgetFenceWait(ctx, t.ID.UUID()); err != nil {
			return err
		}
		if err := q.RemoveAllTenantDomains(ctx, t.ID.UUID()); err != nil {
			return err
		}
		_, err := q.MarkTenantDeleted(ctx, t.ID.UUID())
		return err
	})
}

// adminTenantTx runs fn in a transaction on db, an administrator's pool,
// scoped to tenant id for row-level security (an administrator need not be
// a superuser) but outside the tenant's move fence: for the operator's own
// work on a database the tenant is leaving or has left.
func adminTenantTx(ctx context.Context, db *pgxpool.Pool, id ID, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setTenant, id.String()); err != nil {
			return err
		}
		return fn(tx)
	})
}

// dropSiloDatabase drops the silo database ref reaches. A reference whose
// secrets are gone means an earlier attempt got that far: nothing to do.
func (r *Registry) dropSiloDatabase(ctx context.Context, t ID, ref string) error {
	dsn, err := r.secrets.SiloDSN(ctx, t, ref, AdminRole)
	if problem.CodeOf(err) == problem.NotFound {
		return nil
	}
	if err != nil {
		return err
	}
	return dropDatabase(ctx, dsn)
}

// siloDatabaseExists reports whether the silo database ref reaches exists.
func (r *Registry) siloDatabaseExists(ctx context.Context, t ID, ref string) (bool, error) {
	dsn, err := r.secrets.SiloDSN(ctx, t, ref, AdminRole)
	if problem.CodeOf(err) == problem.NotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c, name, err := connectCluster(ctx, dsn)
	if err != nil {
		return false, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var exists bool
	err = c.QueryRow(ctx, "select exists (select 1 from pg_database where datname = $1)", name).Scan(&exists)
	return exists, err
}

// deleteTenantRows deletes tenant id's rows from every table of schema app,
// children before parents. The table list comes from the catalog, so a new
// table is covered without touching this code; that is why it is not sqlc.
func deleteTenantRows(ctx context.Context, tx queries.DBTX, id ID) error {
	tables, err := AppTables(ctx, tx)
	if err != nil {
		return err
	}
	for i := len(tables) - 1; i >= 0; i-- {
		stmt := "delete from " + pgx.Identifier{"app", tables[i]}.Sanitize() + " where tenant_id = $1"
		if _, err := tx.Exec(ctx, stmt, id.UUID()); err != nil {
			return fmt.Errorf("delete tenant rows from %s: %w", tables[i], err)
		}
	}
	return nil
}

// Domain is a custom domain a tenant is served on.
type Domain struct {
	Name     string
	Verified bool
	Created  time.Time
}

// AddDomain registers a custom domain for the tenant. Domains added by an
// operator count as verified. Returns Invalid for a malformed domain or one
// under the base domain, NotFound for an unknown slug, Conflict if the
// domain is already registered.
func (r *Registry) AddDomain(ctx context.Context, slug, domain string) (*Domain, error) {
	d, err := ValidateDomain(domain)
	if err != nil {
		return nil, err
	}
	if d == r.baseDomain || strings.HasSuffix(d, "."+r.baseDomain) {
		return nil, problem.InvalidField("domain", "must not be under the base domain "+r.baseDomain)
	}
	t, err := r.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	row, err := queries.New(r.admin).AddTenantDomain(ctx, queries.AddTenantDomainParams{Domain: d, TenantID: t.ID.UUID()})
	if queries.IsUniqueViolation(err) {
		return nil, problem.Errorf(problem.Conflict, "domain %s is already registered", d)
	}
	if err != nil {
		return nil, fmt.Errorf("add domain %s: %w", d, err)
	}
	return domainFromRow(row), nil
}

// RemoveDomain unregisters a tenant's custom domain. Returns NotFound if the
// tenant or the domain (for that tenant) is unknown.
func (r *Registry) RemoveDomain(ctx context.Context, slug, domain string) error {
	t, err := r.Get(ctx, slug)
	if err != nil {
		return err
	}
	d := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(domain)), ".")
	n, err := queries.New(r.admin).RemoveTenantDomain(ctx, queries.RemoveTenantDomainParams{Domain: d, TenantID: t.ID.UUID()})
	if err != nil {
		return fmt.Errorf("remove domain %s: %w", d, err)
	}
	if n == 0 {
		return problem.Errorf(problem.NotFound, "tenant %q has no domain %s", slug, d)
	}
	return nil
}

// Domains lists a tenant's custom domains. Returns NotFound for an unknown
// slug.
func (r *Registry) Domains(ctx context.Context, slug string) ([]*Domain, error) {
	t, err := r.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	rows, err := queries.New(r.admin).ListTenantDomains(ctx, t.ID.UUID())
	if err != nil {
		return nil, fmt.Errorf("list domains: %w", err)
	}
	ds := make([]*Domain, len(rows))
	for i, row := range rows {
		ds[i] = domainFromRow(row)
	}
	return ds, nil
}

func domainFromRow(r queries.ControlTenantDomain) *Domain {
	return &Domain{Name: r.Domain, Verified: r.VerifiedAt != nil, Created: r.CreatedAt}
}

// Ready reports whether the primary database answers with every migration
// applied.
func (r *Registry) Ready(ctx context.Context) error { return SchemaCurrent(ctx, r.admin, true) }
