package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// runAudit is `audit verify|export --tenant SLUG`.
func runAudit(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 || (args[0] != "verify" && args[0] != "export") {
		return usageErr("audit: want verify or export")
	}
	sub := args[0]
	var cfg config
	fs := flag.NewFlagSet("audit "+sub, flag.ContinueOnError)
	cfg.flags(fs)
	slug := fs.String("tenant", "", "the tenant whose audit trail to read")
	out := fs.String("out", "", "file to write (export; default standard output)")
	if err := positional(fs, args[1:], std, 0); err != nil {
		return err
	}
	if *slug == "" {
		return usageErr("audit %s: give --tenant SLUG", sub)
	}
	return withOperatorApp(ctx, cfg, std, operatorOptions{}, func(k *operatorApp) error {
		t, err := k.reg.Get(ctx, *slug)
		if err != nil {
			return err
		}
		if sub == "export" {
			return exportAudit(ctx, k.Data, t, *out, std)
		}
		n, brk, err := identity.VerifyAudit(ctx, k.Data, t)
		if err != nil {
			return err
		}
		if brk != nil {
			return problem.Errorf(problem.Conflict, "audit trail of %s is broken at event %d: %s (%d events before it verify)", t.Slug, brk.Seq, brk.Reason, n)
		}
		fmt.Fprintf(std.out, "audit trail of %s: %d events, chain intact\n", t.Slug, n)
		return nil
	})
}

func exportAudit(ctx context.Context, db *tenancy.DB, t *tenancy.Tenant, path string, std stdio) error {
	var w io.Writer = std.out
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return problem.Errorf(problem.Invalid, "cannot write %s", path)
		}
		defer f.Close()
		w = f
	}
	n, err := identity.ExportAudit(ctx, db, t, w)
	if err != nil {
		return err
	}
	fmt.Fprintf(std.err, "exported %d audit events of %s\n", n, t.Slug)
	return nil
}

// runTenantAdmin is `tenant admin grant|revoke --tenant SLUG --email E`:
// the operator's way to give a tenant its first admin.
func runTenantAdmin(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 || (args[0] != "grant" && args[0] != "revoke" && args[0] != "invite") {
		return usageErr("tenant admin: want grant, revoke or invite")
	}
	sub := args[0]
	var cfg config
	fs := flag.NewFlagSet("tenant admin "+sub, flag.ContinueOnError)
	cfg.flags(fs)
	slug := fs.String("tenant", "", "the tenant")
	email := fs.String("email", "", "the account's email")
	name := fs.String("name", "", "invite: the new admin's display name")
	if err := positional(fs, args[1:], std, 0); err != nil {
		return err
	}
	if *slug == "" || *email == "" {
		return usageErr("tenant admin %s: give --tenant SLUG and --email EMAIL", sub)
	}
	return withOperatorApp(ctx, cfg, std, operatorOptions{}, func(k *operatorApp) error {
		t, err := k.reg.Get(ctx, *slug)
		if err != nil {
			return err
		}
		if sub == "invite" {
			return k.inviteAdmin(ctx, std, t, *email, *name)
		}
		role := identity.RoleAdmin
		if sub == "revoke" {
			role = identity.RoleMember
		}
		u, err := k.Accounts.SetRole(ctx, t, *email, role)
		if err != nil {
			return err
		}
		fmt.Fprintf(std.out, "%s is now %s of %s\n", u.Email, map[string]string{identity.RoleAdmin: "an admin", identity.RoleMember: "a member"}[role], t.Slug)
		return nil
	})
}

// inviteAdmin creates an admin account of t for email and queues its
// invitation.
func (k *operatorApp) inviteAdmin(ctx context.Context, std stdio, t *tenancy.Tenant, email, name string) error {
	u, err := k.Accounts.InviteAdmin(ctx, t, email, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(std.out, "invited %s as an admin of %s (the invitation goes out with the servers' mail)\n", u.Email, t.Slug)
	return nil
}
