package queries

// The relays' probes, as statements for tenancy.DB.Which, which sends
// them in its own batches (one per tenant, under the tenant's setting)
// rather than through Queries: sqlc still checks them against the schema.
const (
	HasDueMailProbe    = hasDueMail
	HasDueChangesProbe = hasDueChanges
)
