// Package identity is who a user is to a tenant: accounts and passwords,
// sessions, tokens and the audit trail of what they did.
//
// Service holds the business rules and knows nothing of HTTP; HTTP
// (http.go, admin_http.go, pages.go) serves it with fiber: the account and
// admin APIs, the hosted pages, and the RequireAuth middleware that other
// domains' routes stand behind.
//
// Invariants a reader must keep: a password or token is never stored, logged
// or returned in the clear (passwords as argon2id hashes, tokens as hashes
// of their random value); and every query runs in the tenant-scoped
// transaction of the tenant the resolver found, never one named by the
// request.
package identity
