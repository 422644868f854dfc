package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
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
	pc, err := pgxpool.ParseConfig(c.DatabaseURL)
	if err != nil {
		v.Close()
		return nil, nil, problem.Errorf(problem.Invalid, "the database URL is malformed")
	}
	// A move holds a few connections at once (its lock, its fence, a
	// snapshot) besides the ones its steps borrow.
	pc.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, pc)
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
		return usageErr("tenant: want one of create, set, list, show, suspend, resume, delete, domain, promote, demote, move, byok, admin")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "byok":
		return runBYOK(ctx, args, std)
	case "admin":
		return runTenantAdmin(ctx, args, std)
	case "promote":
		return runPlacement(ctx, tenancy.Promote, args, std)
	case "demote":
		return runPlacement(ctx, tenancy.Demote, args, std)
	case "move":
		return runMove(ctx, args, std)
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
		adminEmail := fs.String("admin-email", "", "invite this address as the tenant's first admin")
		adminName := fs.String("admin-name", "", "the first admin's display name")
		if err := positional(fs, args, std, 0); err != nil {
			return err
		}
		p.Placement = tenancy.Placement(placement)
		p.Signup = tenancy.Signup(*signup)
		if *adminEmail == "" {
			return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
				t, err := r.Create(ctx, p)
				if err != nil {
					return err
				}
				return printTenant(std, t, nil, *asJSON, cfg.BaseDomain)
			})
		}
		// A bad address is refused before anything is created.
		if _, err := identity.NormalizeEmail(*adminEmail); err != nil {
			return problem.Errorf(problem.Invalid, "--admin-email: %s", problem.MessageOf(err))
		}
		return withOperatorApp(ctx, cfg, std, operatorOptions{}, func(k *operatorApp) error {
			t, err := k.reg.Create(ctx, p)
			if err != nil {
				return err
			}
			if err := printTenant(std, t, nil, *asJSON, cfg.BaseDomain); err != nil {
				return err
			}
			if err := k.inviteAdmin(ctx, std, t, *adminEmail, *adminName); err != nil {
				return &problem.Error{Code: problem.CodeOf(err), Err: err, Message: fmt.Sprintf(
					"tenant %s was created, but its admin was not invited (%s); invite them with `gatehouse tenant admin invite --tenant %s --email %s`",
					t.Slug, problem.MessageOf(err), t.Slug, *adminEmail)}
			}
			return nil
		})
	case "set":
		var slug string
		signup := fs.String("signup", "", "who may sign up: open or invite")
		verified := fs.String("require-verified-email", "", "true: accounts must confirm their address before signing in")
		ttl := fs.Duration("access-token-ttl", 0, "access tokens' lifetime, 1m to 24h")
		from := fs.String("sender", "", "the tenant's From address (\"\": the server's)")
		fromName := fs.String("sender-name", "", "the name mail comes from (\"\": the tenant's name)")
		replyTo := fs.String("reply-to", "", "where replies to the tenant's mail go (\"\": nowhere)")
		links := fs.String("link-base-url", "", "where mailed links point: the tenant's app pages (\"\": Gatehouse's hosted pages)")
		if err := positional(fs, args, std, 1, &slug); err != nil {
			return err
		}
		var st tenancy.Settings
		var bad error
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "signup":
				st.Signup = (*tenancy.Signup)(signup)
			case "require-verified-email":
				b, err := strconv.ParseBool(*verified)
				if err != nil {
					bad = usageErr("tenant set: --require-verified-email wants true or false")
				}
				st.RequireVerifiedEmail = &b
			case "access-token-ttl":
				st.AccessTokenTTL = ttl
			case "sender":
				st.MailFromAddress = from
			case "sender-name":
				st.MailFromName = fromName
			case "reply-to":
				st.MailReplyTo = replyTo
			case "link-base-url":
				st.LinkBaseURL = links
			}
		})
		if bad != nil {
			return bad
		}
		if st == (tenancy.Settings{}) {
			return usageErr("tenant set: give at least one setting (see gatehouse help)")
		}
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			t, err := r.UpdateSettings(ctx, slug, st)
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
			return purgeRelationships(cfg, std, t.ID)
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

// purgeRelationships removes deleted tenant id's relationships from
// SpiceDB now, when the command may reach it. The servers' purgers do it
// again after a grace period, for writes that were in flight, and record
// it done; without SpiceDB here, theirs is the only purge.
func purgeRelationships(cfg config, std stdio, id tenancy.ID) error {
	if cfg.SpiceDB.Addr == "" {
		fmt.Fprintf(std.out, "its relationships in SpiceDB go when a server next sweeps (%s after the deletion)\n", rebac.PurgeGrace)
		return nil
	}
	client, err := cfg.spicedb()
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.DeleteTenant(context.Background(), id); err != nil {
		return fmt.Errorf("remove the relationships from SpiceDB (the servers will retry): %w", err)
	}
	fmt.Fprintln(std.out, "removed its relationships from SpiceDB")
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
	fmt.Fprintf(w, "signup:\t%s\nverified email required:\t%t\naccess token ttl:\t%s\n", t.Signup, t.RequireVerifiedEmail, t.AccessTokenTTL)
	for _, m := range [][2]string{{"mail from", t.MailFromAddress}, {"mail from name", t.MailFromName}, {"mail reply-to", t.MailReplyTo}, {"link base url", t.LinkBaseURL}} {
		if m[1] != "" {
			fmt.Fprintf(w, "%s:\t%s\n", m[0], m[1])
		}
	}
	for _, d := range ds {
		fmt.Fprintf(w, "domain:\t%s\n", d.Name)
	}
	return w.Flush()
}
