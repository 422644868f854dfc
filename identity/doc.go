// Package identity is who a user is to a tenant: accounts and passwords,
// sessions, tokens and the audit trail of what they did.
//
// Invariants a reader must keep: a password or token is never stored, logged
// or returned in the clear (passwords as argon2id hashes, tokens as hashes
// of their random value); and every query runs in the tenant-scoped
// transaction of the tenant the resolver found, never one named by the
// request.
package identity
