package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/tenancy"
)

func runServe(ctx context.Context, args []string, std stdio) error {
	cfg, err := configFrom("serve", args, std)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, std, nil)
}

// serve runs the server until ctx ends. ready, if set, is called with the
// listen address once requests are accepted.
func serve(ctx context.Context, cfg config, std stdio, ready func(addr string)) error {
	log := cfg.logger(std.err)
	if err := cfg.requireDatabase(); err != nil {
		return err
	}
	if cfg.CheckAuditSample < 0 || cfg.CheckAuditSample > 1 {
		return problem.Errorf(problem.Invalid, "--check-audit-sample must be a number from 0 to 1")
	}
	if cfg.RateLimits != "on" && cfg.RateLimits != "off" {
		return problem.Errorf(problem.Invalid, "--rate-limits must be on or off")
	}
	var smtp *mail.SMTP
	if cfg.SMTPURL != "" {
		sc, err := mail.ParseSMTPURL(cfg.SMTPURL, cfg.SMTPPassword)
		if err != nil {
			return problem.Wrap(problem.Invalid, err, "--smtp-url: "+err.Error())
		}
		smtp = mail.NewSMTP(sc)
	}
	spicedb, err := cfg.spicedb()
	if err != nil {
		return err
	}
	defer spicedb.Close()
	appURL, err := cfg.appDatabaseURL()
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, appURL)
	if err != nil {
		return fmt.Errorf("database settings: %w", err)
	}
	defer pool.Close()

	vault, err := cfg.vault(ctx, log)
	if err != nil {
		return err
	}
	defer vault.Close()
	// On a fresh Vault, create the engines Gatehouse needs. A policy that
	// may not manage mounts expects them in place: say so and go on;
	// /readyz and the first request will tell if they are missing.
	if err := vault.EnsureMounts(ctx); err != nil {
		log.Warn("could not check Vault's secrets engines", "err", err)
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	publicURL, err := cfg.publicURL(ln.Addr())
	if err != nil {
		return err
	}
	issuer := func(t *tenancy.Tenant) string { return strings.ReplaceAll(publicURL, "{tenant}", t.Slug) }

	silos := tenancy.NewSiloPools(vault, tenancy.SiloPoolOptions{})
	defer silos.Close()
	data := tenancy.NewDB(pool, silos)
	sealer := secrets.NewSealer(vault, secrets.ControlPlane(pool), secrets.SealerOptions{})
	defer sealer.Close()
	keys := identity.NewKeys(data, sealer, secrets.AAD)
	outbox := mail.NewOutbox(sealer, secrets.AAD)
	resolver := tenancy.NewResolver(pool, cfg.BaseDomain, log)
	relay := rebac.NewRelay(data, resolver.Live, spicedb, rebac.RelayOptions{Log: log})
	authz := rebac.NewService(data, spicedb, relay, log)
	accounts := identity.NewService(data, identity.NewHasher(identity.DefaultHashParams, 0, 2*time.Second), keys,
		identity.Config{
			Issuer:     issuer,
			Limits:     cfg.rateLimits(),
			Outbox:     outbox,
			MailFrom:   cfg.mailFrom(),
			Authorizer: authz,
		})

	// A tenant that changed may have moved, rotated keys or been deleted:
	// drop what is cached of it; the next request loads it afresh.
	resolver.OnChange = func(id tenancy.ID) {
		silos.Forget(id)
		sealer.Forget(id)
		keys.Forget(id)
	}

	runCtx, stopResolver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopResolver()
	go resolver.Run(runCtx)
	go vault.Watch(runCtx, 2*time.Second)
	go ensureSchema(runCtx, spicedb, log)
	go relay.Run(runCtx)
	if smtp != nil {
		relay := mail.NewRelay(data, resolver.Live, outbox, smtp, mail.RelayOptions{Log: log})
		go relay.Run(runCtx)
	} else {
		log.Warn("no SMTP server configured (--smtp-url): mail waits in the tenants' outboxes until one is")
	}

	srv := server.New(server.Config{}, server.Deps{
		Log:      log,
		Resolver: resolver,
		Ready: map[string]func(context.Context) error{
			"database": func(ctx context.Context) error { return tenancy.SchemaCurrent(ctx, pool, true) },
			"vault":    func(context.Context) error { return vault.Healthy() },
			"spicedb":  spicedb.Healthy,
		},
		Routes: []func(fiber.Router){accounts.Routes, rebac.NewHTTP(authz, accounts, cfg.CheckAuditSample).Routes},
	})
	log.Info("serving", "addr", ln.Addr().String(), "base_domain", cfg.BaseDomain)
	if ready != nil {
		ready(ln.Addr().String())
	}
	return srv.Serve(ctx, ln, 15*time.Second)
}

// ensureSchema applies the permission schema, retrying while SpiceDB is
// unreachable: until then permission checks answer 503.
func ensureSchema(ctx context.Context, c *rebac.Client, log *slog.Logger) {
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		wrote, err := c.EnsureSchema(ctx)
		if err == nil {
			if wrote {
				log.Info("applied the permission schema to SpiceDB")
			}
			return
		}
		log.Warn("cannot apply the permission schema to SpiceDB; retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}
