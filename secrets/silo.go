package secrets

import (
	"context"
	"net/url"
	"strings"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// A silo's connection strings live at tenants/<id>/silo/<database>#dsn
// (the app role's, which the server reads) and
// tenants/<id>/silo-admin/<database>#dsn (the administrator's, for
// operators only: a folder of its own, so that the server's Vault policy
// can deny it). Each silo database has paths of its own, so a silo a move
// makes never overwrites the secrets of an older one a server may still
// hold, and a reference that changes tells servers the silo did. The
// control plane keeps the reference to the app role's. (Silos made before
// kept theirs at tenants/<id>/silo and silo-admin, which still read.)
const siloKey = "dsn"

// StoreSilo implements tenancy.SiloLocator: it keeps tenant t's silo
// connection strings in Vault and returns the reference to record.
func (v *Vault) StoreSilo(ctx context.Context, t tenancy.ID, dsns tenancy.SiloDSNs) (string, error) {
	u, err := url.Parse(dsns.Admin)
	if err != nil {
		return "", problem.Errorf(problem.Invalid, "a silo's connection string is malformed")
	}
	db := strings.TrimPrefix(u.Path, "/")
	if _, err := v.Put(ctx, t, "silo-admin/"+db+"#"+siloKey, dsns.Admin); err != nil {
		return "", err
	}
	r, err := v.Put(ctx, t, "silo/"+db+"#"+siloKey, dsns.App)
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// SiloDSN implements tenancy.SiloLocator: the connection string of tenant
// t's silo for role, from the reference StoreSilo returned. Returns
// Forbidden if ref is not under t's own path.
func (v *Vault) SiloDSN(ctx context.Context, t tenancy.ID, ref string, role tenancy.Role) (string, error) {
	r, err := v.siloRef(t, ref, role)
	if err != nil {
		return "", err
	}
	return v.Get(ctx, t, r)
}

// siloRef is the reference of role's connection string of the silo that
// ref (the app role's) names.
func (v *Vault) siloRef(t tenancy.ID, ref string, role tenancy.Role) (Ref, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return Ref{}, err
	}
	if err := owned(v.kv, t, r); err != nil {
		return Ref{}, err
	}
	switch role {
	case tenancy.AppRole:
		return r, nil
	case tenancy.AdminRole:
		dir, db, _ := strings.Cut(strings.TrimPrefix(r.Path, tenantPath(t)+"/"), "/")
		if dir != "silo" {
			return Ref{}, problem.Errorf(problem.Invalid, "not a silo's secret reference")
		}
		r.Path = tenantPath(t) + "/silo-admin"
		if db != "" {
			r.Path += "/" + db
		}
		return r, nil
	}
	return Ref{}, problem.Errorf(problem.Invalid, "unknown database role")
}

// ForgetSilo implements tenancy.SiloLocator: it destroys both connection
// strings of tenant t's silo (the reference StoreSilo returned), once the
// silo is gone. Forgetting twice is not an error.
func (v *Vault) ForgetSilo(ctx context.Context, t tenancy.ID, ref string) error {
	admin, err := v.siloRef(t, ref, tenancy.AdminRole)
	if err != nil {
		return err
	}
	if err := v.Delete(ctx, t, admin); err != nil {
		return err
	}
	app, err := v.siloRef(t, ref, tenancy.AppRole)
	if err != nil {
		return err
	}
	return v.Delete(ctx, t, app)
}
