package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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

// listening is where a running server takes requests, and serves its
// metrics ("" when it does not).
type listening struct{ Addr, MetricsAddr string }

// serve runs the server until ctx ends. ready, if set, is called with the
// listen addresses once requests are accepted.
func serve(ctx context.Context, cfg config, std stdio, ready func(listening)) error {
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
	sharedConns, err := cfg.dbBudget()
	if err != nil {
		return err
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
	poolCfg, err := pgxpool.ParseConfig(appURL)
	if err != nil {
		return problem.Errorf(problem.Invalid, "the app database URL is malformed")
	}
	poolCfg.MaxConns = int32(sharedConns)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return fmt.Errorf("database settings: %w", err)
	}
	defer pool.Close()
	primary, err := tenancy.ClusterOf(appURL)
	if err != nil {
		return err
	}

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
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	at := listening{Addr: ln.Addr().String()}
	if cfg.MetricsAddr != "" {
		if at.MetricsAddr, err = serveMetrics(ctx, cfg.MetricsAddr, metrics, log); err != nil {
			return err
		}
	}
	issuer := func(t *tenancy.Tenant) string { return strings.ReplaceAll(publicURL, "{tenant}", t.Slug) }

	// The change subscription holds one connection beside the shared
	// pool's.
	silos := tenancy.NewSiloPools(vault, tenancy.SiloPoolOptions{
		ClusterConns: cfg.DBMaxConns, Reserve: map[string]int{primary: sharedConns + 1},
	})
	defer silos.Close()
	data := tenancy.NewDB(pool, silos)
	sealer := secrets.NewSealer(vault, secrets.ControlPlane(pool), secrets.SealerOptions{})
	defer sealer.Close()
	keys := identity.NewKeys(data, sealer, secrets.AAD)
	outbox := mail.NewOutbox(sealer, secrets.AAD)
	resolver := tenancy.NewResolver(pool, cfg.BaseDomain, log)
	data.Relocated = resolver.ByID
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
	resolver.OnResync = keys.ForgetAll

	runCtx, stopResolver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopResolver()
	go resolver.Run(runCtx)
	go vault.Watch(runCtx, 2*time.Second)
	go ensureSchema(runCtx, spicedb, log)
	go relay.Run(runCtx)
	go rebac.NewPurger(pool, spicedb, log).Run(runCtx, time.Minute)
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
		Routes: []func(fiber.Router){accounts.Routes, rebac.NewHTTP(authz, accounts, rebac.HTTPOptions{
			AuditSample: cfg.CheckAuditSample, Metrics: rebac.NewMetrics(metrics),
		}).Routes},
	})
	log.Info("serving", "addr", at.Addr, "base_domain", cfg.BaseDomain, "metrics", at.MetricsAddr)
	if ready != nil {
		ready(at)
	}
	return srv.Serve(ctx, ln, 15*time.Second)
}

// serveMetrics serves reg's metrics at /metrics on addr, for Prometheus,
// until ctx ends, and returns the address it listens on. Keep addr off the
// public network: the metrics name tenants.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen on %s for metrics: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return ln.Addr().String(), nil
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
