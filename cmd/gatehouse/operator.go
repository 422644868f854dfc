package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/tenancy"
)

// runOperator runs "operator serve" and "operator token create|revoke|list".
func runOperator(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 {
		return usageErr("operator: want serve or token")
	}
	var cfg config
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("operator serve", flag.ContinueOnError)
		cfg.flags(fs)
		addr := fs.String("operator-addr", envOr("GATEHOUSE_OPERATOR_ADDR", "127.0.0.1:8090"), "listen address of the operator API")
		if err := positional(fs, args[1:], std, 0); err != nil {
			return err
		}
		return serveOperator(ctx, cfg, *addr, std, nil)
	case "token":
		if len(args) < 2 {
			return usageErr("operator token: want create, revoke or list")
		}
		sub := args[1]
		fs := flag.NewFlagSet("operator token "+sub, flag.ContinueOnError)
		cfg.flags(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		var name string
		switch sub {
		case "create", "revoke":
			if err := positional(fs, args[2:], std, 1, &name); err != nil {
				return err
			}
		case "list":
			if err := positional(fs, args[2:], std, 0); err != nil {
				return err
			}
		default:
			return usageErr("operator token: unknown subcommand %q", sub)
		}
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			switch sub {
			case "create":
				token, err := r.CreateOperatorToken(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(std.err, "operator %s's token (shown once; keep it in a secret store):\n", name)
				fmt.Fprintln(std.out, token)
			case "revoke":
				if err := r.RevokeOperatorToken(ctx, name); err != nil {
					return err
				}
				fmt.Fprintf(std.out, "revoked operator %s's token\n", name)
			case "list":
				ts, err := r.OperatorTokens(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					return json.NewEncoder(std.out).Encode(ts)
				}
				w := tabwriter.NewWriter(std.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tCREATED\tLAST USED")
				for _, t := range ts {
					used := "never"
					if t.LastUsed != nil {
						used = t.LastUsed.UTC().Format(time.DateTime)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\n", t.Name, t.Created.UTC().Format(time.DateTime), used)
				}
				return w.Flush()
			}
			return nil
		})
	}
	return usageErr("operator: unknown subcommand %q", args[0])
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// serveOperator runs the operator API on addr until ctx ends. ready, if
// set, is called with the listen address once requests are accepted.
func serveOperator(ctx context.Context, cfg config, addr string, std stdio, ready func(string)) error {
	log := cfg.logger(std.err)
	reg, closeReg, err := cfg.registry(ctx, std)
	if err != nil {
		return err
	}
	defer closeReg()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	defer ln.Close()
	// Silo clusters' administrator URLs may hold passwords: environment
	// only.
	var clusters []string
	for c := range strings.SplitSeq(os.Getenv("GATEHOUSE_SILO_CLUSTERS"), ",") {
		if c = strings.TrimSpace(c); c != "" {
			clusters = append(clusters, c)
		}
	}
	op, err := server.NewOperator(reg, tenancy.NewMover(reg), clusters, log)
	if err != nil {
		return err
	}
	defer op.Close()
	retireCtx, stopRetiring := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRetiring()
	go op.RetireDue(retireCtx, time.Minute)
	srv := server.New(server.Config{}, server.Deps{
		Log:   log,
		Ready: map[string]func(context.Context) error{"database": reg.Ready},
		Plain: []func(fiber.Router){op.Routes},
	})
	log.Info("serving the operator API", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	return srv.Serve(ctx, ln, 15*time.Second)
}
