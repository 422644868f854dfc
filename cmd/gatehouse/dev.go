package main

import (
	"context"
	"fmt"
	"net"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// demoTenants are what `gatehouse dev` makes sure exist, with the
// address each one's first admin is invited at.
var demoTenants = []struct {
	tenancy.CreateParams
	admin string
}{
	{tenancy.CreateParams{Slug: "acme", Name: "Acme Inc", Placement: tenancy.Shared}, "admin@acme.test"},
	{tenancy.CreateParams{Slug: "globex", Name: "Globex Corporation", Placement: tenancy.Silo}, "admin@globex.test"},
}

// runDev is for a local machine: migrate, create the demo tenants if they
// are missing (inviting their first admins), and serve, printing where
// to look.
func runDev(ctx context.Context, args []string, std stdio) error {
	cfg, err := configFrom("dev", args, std)
	if err != nil {
		return err
	}
	// A fresh Vault gets its engines before anything needs them.
	v, err := cfg.vault(ctx, nil)
	if err != nil {
		return err
	}
	err = v.EnsureMounts(ctx)
	v.Close()
	if err != nil {
		return err
	}
	if err := cfg.migrate(ctx, std.out); err != nil {
		return err
	}
	err = withOperatorApp(ctx, cfg, std, operatorOptions{}, func(k *operatorApp) error {
		for _, p := range demoTenants {
			_, err := k.reg.Get(ctx, p.Slug)
			if problem.CodeOf(err) != problem.NotFound {
				if err != nil {
					return err
				}
				continue
			}
			t, err := k.reg.Create(ctx, p.CreateParams)
			if err != nil {
				return err
			}
			fmt.Fprintf(std.out, "created demo tenant %s (%s)\n", p.Slug, p.Placement)
			if err := k.inviteAdmin(ctx, std, t, p.admin, "Demo admin"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return serve(ctx, cfg, std, func(at listening) {
		_, port, _ := net.SplitHostPort(at.Addr)
		fmt.Fprintf(std.out, "\nGatehouse is running. Try:\n")
		for _, p := range demoTenants {
			fmt.Fprintf(std.out, "  http://%s.%s:%s/v1/tenant\n", p.Slug, cfg.BaseDomain, port)
		}
		fmt.Fprintf(std.out, "  http://%s:%s/readyz\n", cfg.BaseDomain, port)
		if at.MetricsAddr != "" {
			fmt.Fprintf(std.out, "  http://%s/metrics\n", at.MetricsAddr)
		}
		fmt.Fprintf(std.out, "Stop with Ctrl-C.\n\n")
	})
}
