package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
)

// operatorApp is the app as operators' commands use it (rotating keys,
// reading audit trails, inviting admins, reconciling permissions, the
// demo tenants of dev): tenant data as gatehouse_app, under row level
// security like the server, with the registry to find tenants and the
// control plane as an administrator (key generations). It runs no
// background work: permission changes it records reach SpiceDB through
// the servers' relays, and its mail through their outbox relays.
type operatorApp struct {
	*app.App
	reg     *tenancy.Registry
	admin   *pgxpool.Pool
	rotator *secrets.Rotator
}

// operatorOptions are what some commands add to the operatorApp.
type operatorOptions struct {
	// settle is how long key rotation lets servers' cached data keys
	// expire.
	settle time.Duration
	// spicedb, for commands that read SpiceDB themselves (reconcile).
	spicedb *rebac.Client
}

// withOperatorApp runs fn with an operatorApp.
func withOperatorApp(ctx context.Context, cfg config, std stdio, o operatorOptions, fn func(*operatorApp) error) error {
	return withRegistry(ctx, cfg, std, func(reg *tenancy.Registry) error {
		v, err := cfg.vault(ctx, nil)
		if err != nil {
			return err
		}
		defer v.Close()
		admin, err := pgxpool.New(ctx, cfg.DatabaseURL)
		if err != nil {
			return fmt.Errorf("database settings: %w", err)
		}
		defer admin.Close()
		appURL, err := cfg.appDatabaseURL()
		if err != nil {
			return err
		}
		issuer, err := cfg.issuer()
		if err != nil {
			return err
		}
		a, err := app.New(ctx, app.Config{
			DatabaseURL: appURL, BaseDomain: cfg.BaseDomain, Issuer: issuer, Vault: v,
			Generations: secrets.ControlPlane(admin), MailFrom: cfg.mailFrom(), SpiceDB: o.spicedb,
			HashWorkers: 1, HashWait: 10 * time.Second, MaxConns: operatorConns,
		})
		if err != nil {
			return err
		}
		defer a.Close()
		return fn(&operatorApp{App: a, reg: reg, admin: admin,
			rotator: secrets.NewRotator(v, a.Data, secrets.ControlPlane(admin), o.settle)})
	})
}

// operatorConns bounds an operator command's connections to a cluster
// (README, "Connection budget").
const operatorConns = 8

func runKeys(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 || args[0] != "rotate" {
		return usageErr("keys: want rotate")
	}
	var cfg config
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	cfg.flags(fs)
	slug := fs.String("tenant", "", "the tenant whose key to rotate")
	all := fs.Bool("all", false, "rotate every tenant's key")
	settle := settleFlag(fs)
	if err := positional(fs, args[1:], std, 0); err != nil {
		return err
	}
	if (*slug == "") == !*all {
		return usageErr("keys rotate: give --tenant SLUG or --all")
	}
	return withOperatorApp(ctx, cfg, std, operatorOptions{settle: *settle}, func(k *operatorApp) error {
		tenants, err := k.tenants(ctx, *slug)
		if err != nil {
			return err
		}
		for i, t := range tenants {
			fmt.Fprintf(std.out, "[%d/%d] %s\n", i+1, len(tenants), t.Slug)
			if err := k.rotator.Rotate(ctx, t, reportTo(std.out, t)); err != nil {
				return fmt.Errorf("rotate %s: %w (run the command again to resume)", t.Slug, err)
			}
			// Token signing: a new key signs from now on; the previous one
			// stays published until every token it signed has expired, and
			// keys that stopped signing longer ago than that are retired.
			kid, err := k.Keys.Rotate(ctx, t)
			if err != nil {
				return fmt.Errorf("rotate %s's signing key: %w", t.Slug, err)
			}
			// A server may sign with a replaced key for KeyCacheTTL after it
			// stopped signing here; its tokens (apps' too) live on.
			retired, err := k.Keys.Retire(ctx, t, identity.MaxTokenLife(t))
			if err != nil {
				return fmt.Errorf("retire %s's signing keys: %w", t.Slug, err)
			}
			fmt.Fprintf(std.out, "  %s: token signing key %s; %d old signing key(s) retired\n", t.Slug, kid, retired)
		}
		return nil
	})
}

// runBYOK is `tenant byok import --tenant S --key-file K`.
func runBYOK(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 || args[0] != "import" {
		return usageErr("tenant byok: want import")
	}
	var cfg config
	fs := flag.NewFlagSet("tenant byok import", flag.ContinueOnError)
	cfg.flags(fs)
	slug := fs.String("tenant", "", "the tenant bringing its key")
	keyFile := fs.String("key-file", "", "file holding the AES-256 key: 32 raw bytes, or base64 or hex")
	settle := settleFlag(fs)
	if err := positional(fs, args[1:], std, 0); err != nil {
		return err
	}
	if *slug == "" || *keyFile == "" {
		return usageErr("tenant byok import: give --tenant SLUG and --key-file FILE")
	}
	raw, err := os.ReadFile(*keyFile)
	if err != nil {
		return problem.Errorf(problem.Invalid, "cannot read the key file %s", *keyFile)
	}
	defer clear(raw)
	key, err := secrets.ParseKeyMaterial(raw) // a copy of its own
	if err != nil {
		return err
	}
	defer clear(key)
	return withOperatorApp(ctx, cfg, std, operatorOptions{settle: *settle}, func(k *operatorApp) error {
		t, err := k.reg.Get(ctx, *slug)
		if err != nil {
			return err
		}
		if err := k.rotator.ImportKey(ctx, t, k.admin, key, reportTo(std.out, t)); err != nil {
			return fmt.Errorf("import key for %s: %w (once the key is imported, `gatehouse keys rotate --tenant %s` finishes moving data to it)", t.Slug, err, t.Slug)
		}
		return nil
	})
}

// settleFlag registers --settle: how long after a key change servers may
// still seal with a data key they got before it.
func settleFlag(fs *flag.FlagSet) *time.Duration {
	return fs.Duration("settle", secrets.DefaultSettle,
		"how long servers may keep sealing with a data key issued before the change (their data-key lifetime)")
}

func (k *operatorApp) tenants(ctx context.Context, slug string) ([]*tenancy.Tenant, error) {
	if slug != "" {
		t, err := k.reg.Get(ctx, slug)
		if err != nil {
			return nil, err
		}
		return []*tenancy.Tenant{t}, nil
	}
	return k.reg.List(ctx)
}

// reportTo prints a rotation's progress, one line per step.
func reportTo(w io.Writer, t *tenancy.Tenant) func(secrets.Progress) {
	return func(p secrets.Progress) {
		switch p.Phase {
		case "rotated":
			fmt.Fprintf(w, "  %s: new key version made\n", t.Slug)
		case "imported":
			fmt.Fprintf(w, "  %s: key imported; new values are sealed with it\n", t.Slug)
		case "rewrap", "final pass":
			fmt.Fprintf(w, "  %s: %s %s: %d re-wrapped, %d left\n", t.Slug, p.Phase, p.Column, p.Rewrapped, p.Remaining)
		case "waiting":
			fmt.Fprintf(w, "  %s: waiting for servers' cached data keys to expire\n", t.Slug)
		case "done":
			fmt.Fprintf(w, "  %s: done; %d values re-wrapped; older key versions retired\n", t.Slug, p.Rewrapped)
		}
	}
}
