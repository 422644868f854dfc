package secrets

import (
	"context"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// A silo tenant's connection strings live at tenants/<id>/silo, one key per
// role; the control plane keeps the reference to the app role's.
const siloPath = "silo"

var siloKeys = map[tenancy.Role]string{tenancy.AppRole: "app", tenancy.AdminRole: "admin"}

// StoreSilo implements tenancy.SiloLocator: it keeps tenant t's silo
// connection strings in Vault and returns the reference to record.
func (v *Vault) StoreSilo(ctx context.Context, t tenancy.ID, dsns tenancy.SiloDSNs) (string, error) {
	r, err := refFor(v.kv, t, siloPath+"#"+siloKeys[tenancy.AppRole])
	if err != nil {
		return "", err
	}
	err = v.putKeys(ctx, r.Path, map[string]string{
		siloKeys[tenancy.AppRole]: dsns.App, siloKeys[tenancy.AdminRole]: dsns.Admin,
	})
	if err != nil {
		return "", err
	}
	return r.String(), nil
}

// SiloDSN implements tenancy.SiloLocator: the connection string of tenant
// t's silo for role, from the reference StoreSilo returned. Returns
// Forbidden if ref is not under t's own path.
func (v *Vault) SiloDSN(ctx context.Context, t tenancy.ID, ref string, role tenancy.Role) (string, error) {
	r, err := ParseRef(ref)
	if err != nil {
		return "", err
	}
	key, ok := siloKeys[role]
	if !ok {
		return "", problem.Errorf(problem.Invalid, "unknown database role")
	}
	r.Key = key
	return v.Get(ctx, t, r)
}
