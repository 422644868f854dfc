package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// registry opens the control plane as an administrator, with Vault for
// tenants' keys and silo credentials.
func (c *config) registry(ctx context.Context, std stdio) (*tenancy.Registry, func(), error) {
	if err := c.requireDatabase(); err != nil {
		return nil, nil, err
	}
	v, err := c.vault(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	pool, err := pgxpool.New(ctx, c.DatabaseURL)
	if err != nil {
		v.Close()
		return nil, nil, fmt.Errorf("database settings: %w", err)
	}
	m := &tenancy.Migrator{Out: std.err, AppPassword: c.AppPassword}
	closeAll := func() { pool.Close(); v.Close() }
	return tenancy.NewRegistry(pool, c.DatabaseURL, c.BaseDomain, v, m), closeAll, nil
}

func runTenant(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 {
		return usageErr("tenant: want one of create, list, show, suspend, resume, delete, domain, byok, admin")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "byok":
		return runBYOK(ctx, args, std)
	case "admin":
		return runTenantAdmin(ctx, args, std)
	}
	var cfg config
	fs := flag.NewFlagSet("tenant "+sub, flag.ContinueOnError)
	cfg.flags(fs)
	asJSON := fs.Bool("json", false, "print JSON")

	switch sub {
	case "create":
		var p tenancy.CreateParams
		var placement string
		fs.StringVar(&p.Slug, "slug", "", "the tenant's slug: its subdomain")
		fs.StringVar(&p.Name, "name", "", "the tenant's display name")
		fs.StringVar(&placement, "placement", "shared", "shared or silo")
		fs.StringVar(&p.SiloCluster, "silo-cluster", "", "admin URL of the cluster for a silo (default: the primary's)")
		fs.StringVar(&p.Plan, "plan", "free", "plan")
		signup := fs.String("signup", "open", "who may sign up: open (anyone) or invite (invited people only)")
		if err := positional(fs, args, std, 0); err != nil {
			return err
		}
		p.Placement = tenancy.Placement(placement)
		p.Signup = tenancy.Signup(*signup)
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			t, err := r.Create(ctx, p)
			if err != nil {
				return err
			}
			return printTenant(std, t, nil, *asJSON, cfg.BaseDomain)
		})
	case "list":
		if err := positional(fs, args, std, 0); err != nil {
			return err
		}
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			ts, err := r.List(ctx)
			if err != nil {
				return err
			}
			if *asJSON {
				out := make([]tenantJSON, len(ts))
				for i, t := range ts {
					out[i] = toJSON(t, nil)
				}
				return json.NewEncoder(std.out).Encode(out)
			}
			w := tabwriter.NewWriter(std.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SLUG\tNAME\tSTATUS\tPLACEMENT\tID")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Slug, t.Name, t.Status, t.Placement, t.ID)
			}
			return w.Flush()
		})
	case "show", "suspend", "resume":
		var slug string
		if err := positional(fs, args, std, 1, &slug); err != nil {
			return err
		}
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			var t *tenancy.Tenant
			var err error
			switch sub {
			case "show":
				t, err = r.Get(ctx, slug)
			case "suspend":
				t, err = r.Suspend(ctx, slug)
			case "resume":
				t, err = r.Resume(ctx, slug)
			}
			if err != nil {
				return err
			}
			ds, err := r.Domains(ctx, slug)
			if err != nil {
				return err
			}
			return printTenant(std, t, ds, *asJSON, cfg.BaseDomain)
		})
	case "delete":
		var slug string
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		if err := positional(fs, args, std, 1, &slug); err != nil {
			return err
		}
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			t, err := r.Get(ctx, slug)
			if err != nil {
				return err
			}
			if !*yes {
				what := "all of its data in the shared database"
				if t.Placement == tenancy.Silo {
					what = "its silo database"
				}
				fmt.Fprintf(std.out, "This deletes tenant %s (%s), %s and its keys, for good:\n"+
					"nothing sealed for it, backups included, can be opened again.\nType the slug to confirm: ", t.Slug, t.Name, what)
				line, _ := bufio.NewReader(std.in).ReadString('\n')
				if strings.TrimSpace(line) != t.Slug {
					return problem.Errorf(problem.Invalid, "not confirmed; nothing was deleted (use --yes in scripts)")
				}
			}
			if err := r.Delete(ctx, slug); err != nil {
				return err
			}
			fmt.Fprintf(std.out, "deleted tenant %s (%s)\n", t.Slug, t.ID)
			return nil
		})
	case "domain":
		return runDomain(ctx, &cfg, fs, args, std)
	}
	return usageErr("tenant: unknown subcommand %q", sub)
}

// runDomain runs "tenant domain ..."; cfg is filled when fs parses.
func runDomain(ctx context.Context, cfg *config, fs *flag.FlagSet, args []string, std stdio) error {
	if len(args) == 0 {
		return usageErr("tenant domain: want add, remove or list")
	}
	sub, args := args[0], args[1:]
	var slug, domain string
	switch sub {
	case "add", "remove":
		if err := positional(fs, args, std, 2, &slug, &domain); err != nil {
			return err
		}
	case "list":
		if err := positional(fs, args, std, 1, &slug); err != nil {
			return err
		}
	default:
		return usageErr("tenant domain: unknown subcommand %q", sub)
	}
	return withRegistry(ctx, *cfg, std, func(r *tenancy.Registry) error {
		switch sub {
		case "add":
			d, err := r.AddDomain(ctx, slug, domain)
			if err != nil {
				return err
			}
			fmt.Fprintf(std.out, "tenant %s is now served at %s\n", slug, d.Name)
		case "remove":
			if err := r.RemoveDomain(ctx, slug, domain); err != nil {
				return err
			}
			fmt.Fprintf(std.out, "removed %s from tenant %s\n", domain, slug)
		case "list":
			ds, err := r.Domains(ctx, slug)
			if err != nil {
				return err
			}
			for _, d := range ds {
				fmt.Fprintln(std.out, d.Name)
			}
		}
		return nil
	})
}

// positional parses flags and requires exactly n positional arguments.
func positional(fs *flag.FlagSet, args []string, std stdio, n int, dst ...*string) error {
	pos, err := parse(fs, args, std)
	if err != nil {
		return err
	}
	if len(pos) != n {
		return usageErr("%s: want %d argument(s), got %d (see gatehouse help)", fs.Name(), n, len(pos))
	}
	for i, p := range pos {
		*dst[i] = p
	}
	return nil
}

func withRegistry(ctx context.Context, cfg config, std stdio, fn func(*tenancy.Registry) error) error {
	r, closeFn, err := cfg.registry(ctx, std)
	if err != nil {
		return err
	}
	defer closeFn()
	return fn(r)
}

type tenantJSON struct {
	ID        string   `json:"id"`
	Slug      string   `json:"slug"`
	Name      string   `json:"name"`
	Status    string   `json:"status"`
	Placement string   `json:"placement"`
	SiloRef   string   `json:"silo_ref,omitempty"`
	Plan      string   `json:"plan"`
	Domains   []string `json:"domains,omitempty"`
	Created   string   `json:"created_at"`
}

func toJSON(t *tenancy.Tenant, ds []*tenancy.Domain) tenantJSON {
	j := tenantJSON{
		ID: t.ID.String(), Slug: t.Slug, Name: t.Name, Status: string(t.Status),
		Placement: string(t.Placement), SiloRef: t.SiloRef, Plan: t.Plan,
		Created: t.CreatedAt.UTC().Format("2006-01-02T15:04:05Z"),
	}
	for _, d := range ds {
		j.Domains = append(j.Domains, d.Name)
	}
	return j
}

func printTenant(std stdio, t *tenancy.Tenant, ds []*tenancy.Domain, asJSON bool, base string) error {
	if asJSON {
		return json.NewEncoder(std.out).Encode(toJSON(t, ds))
	}
	w := tabwriter.NewWriter(std.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "id:\t%s\nslug:\t%s\nname:\t%s\nstatus:\t%s\nplacement:\t%s\n", t.ID, t.Slug, t.Name, t.Status, t.Placement)
	if t.SiloRef != "" {
		fmt.Fprintf(w, "silo:\t%s\n", t.SiloRef)
	}
	fmt.Fprintf(w, "plan:\t%s\nhost:\t%s.%s\n", t.Plan, t.Slug, base)
	for _, d := range ds {
		fmt.Fprintf(w, "domain:\t%s\n", d.Name)
	}
	return w.Flush()
}
