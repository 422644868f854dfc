package secrets

import (
	"context"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// A silo tenant's connection strings live at tenants/<id>/silo#dsn (the
// app role's, which the server reads) and tenants/<id>/silo-admin#dsn (the
// administrator's, for operators only: a separate path, so that the
// server's Vault policy can deny it). The control plane keeps the
// reference to the first.
var siloNames = map[tenancy.Role]string{tenancy.AppRole: "silo#dsn", tenancy.AdminRole: "silo-admin#dsn"}

// StoreSilo implements tenancy.SiloLocator: it keeps tenant t's silo
// connection strings in Vault and returns the reference to record.
func (v *Vault) StoreSilo(ctx context.Context, t tenancy.ID, dsns tenancy.SiloDSNs) (string, error) {
	if _, err := v.Put(ctx, t, siloNames[tenancy.AdminRole], dsns.Admin); err != nil {
		return "", err
	}
	r, err := v.Put(ctx, t, siloNames[tenancy.AppRole], dsns.App)
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
	if err := owned(v.kv, t, r); err != nil {
		return "", err
	}
	if role != tenancy.AppRole {
		name, ok := siloNames[role]
		if !ok {
			return "", problem.Errorf(problem.Invalid, "unknown database role")
		}
		if r, err = refFor(v.kv, t, name); err != nil {
			return "", err
		}
	}
	return v.Get(ctx, t, r)
}

// ForgetSilo implements tenancy.SiloLocator: it destroys both connection
// strings of tenant t's silo (the reference StoreSilo returned), once the
// silo is gone. Forgetting twice is not an error.
func (v *Vault) ForgetSilo(ctx context.Context, t tenancy.ID, ref string) error {
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	if err := owned(v.kv, t, r); err != nil {
		return err
	}
	admin, err := refFor(v.kv, t, siloNames[tenancy.AdminRole])
	if err != nil {
		return err
	}
	if err := v.Delete(ctx, t, admin); err != nil {
		return err
	}
	return v.Delete(ctx, t, r)
}
