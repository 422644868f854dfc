package client_test

// The examples run against a real Gatehouse (Postgres, Vault, SpiceDB,
// started by apptest for this test binary): tenant acme, its account
// alice, and an app account holding the tenant's manage_apps permission
// through a custom role. See TestMain.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"testing"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/client"
	"github.com/gatehouse/gatehouse/internal/app/apptest"
	"github.com/gatehouse/gatehouse/internal/proctest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// What the examples are given: a tenant's URL (its token issuer), how to
// reach it, alice's access token and id, and the app account's token.
var (
	exampleURL      string
	httpClient      *http.Client
	aliceToken      string
	aliceID         string
	appToken        string
	exampleOtherURL string // another tenant's URL
)

func TestMain(m *testing.M) {
	env, tb, stop := apptest.Background(apptest.Options{})
	proctest.AtExit(stop)
	ctx := context.Background()
	for _, slug := range []string{"acme", "globex"} {
		if _, err := env.Registry.Create(ctx, tenancy.CreateParams{Slug: slug, Name: slug}); err != nil {
			panic(err)
		}
	}
	acme, err := env.Registry.Get(ctx, "acme")
	if err != nil {
		panic(err)
	}
	exampleURL, exampleOtherURL = apptest.Issuer(acme), "https://globex.gatehouse.test"
	httpClient = env.HTTPClient()
	c := env.Client(tb)
	const password = "correct-horse-battery-staple-42"
	signIn := func(email string) identity.Tokens {
		c.Must(202, "POST", "acme", "/v1/auth/signup", "", map[string]string{"email": email, "password": password})
		if _, err := env.Admin.Exec(ctx, "update app.users set email_verified_at = now() where email = $1", email); err != nil {
			panic(err)
		}
		var tok identity.Tokens
		c.Must(200, "POST", "acme", "/v1/auth/login", "", map[string]string{"email": email, "password": password}).JSON(tb, &tok)
		return tok
	}
	// The tenant's admin gives the app's account a role with manage_apps.
	admin := signIn("admin@acme.example")
	if _, err := env.Accounts.SetRole(ctx, acme, "admin@acme.example", identity.RoleAdmin); err != nil {
		panic(err)
	}
	app := signIn("app@acme.example")
	var me identity.User
	c.Must(200, "GET", "acme", "/v1/me", app.AccessToken, nil).JSON(tb, &me)
	var role struct{ ID string }
	c.Must(201, "POST", "acme", "/v1/admin/roles", admin.AccessToken, map[string]any{"name": "app", "permissions": []string{"manage_apps"}}).JSON(tb, &role)
	c.Must(204, "POST", "acme", "/v1/admin/roles/"+role.ID+"/assignments", admin.AccessToken, map[string]string{"type": "user", "id": me.ID.String()})
	appToken = app.AccessToken
	alice := signIn("alice@acme.example")
	aliceToken = alice.AccessToken
	c.Must(200, "GET", "acme", "/v1/me", aliceToken, nil).JSON(tb, &me)
	aliceID = me.ID.String()
	proctest.Main(m)
}

// A SaaS app verifies its users' access tokens offline, against the
// tenant's published keys, and tells a bad token (sign in again) from
// keys it could not get (try again).
func ExampleClient_VerifyAccessToken() {
	ctx := context.Background()
	acme, err := client.New(exampleURL, client.Options{HTTPClient: httpClient})
	if err != nil {
		log.Fatal(err)
	}
	claims, err := acme.VerifyAccessToken(ctx, aliceToken)
	if _, down := errors.AsType[*client.KeysUnavailableError](err); down {
		log.Fatal("keys unavailable: answer 503, the user keeps the token")
	}
	if err != nil {
		log.Fatal("bad token: answer 401")
	}
	fmt.Println("alice:", claims.Subject == aliceID)

	// The same token means nothing to another tenant.
	globex, err := client.New(exampleOtherURL, client.Options{HTTPClient: httpClient})
	if err != nil {
		log.Fatal(err)
	}
	_, err = globex.VerifyAccessToken(ctx, aliceToken)
	fmt.Println("on another tenant:", errors.Is(err, client.ErrInvalidToken))
	// Output:
	// alice: true
	// on another tenant: true
}

// An app shares a document with alice, then checks her access at the
// consistency token the write returned, so that the check sees it; it
// takes the share back and checks again.
func ExampleClient_Check() {
	ctx := context.Background()
	acme, err := client.New(exampleURL, client.Options{
		HTTPClient: httpClient,
		// The app's own account, holding the tenant's manage_apps.
		Token: func(context.Context) (string, error) { return appToken, nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	doc := client.Object{Type: "resource", ID: "doc-42"}
	share := client.Relationship{Resource: doc, Relation: "viewer", Subject: client.Subject{Type: "user", ID: aliceID}}
	mayView := client.Question{Subject: client.Subject{Type: "user", ID: aliceID}, Permission: "view", Resource: doc}

	written, err := acme.WriteRelationships(ctx, []client.Relationship{share}, nil)
	if err != nil {
		log.Fatal(err)
	}
	d, err := acme.Check(ctx, mayView, written)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("shared, may view:", d.Allowed)

	written, err = acme.WriteRelationships(ctx, nil, []client.Relationship{share})
	if err != nil {
		log.Fatal(err)
	}
	d, err = acme.Check(ctx, mayView, written)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("unshared, may view:", d.Allowed)

	// alice herself may not write the app's relationships.
	asAlice, err := client.New(exampleURL, client.Options{
		HTTPClient: httpClient,
		Token:      func(context.Context) (string, error) { return aliceToken, nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = asAlice.WriteRelationships(ctx, []client.Relationship{share}, nil)
	if e, ok := errors.AsType[*client.APIError](err); ok {
		fmt.Println("alice writing:", e.Status)
	}
	// Output:
	// shared, may view: true
	// unshared, may view: false
	// alice writing: 403
}
