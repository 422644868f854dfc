// Package client is what a SaaS app needs of Gatehouse, and nothing of
// the server: it verifies a tenant's access tokens offline against the
// tenant's published keys (JWKS), and calls the check API (permission
// checks, bulk checks, resource lookups, relationship writes), carrying
// its consistency tokens.
//
// It imports the standard library and github.com/golang-jwt/jwt/v5 only
// (TestDependencies keeps it so), so that an app verifying tokens does
// not take in fiber, pgx or anything else of the server. Package identity
// verifies tokens with this package's VerifyAccessToken: there is one
// implementation.
//
// Invariants a reader must keep:
//   - A token is refused (ErrInvalidToken) only for what is wrong with
//     it. Keys that could not be had are a *KeysUnavailableError, never
//     ErrInvalidToken: an app that signs users out on an outage of
//     Gatehouse's key endpoint would sign out everyone.
//   - A token, bearer credential or key never goes into an error string.
package client
