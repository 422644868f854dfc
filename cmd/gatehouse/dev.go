package main

import (
	"context"
	"fmt"
	"net"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// demoTenants are what `gatehouse dev` makes sure exist.
var demoTenants = []tenancy.CreateParams{
	{Slug: "acme", Name: "Acme Inc", Placement: tenancy.Shared},
	{Slug: "globex", Name: "Globex Corporation", Placement: tenancy.Silo},
}

// runDev is for a local machine: migrate, create the demo tenants if they
// are missing, and serve, printing where to look.
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
	err = withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
		for _, p := range demoTenants {
			_, err := r.Get(ctx, p.Slug)
			if problem.CodeOf(err) == problem.NotFound {
				_, err = r.Create(ctx, p)
				if err == nil {
					fmt.Fprintf(std.out, "created demo tenant %s (%s)\n", p.Slug, p.Placement)
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return serve(ctx, cfg, std, func(addr string) {
		_, port, _ := net.SplitHostPort(addr)
		fmt.Fprintf(std.out, "\nGatehouse is running. Try:\n")
		for _, p := range demoTenants {
			fmt.Fprintf(std.out, "  http://%s.%s:%s/v1/tenant\n", p.Slug, cfg.BaseDomain, port)
		}
		fmt.Fprintf(std.out, "  http://%s:%s/readyz\nStop with Ctrl-C.\n\n", cfg.BaseDomain, port)
	})
}
