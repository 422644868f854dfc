package main

import (
	"context"
	"fmt"
	"net"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// demoTenants are what `gatehouse dev` makes sure exist, with the
// address each one's first admin is invited at.
var demoTenants = []struct {
	tenancy.CreateParams
	admin string
}{
	{tenancy.CreateParams{Slug: "acme", Name: "Acme Inc", Placement: tenancy.Shared}, "admin@acme.test"},
	{tenancy.CreateParams{Slug: "globex", Name: "Globex Corporation", Placement: tenancy.Silo}, "admin@globex.test"},
}

// runDev is for a local machine: migrate, create the demo tenants if they
// are missing (inviting their first admins), and serve, printing where
// to look.
func runDev(ctx context.Context, args []string, std stdio) error {
	cfg, err := configFrom("dev", args, std)
	if err != nil {
		return err
	}
	// A fresh Vault gets its engines before anything needs them.
	v, err := cfg.vault(ctx, nil)
	if err != nil {
		return err
	}
	err = v.EnsureMounts(ctx)
	v.Close()
	if err != nil {
		return err
	}
	if err := cfg.migrate(ctx, std.out); err != nil {
		return err
	}
	var demo demoApp
	err = withOperatorApp(ctx, cfg, std, operatorOptions{}, func(k *operatorApp) error {
		for _, p := range demoTenants {
			_, err := k.reg.Get(ctx, p.Slug)
			if problem.CodeOf(err) != problem.NotFound {
				if err != nil {
					return err
				}
				continue
			}
			t, err := k.reg.Create(ctx, p.CreateParams)
			if err != nil {
				return err
			}
			fmt.Fprintf(std.out, "created demo tenant %s (%s)\n", p.Slug, p.Placement)
			if err := k.inviteAdmin(ctx, std, t, p.admin, "Demo admin"); err != nil {
				return err
			}
		}
		demo, err = k.demoApp(ctx)
		return err
	})
	if err != nil {
		return err
	}
	return serve(ctx, cfg, std, func(at listening) {
		_, port, _ := net.SplitHostPort(at.Addr)
		fmt.Fprintf(std.out, "\nGatehouse is running. Try:\n")
		for _, p := range demoTenants {
			fmt.Fprintf(std.out, "  http://%s.%s:%s/v1/tenant\n", p.Slug, cfg.BaseDomain, port)
		}
		fmt.Fprintf(std.out, "  http://%s:%s/readyz\n", cfg.BaseDomain, port)
		if at.MetricsAddr != "" {
			fmt.Fprintf(std.out, "  http://%s/metrics\n", at.MetricsAddr)
		}
		fmt.Fprintf(std.out, "Sign in to acme's demo app (%s), whose secret is new at each start:\n", demo.clientID)
		fmt.Fprintf(std.out, "  GATEHOUSE_CLIENT_SECRET=%s go run ./examples/webapp \\\n", demo.secret)
		fmt.Fprintf(std.out, "    -issuer http://acme.%s:%s -client-id %s\n", cfg.BaseDomain, port, demo.clientID)
		fmt.Fprintf(std.out, "  then open %s and sign in as admin@acme.test\n", demoAppURL)
		fmt.Fprintf(std.out, "  (choose its password from the invitation in the mail catcher first)\n")
		fmt.Fprintf(std.out, "Stop with Ctrl-C.\n\n")
	})
}

// demoAppURL is where examples/webapp listens by default; the demo app's
// redirect URIs are under it.
const demoAppURL = "http://127.0.0.1:8081"

// demoApp is acme's demo web app and its client secret.
type demoApp struct{ clientID, secret string }

// demoApp makes sure acme has its demo web app (first party, for
// examples/webapp) and gives it a new secret: secrets are shown once, and
// this one is shown at each start.
func (k *operatorApp) demoApp(ctx context.Context) (demoApp, error) {
	const name = "Demo web app"
	t, err := k.reg.Get(ctx, "acme")
	if err != nil {
		return demoApp{}, err
	}
	apps, err := k.Accounts.ListApps(ctx, t, nil, identity.Meta{})
	if err != nil {
		return demoApp{}, err
	}
	for _, a := range apps {
		if a.Name == name {
			r, err := k.Accounts.RotateAppSecret(ctx, t, nil, a.ID, 0, identity.Meta{})
			if err != nil {
				return demoApp{}, err
			}
			return demoApp{a.ClientID, r.ClientSecret}, nil
		}
	}
	a, err := k.Accounts.CreateApp(ctx, t, nil, identity.AppInput{
		Name: name, Kind: identity.AppWeb, FirstParty: true,
		RedirectURIs: []string{demoAppURL + "/callback"}, PostLogoutRedirectURIs: []string{demoAppURL + "/"},
		GrantTypes: []string{identity.GrantAuthorizationCode, identity.GrantRefreshToken},
		Scopes:     []string{"openid", "profile", "email", "offline_access"},
	}, identity.Meta{})
	if err != nil {
		return demoApp{}, err
	}
	return demoApp{a.ClientID, a.ClientSecret}, nil
}
