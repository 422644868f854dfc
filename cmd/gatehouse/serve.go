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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatehouse/gatehouse/identity/mail"
	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/problem"
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
	// Libraries that log through slog's default (the OpenID Connect
	// provider's refusals) log as the server does.
	slog.SetDefault(log)
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
	var smtp mail.Sender
	if cfg.SMTPURL != "" {
		sc, err := mail.ParseSMTPURL(cfg.SMTPURL, cfg.SMTPPassword)
		if err != nil {
			return problem.Wrap(problem.Invalid, err, "--smtp-url: "+err.Error())
		}
		smtp = mail.NewSMTP(sc)
	} else {
		log.Warn("no SMTP server configured (--smtp-url): mail waits in the tenants' outboxes until one is")
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

	a, err := app.New(ctx, app.Config{
		DatabaseURL:      appURL,
		BaseDomain:       cfg.BaseDomain,
		Issuer:           func(t *tenancy.Tenant) string { return strings.ReplaceAll(publicURL, "{tenant}", t.Slug) },
		Vault:            vault,
		SpiceDB:          spicedb,
		SMTP:             smtp,
		MailFrom:         cfg.mailFrom(),
		Limits:           cfg.rateLimits(),
		MaxConns:         cfg.DBMaxConns,
		SharedConns:      sharedConns,
		CheckAuditSample: cfg.CheckAuditSample,
		Metrics:          metrics,
		Log:              log,
	})
	if err != nil {
		return err
	}
	defer a.Close()
	runCtx, stopRunning := context.WithCancel(context.WithoutCancel(ctx))
	running := make(chan struct{})
	go func() { a.Run(runCtx); close(running) }()
	defer func() { stopRunning(); <-running }()
	go vault.Watch(runCtx, 2*time.Second)

	srv := server.New(server.Config{}, server.Deps{
		Log:      log,
		Resolver: a.Resolver,
		Ready: map[string]func(context.Context) error{
			"database": func(ctx context.Context) error { return tenancy.SchemaCurrent(ctx, a.Pool, true) },
			"vault":    func(context.Context) error { return vault.Healthy() },
			"spicedb":  spicedb.Healthy,
		},
		Routes: a.Routes(),
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
