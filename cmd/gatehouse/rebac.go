package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/gatehouse/gatehouse/rebac"
)

// runRebac is `rebac reconcile (--tenant SLUG | --all) [--dry-run]`.
func runRebac(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 || args[0] != "reconcile" {
		return usageErr("rebac: want reconcile")
	}
	var cfg config
	fs := flag.NewFlagSet("rebac reconcile", flag.ContinueOnError)
	cfg.flags(fs)
	slug := fs.String("tenant", "", "the tenant to reconcile")
	all := fs.Bool("all", false, "reconcile every tenant")
	dryRun := fs.Bool("dry-run", false, "report drift, repair nothing")
	if err := positional(fs, args[1:], std, 0); err != nil {
		return err
	}
	if (*slug == "") == !*all {
		return usageErr("rebac reconcile: give --tenant SLUG or --all")
	}
	client, err := cfg.spicedb()
	if err != nil {
		return err
	}
	defer client.Close()
	return withOperatorApp(ctx, cfg, std, operatorOptions{spicedb: client}, func(k *operatorApp) error {
		if _, err := client.EnsureSchema(ctx); err != nil {
			return err
		}
		authz := k.Authz
		tenants, err := k.tenants(ctx, *slug)
		if err != nil {
			return err
		}
		for _, t := range tenants {
			d, err := authz.Reconcile(ctx, t, *dryRun)
			if err != nil {
				return fmt.Errorf("reconcile %s: %w", t.Slug, err)
			}
			verb := "repaired"
			if *dryRun {
				verb = "found"
			}
			fmt.Fprintf(std.out, "%s: %s %d missing and %d extra relationships\n", t.Slug, verb, len(d.Missing), len(d.Extra))
			for _, r := range d.Missing {
				fmt.Fprintf(std.out, "  + %s\n", rebac.Key(r))
			}
			for _, r := range d.Extra {
				fmt.Fprintf(std.out, "  - %s\n", rebac.Key(r))
			}
		}
		return nil
	})
}
