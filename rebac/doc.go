// Package rebac is Gatehouse's relationship-based authorization, the
// adapter to SpiceDB: the schema (schema.zed, applied on start), object
// ids built from the tenant, and permission checks and relationship
// writes against a SpiceDB server.
//
// Invariants a reader must keep: every object id that reaches SpiceDB is
// made by ObjectID from the tenant the request resolved to, never taken
// whole from input, so no relationship can join two tenants; and a check
// that cannot be answered denies (fail closed), never allows. Questions
// about apps' resources go through Service (Check, CheckBulk,
// LookupResources), which deny a disabled account however it was granted
// a right; Client answers what the relationships alone say.
package rebac
