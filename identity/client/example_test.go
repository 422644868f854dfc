package client_test

// These examples are compiled, not run: they have no Output comment, as
// there is no Gatehouse here to answer them. Once a reusable test server
// exists, each becomes runnable against a real Gatehouse (a tenant with
// an account holding manage_apps, the app's own resources) with
// // Output: lines showing:
//   - VerifyAccessToken: a token from POST /v1/auth/login verifies, with
//     the tenant id learned from GET /v1/tenant; the same token is
//     ErrInvalidToken on another tenant's Client; after a key rotation
//     the old token still verifies and a new token's kid is fetched;
//     after the old key's retirement the old token is ErrInvalidToken;
//     with the server stopped, kept keys go on verifying and a new kid
//     is a *KeysUnavailableError.
//   - Check: WriteRelationships makes a group a resource's viewers and a
//     check with its consistency token sees it at once (allowed), then a
//     delete and a check at its token sees that (denied); CheckBulk and
//     LookupResources at the same token agree.
//   - Errors: a caller without manage_apps gets *APIError 403
//     "forbidden"; a made-up consistency token 400 with Fields naming
//     consistency_token; SpiceDB stopped, 503 with RetryAfter.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/identity/client"
)

// A SaaS app's handler takes the tenant's users by their access tokens.
func ExampleClient_VerifyAccessToken() {
	acme, err := client.New("https://acme.gatehouse.example", client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	hello := func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		claims, err := acme.VerifyAccessToken(r.Context(), token)
		if _, down := errors.AsType[*client.KeysUnavailableError](err); down {
			// Nothing is known of the token: the user keeps it.
			w.Header().Set("Retry-After", "1")
			http.Error(w, "try again later", http.StatusServiceUnavailable)
			return
		}
		if err != nil { // errors.Is(err, client.ErrInvalidToken)
			w.Header().Set("WWW-Authenticate", "Bearer")
			http.Error(w, "sign in again", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "hello, user %s (session %s)\n", claims.Subject, claims.Session)
	}
	_ = http.HandlerFunc(hello)
}

// An app shares a document with a group, then checks a user's access so
// that the check sees the share.
func ExampleClient_Check() {
	ctx := context.Background()
	acme, err := client.New("https://acme.gatehouse.example", client.Options{
		// The app's own account, with the tenant's manage_apps permission.
		Token: func(ctx context.Context) (string, error) { return appAccessToken(ctx) },
	})
	if err != nil {
		log.Fatal(err)
	}
	doc := client.Object{Type: "resource", ID: "doc-42"}
	written, err := acme.WriteRelationships(ctx, []client.Relationship{
		{Resource: doc, Relation: "viewer", Subject: client.Subject{Type: "group", ID: "8d1f…", Relation: "member"}},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	d, err := acme.Check(ctx, client.Question{
		Subject: client.Subject{Type: "user", ID: "5b7c…"}, Permission: "view", Resource: doc,
	}, written)
	if e, ok := errors.AsType[*client.APIError](err); ok && e.RetryAfter > 0 {
		log.Fatalf("try again in %s: %s", strconv.Itoa(int(e.RetryAfter.Seconds())), e.Detail)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("may view:", d.Allowed)
}

// appAccessToken stands for the app's way of holding a fresh access
// token of its account (sign in, then refresh).
func appAccessToken(context.Context) (string, error) { return "", errors.New("no app account here") }
