package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/problem"
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
		var l operatorListen
		fs.StringVar(&l.Addr, "operator-addr", envOr("GATEHOUSE_OPERATOR_ADDR", "127.0.0.1:8090"), "listen address of the operator API")
		fs.StringVar(&l.TLSCert, "operator-tls-cert", envOr("GATEHOUSE_OPERATOR_TLS_CERT", ""), "PEM file of the operator API's TLS certificate (chain); needed off loopback")
		fs.StringVar(&l.TLSKey, "operator-tls-key", envOr("GATEHOUSE_OPERATOR_TLS_KEY", ""), "PEM file of its private key")
		if err := positional(fs, args[1:], std, 0); err != nil {
			return err
		}
		return serveOperator(ctx, cfg, l, std, nil)
	case "token":
		if len(args) < 2 {
			return usageErr("operator token: want create, revoke or list")
		}
		sub := args[1]
		fs := flag.NewFlagSet("operator token "+sub, flag.ContinueOnError)
		cfg.flags(fs)
		asJSON := fs.Bool("json", false, "print JSON")
		scope, expiresIn := new(string), new(time.Duration)
		if sub == "create" {
			fs.StringVar(scope, "scope", "read", "what the new token may do, comma-separated: read (follow moves), move (promote, demote, resume, abort), retire (remove old copies)")
			fs.DurationVar(expiresIn, "expires-in", tenancy.DefaultOperatorTokenTTL, "how long the new token lives, e.g. 720h; at most 8760h (a year)")
		}
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
		var opts tenancy.OperatorTokenOptions
		if sub == "create" {
			var err error
			if opts.Scopes, err = tenancy.ParseScopes(*scope); err != nil {
				return problem.Errorf(problem.Invalid, "--scope: %s", problem.MessageOf(err))
			}
			if *expiresIn < time.Minute || *expiresIn > tenancy.MaxOperatorTokenTTL {
				return problem.Errorf(problem.Invalid, "--expires-in must be from 1m to 8760h (a year), e.g. 720h")
			}
			opts.TTL = *expiresIn
		}
		return withRegistry(ctx, cfg, std, func(r *tenancy.Registry) error {
			switch sub {
			case "create":
				token, err := r.CreateOperatorToken(ctx, name, opts)
				if err != nil {
					return err
				}
				fmt.Fprintf(std.err, "operator %s's token, with scope %s, expires %s (shown once; keep it in a secret store):\n",
					name, scopeList(opts.Scopes), time.Now().Add(opts.TTL).UTC().Format(time.DateTime))
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
				fmt.Fprintln(w, "NAME\tSCOPES\tCREATED\tEXPIRES\tLAST USED")
				for _, t := range ts {
					used := "never"
					if t.LastUsed != nil {
						used = t.LastUsed.UTC().Format(time.DateTime)
					}
					expires := t.Expires.UTC().Format(time.DateTime)
					if !t.Expires.After(time.Now()) {
						expires += " (expired)"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.Name, scopeList(t.Scopes), t.Created.UTC().Format(time.DateTime), expires, used)
				}
				return w.Flush()
			}
			return nil
		})
	}
	return usageErr("operator: unknown subcommand %q", args[0])
}

// scopeList is scopes as token create takes them; none is read only.
func scopeList(scopes []tenancy.Scope) string {
	if len(scopes) == 0 {
		return string(tenancy.ScopeRead)
	}
	ss := make([]string, len(scopes))
	for i, s := range scopes {
		ss[i] = string(s)
	}
	return strings.Join(ss, ",")
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// operatorListen is where the operator API listens, and its TLS
// certificate and key files.
type operatorListen struct{ Addr, TLSCert, TLSKey string }

// tlsConfig returns the operator API's TLS configuration: nil for plain
// HTTP, which only a loopback address may serve, since operator tokens
// and tenants' moves must not cross a network in the clear.
func (l operatorListen) tlsConfig() (*tls.Config, error) {
	if (l.TLSCert == "") != (l.TLSKey == "") {
		return nil, problem.Errorf(problem.Invalid, "give both --operator-tls-cert and --operator-tls-key, or neither")
	}
	if l.TLSCert == "" {
		if !loopback(l.Addr) {
			return nil, problem.Errorf(problem.Invalid,
				"the operator API would listen on %s without TLS: give --operator-tls-cert and --operator-tls-key "+
					"(GATEHOUSE_OPERATOR_TLS_CERT, GATEHOUSE_OPERATOR_TLS_KEY), or a loopback --operator-addr such as 127.0.0.1:8090", l.Addr)
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.TLSCert, l.TLSKey)
	if err != nil {
		// The error names files and what is wrong with them, never their
		// contents.
		return nil, problem.Wrap(problem.Invalid, err, "cannot load the operator API's TLS certificate and key: "+err.Error())
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// loopback reports whether addr (host:port) listens on this machine
// only: localhost, 127.0.0.0/8 or ::1. An empty host is every interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// serveOperator runs the operator API as l says until ctx ends. ready, if
// set, is called with the listen address once requests are accepted.
func serveOperator(ctx context.Context, cfg config, l operatorListen, std stdio, ready func(string)) error {
	log := cfg.logger(std.err)
	// Refuse an unsafe address before touching anything.
	tlsConfig, err := l.tlsConfig()
	if err != nil {
		return err
	}
	reg, closeReg, err := cfg.registry(ctx, std)
	if err != nil {
		return err
	}
	defer closeReg()
	ln, err := net.Listen("tcp", l.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", l.Addr, err)
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
	mover := tenancy.NewMover(reg)
	mover.Log = log
	defer mover.Close()
	op, err := tenancy.NewOperatorHTTP(reg, mover, clusters, log)
	if err != nil {
		return err
	}
	retireCtx, stopRetiring := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRetiring()
	go mover.RetireDueEvery(retireCtx, time.Minute)
	srv := server.New(server.Config{}, server.Deps{
		Log:   log,
		Ready: map[string]func(context.Context) error{"database": reg.Ready},
		Plain: []func(fiber.Router){op.Routes},
	})
	addr := ln.Addr().String()
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	log.Info("serving the operator API", "addr", addr, "tls", tlsConfig != nil)
	if ready != nil {
		ready(addr)
	}
	return srv.Serve(ctx, ln, 15*time.Second)
}
