// Package secrets keeps tenants' secrets out of Postgres, logs and
// configuration: it is Gatehouse's adapter to HashiCorp Vault.
//
// Configuration secrets (silo credentials, SMTP passwords, upstream client
// secrets) live in Vault's KV store; Postgres holds only a Ref to them.
// Per-row data that must be decrypted later (signing keys, TOTP seeds) is
// sealed by a Sealer: AES-256-GCM under a data key that Vault Transit
// issues and wraps with the tenant's own key (envelope encryption).
// Destroying a tenant's Transit key (Shred) makes everything sealed for it
// unreadable, backups included.
//
// Invariants: a tenant only ever reaches refs under its own path
// (tenants/<id>/), whatever a row says; and no secret value ever appears in
// an error, a log line or a panic.
package secrets
