package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// runApp is `app create|list|show|delete|rotate-secret --tenant SLUG …`:
// a platform operator registers a tenant's OpenID Connect apps (the
// tenant's admins use /v1/admin/apps). Every change is audited in the
// tenant's trail, by "operator".
func runApp(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 {
		return usageErr("app: want create, list, show, delete or rotate-secret")
	}
	sub, args := args[0], args[1:]
	var cfg config
	fs := flag.NewFlagSet("app "+sub, flag.ContinueOnError)
	cfg.flags(fs)
	slug := fs.String("tenant", "", "the tenant whose apps these are")
	asJSON := fs.Bool("json", false, "print JSON")
	var ref string
	var run func(k *operatorApp, t *tenancy.Tenant) error
	switch sub {
	case "create":
		in, finish := appInputFlags(fs)
		if err := positional(fs, args, std, 0); err != nil {
			return err
		}
		if err := finish(); err != nil {
			return err
		}
		run = func(k *operatorApp, t *tenancy.Tenant) error {
			a, err := k.Accounts.CreateApp(ctx, t, nil, *in, identity.Meta{})
			if err != nil {
				return err
			}
			if a.ClientSecret != "" {
				fmt.Fprintln(std.err, "the client secret is shown once: keep it in a secret store")
			}
			if *asJSON {
				return json.NewEncoder(std.out).Encode(a)
			}
			return printApp(std.out, a.App, a.ClientSecret)
		}
	case "list":
		if err := positional(fs, args, std, 0); err != nil {
			return err
		}
		run = func(k *operatorApp, t *tenancy.Tenant) error {
			apps, err := k.Accounts.ListApps(ctx, t, nil, identity.Meta{})
			if err != nil {
				return err
			}
			if *asJSON {
				return json.NewEncoder(std.out).Encode(apps)
			}
			w := tabwriter.NewWriter(std.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CLIENT_ID\tNAME\tKIND\tDISABLED\tID")
			for _, a := range apps {
				fmt.Fprintf(w, "%s\t%s\t%s\t%t\t%s\n", a.ClientID, a.Name, a.Kind, a.Disabled, a.ID)
			}
			return w.Flush()
		}
	case "show":
		if err := positional(fs, args, std, 1, &ref); err != nil {
			return err
		}
		run = func(k *operatorApp, t *tenancy.Tenant) error {
			id, err := appRef(ctx, k, t, ref)
			if err != nil {
				return err
			}
			a, err := k.Accounts.GetApp(ctx, t, nil, id, identity.Meta{})
			if err != nil {
				return err
			}
			if *asJSON {
				return json.NewEncoder(std.out).Encode(a)
			}
			return printApp(std.out, a, "")
		}
	case "delete":
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		if err := positional(fs, args, std, 1, &ref); err != nil {
			return err
		}
		run = func(k *operatorApp, t *tenancy.Tenant) error {
			id, err := appRef(ctx, k, t, ref)
			if err != nil {
				return err
			}
			a, err := k.Accounts.GetApp(ctx, t, nil, id, identity.Meta{})
			if err != nil {
				return err
			}
			if !*yes {
				fmt.Fprintf(std.out, "This deletes app %s (%s) of %s and its secrets: it can sign no one in any more.\n"+
					"Type its client id to confirm: ", a.Name, a.ClientID, t.Slug)
				line, _ := bufio.NewReader(std.in).ReadString('\n')
				if strings.TrimSpace(line) != a.ClientID {
					return problem.Errorf(problem.Invalid, "not confirmed; nothing was deleted (use --yes in scripts)")
				}
			}
			if err := k.Accounts.DeleteApp(ctx, t, nil, id, identity.Meta{}); err != nil {
				return err
			}
			fmt.Fprintf(std.out, "deleted app %s (%s) of %s\n", a.Name, a.ClientID, t.Slug)
			return nil
		}
	case "rotate-secret":
		overlap := fs.Duration("overlap", identity.DefaultSecretOverlap, "how long the replaced secret stays valid (0 to 168h; 0 ends it now)")
		if err := positional(fs, args, std, 1, &ref); err != nil {
			return err
		}
		run = func(k *operatorApp, t *tenancy.Tenant) error {
			id, err := appRef(ctx, k, t, ref)
			if err != nil {
				return err
			}
			r, err := k.Accounts.RotateAppSecret(ctx, t, nil, id, *overlap, identity.Meta{})
			if err != nil {
				return err
			}
			if r.PreviousSecretExpiresAt != nil {
				fmt.Fprintf(std.err, "new client secret (shown once); the previous one stays valid until %s:\n", r.PreviousSecretExpiresAt.Format(time.RFC3339))
			} else {
				fmt.Fprintln(std.err, "new client secret (shown once); no previous secret stays valid:")
			}
			if *asJSON {
				return json.NewEncoder(std.out).Encode(r)
			}
			fmt.Fprintln(std.out, r.ClientSecret)
			return nil
		}
	default:
		return usageErr("app: unknown subcommand %q (want create, list, show, delete or rotate-secret)", sub)
	}
	if *slug == "" {
		return usageErr("app %s: give --tenant SLUG", sub)
	}
	return withOperatorApp(ctx, cfg, std, operatorOptions{}, func(k *operatorApp) error {
		t, err := k.reg.Get(ctx, *slug)
		if err != nil {
			return err
		}
		return run(k, t)
	})
}

// listFlag is a flag given once per value.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// appInputFlags registers app create's flags on fs, and returns the input
// they fill and the function that finishes it once fs has parsed.
func appInputFlags(fs *flag.FlagSet) (*identity.AppInput, func() error) {
	in := &identity.AppInput{}
	var redirects, logouts listFlag
	fs.StringVar(&in.Name, "name", "", "the app's name, as users see it")
	fs.StringVar(&in.Kind, "kind", "", "web (confidential), spa or native (public, PKCE) or machine (client_credentials)")
	fs.Var(&redirects, "redirect-uri", "a redirect URI, matched exactly (repeat for more)")
	fs.Var(&logouts, "post-logout-redirect-uri", "a post-logout redirect URI (repeat for more)")
	grants := fs.String("grant-types", "", "comma-separated: authorization_code, refresh_token, client_credentials (default: the kind's)")
	scopes := fs.String("scopes", "", "comma-separated: openid, profile, email, offline_access (default: openid,profile,email; \"\" for none)")
	fs.StringVar(&in.TokenEndpointAuthMethod, "auth-method", "", "client_secret_basic (default for web and machine), client_secret_post or private_key_jwt")
	jwksFile := fs.String("jwks-file", "", "private_key_jwt: a file holding the app's public keys as a JWK Set")
	fs.DurationVar(&in.AccessTokenTTL, "access-token-ttl", 0, "the app's access tokens' lifetime, 1m to 24h (default: the tenant's)")
	fs.BoolVar(&in.FirstParty, "first-party", false, "the tenant's own app: users are not asked for consent")
	fs.StringVar(&in.IDTokenAlg, "id-token-alg", "", "EdDSA (default) or RS256")
	fs.BoolVar(&in.Disabled, "disabled", false, "register the app disabled")
	return in, func() error {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		in.RedirectURIs, in.PostLogoutRedirectURIs = redirects, logouts
		if given["grant-types"] {
			in.GrantTypes = splitList(*grants)
		}
		if given["scopes"] {
			in.Scopes = splitList(*scopes)
		}
		if *jwksFile != "" {
			f, err := os.Open(*jwksFile)
			if err != nil {
				return problem.Errorf(problem.Invalid, "cannot read the JWKS file %s", *jwksFile)
			}
			defer f.Close()
			// One byte over the limit is enough for the service to refuse.
			b, err := io.ReadAll(io.LimitReader(f, 64<<10))
			if err != nil {
				return problem.Errorf(problem.Invalid, "cannot read the JWKS file %s", *jwksFile)
			}
			in.JWKS = b
		}
		return nil
	}
}

// splitList splits a comma-separated flag value; "" is the empty list.
func splitList(s string) []string {
	out := []string{}
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// appRef finds the app ref names: its id, or its client id.
func appRef(ctx context.Context, k *operatorApp, t *tenancy.Tenant, ref string) (uuid.UUID, error) {
	if id, err := uuid.Parse(ref); err == nil {
		return id, nil
	}
	a, err := k.Accounts.AppByClientID(ctx, t, ref)
	if err != nil {
		return uuid.Nil, err
	}
	return a.ID, nil
}

func printApp(out io.Writer, a *identity.App, secret string) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	ttl := "the tenant's"
	if a.AccessTokenTTL > 0 {
		ttl = (time.Duration(a.AccessTokenTTL) * time.Second).String()
	}
	fmt.Fprintf(w, "id:\t%s\nclient id:\t%s\nname:\t%s\nkind:\t%s\ntoken endpoint auth:\t%s\npkce required:\t%t\n",
		a.ID, a.ClientID, a.Name, a.Kind, a.TokenEndpointAuthMethod, a.PKCERequired)
	for _, u := range a.RedirectURIs {
		fmt.Fprintf(w, "redirect uri:\t%s\n", u)
	}
	for _, u := range a.PostLogoutRedirectURIs {
		fmt.Fprintf(w, "post-logout redirect uri:\t%s\n", u)
	}
	fmt.Fprintf(w, "grant types:\t%s\nscopes:\t%s\naccess token ttl:\t%s\nfirst party:\t%t\nid token alg:\t%s\ndisabled:\t%t\n",
		strings.Join(a.GrantTypes, ", "), strings.Join(a.Scopes, ", "), ttl, a.FirstParty, a.IDTokenAlg, a.Disabled)
	if len(a.JWKS) > 0 {
		fmt.Fprintf(w, "jwks:\t%s\n", a.JWKS)
	}
	for _, s := range a.Secrets {
		until := "until rotated"
		if s.ExpiresAt != nil {
			until = "until " + s.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "secret:\t%s, made %s, valid %s\n", s.ID, s.CreatedAt.UTC().Format(time.RFC3339), until)
	}
	if secret != "" {
		fmt.Fprintf(w, "client secret:\t%s\n", secret)
	}
	return w.Flush()
}
