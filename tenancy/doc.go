// Package tenancy is the ground every other Gatehouse package stands on:
// tenants and their placement (shared database or silo), the control plane
// that records them, the Resolver that maps a request's Host to a tenant,
// migrations of both kinds of database, and DB, the only way to reach tenant
// data.
//
// Invariants a reader must keep:
//   - Tenant data is touched only inside DB.Tx (or DB.RawTx), which sets
//     gatehouse.tenant_id for that transaction alone; row level security in
//     schema app does the rest, and fails closed when no tenant is set.
//   - The server connects as gatehouse_app, which owns nothing and cannot
//     bypass row level security. Only migrations and operator commands use
//     the owner connection.
//   - No password reaches the control plane: a silo's connection strings
//     live in the secret store (SiloLocator), and the control plane keeps
//     only a reference, which must lie under the tenant's own path.
//   - Every tenant transaction enters the tenant's move fence in the
//     statement that scopes it (DB), so that a Mover can hold a tenant's
//     writes still for the moment of a flip, and a database the tenant has
//     moved away from refuses it. Anything that writes tenant data must go
//     through DB, or a move can lose its write.
package tenancy
