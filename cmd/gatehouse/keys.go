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
	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/tenancy"
)

// keyTools is what key rotation and import need: the registry to find
// tenants, the control plane as an administrator (key generations), and
// tenant data as gatehouse_app, under row level security like the server.
type keyTools struct {
	reg     *tenancy.Registry
	admin   *pgxpool.Pool
	data    *tenancy.DB
	rotator *secrets.Rotator
	signing *identity.Keys
	// accounts acts on an operator's authority: it writes invitations
	// to the outbox, which the servers' relays send.
	accounts *identity.Service
}

func withKeyTools(ctx context.Context, cfg config, std stdio, settle time.Duration, fn func(*keyTools) error) error {
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
		app, err := pgxpool.New(ctx, appURL)
		if err != nil {
			return fmt.Errorf("database settings: %w", err)
		}
		defer app.Close()
		silos := tenancy.NewSiloPools(v, tenancy.SiloPoolOptions{})
		defer silos.Close()
		data := tenancy.NewDB(app, silos)
		sealer := secrets.NewSealer(v, secrets.ControlPlane(admin), secrets.SealerOptions{})
		defer sealer.Close()
		signing := identity.NewKeys(data, sealer, secrets.AAD)
		issuer, err := cfg.issuer()
		if err != nil {
			return err
		}
		return fn(&keyTools{
			reg: reg, admin: admin, data: data,
			rotator: secrets.NewRotator(v, data, secrets.ControlPlane(admin), settle),
			signing: signing,
			accounts: identity.NewService(data, identity.NewHasher(identity.DefaultHashParams, 1, 10*time.Second), signing, identity.Config{
				Issuer: issuer, Outbox: mail.NewOutbox(sealer, secrets.AAD), MailFrom: cfg.mailFrom(),
				// Operators' commands record permission changes; the
				// servers' relays carry them to SpiceDB, and every check
				// delivers what waits first.
				Authorizer: rebac.NewService(data, nil, nil, nil),
			}),
		})
	})
}

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
	return withKeyTools(ctx, cfg, std, *settle, func(k *keyTools) error {
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
			kid, err := k.signing.Rotate(ctx, t)
			if err != nil {
				return fmt.Errorf("rotate %s's signing key: %w", t.Slug, err)
			}
			// A server may sign with a replaced key for KeyCacheTTL after it
			// stopped signing here; its tokens live AccessTokenTTL.
			retired, err := k.signing.Retire(ctx, t, identity.KeyCacheTTL+t.AccessTokenTTL+identity.Leeway)
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
	return withKeyTools(ctx, cfg, std, *settle, func(k *keyTools) error {
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

func (k *keyTools) tenants(ctx context.Context, slug string) ([]*tenancy.Tenant, error) {
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
