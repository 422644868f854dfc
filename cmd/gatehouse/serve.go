package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

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

	silos := tenancy.NewSiloPools(vault, tenancy.SiloPoolOptions{})
	defer silos.Close()
	resolver := tenancy.NewResolver(pool, cfg.BaseDomain, log)
	// A tenant that changed may have moved or been deleted: let its silo
	// pool go; the next request opens the right one.
	resolver.OnChange = silos.Forget

	runCtx, stopResolver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopResolver()
	go resolver.Run(runCtx)
	go vault.Watch(runCtx, 2*time.Second)

	srv := server.New(server.Config{}, server.Deps{
		Log:      log,
		Resolver: resolver,
		Ready: map[string]func(context.Context) error{
			"database": func(ctx context.Context) error { return tenancy.SchemaCurrent(ctx, pool, true) },
			"vault":    func(context.Context) error { return vault.Healthy() },
		},
	})
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	log.Info("serving", "addr", ln.Addr().String(), "base_domain", cfg.BaseDomain)
	if ready != nil {
		ready(ln.Addr().String())
	}
	return srv.Serve(ctx, ln, 15*time.Second)
}
