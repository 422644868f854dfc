package rebac

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// DeleteTenant removes every relationship of tenant t's objects from
// SpiceDB. Object ids carry their tenant and no relationship joins two
// tenants, so the relationships whose resource is the tenant's are all
// there are. Returns Unavailable when SpiceDB is down; run it again.
func (c *Client) DeleteTenant(ctx context.Context, t tenancy.ID) error {
	for typ := range Schema {
		for {
			callCtx, cancel := context.WithTimeout(ctx, 10*c.timeout)
			res, err := c.api.DeleteRelationships(callCtx, &v1.DeleteRelationshipsRequest{
				RelationshipFilter:            &v1.RelationshipFilter{ResourceType: typ, OptionalResourceIdPrefix: t.String() + Separator},
				OptionalLimit:                 deleteBatch,
				OptionalAllowPartialDeletions: true,
			})
			cancel()
			if err != nil {
				return callError(fmt.Sprintf("delete the %s relationships of tenant %s", typ, t), err)
			}
			if res.DeletionProgress != v1.DeleteRelationshipsResponse_DELETION_PROGRESS_PARTIAL {
				break
			}
		}
	}
	return nil
}

// deleteBatch is how many relationships one delete call removes (SpiceDB
// bounds a call's deletions).
const deleteBatch = 1000

// Purger removes deleted tenants' relationships from SpiceDB. Any number
// of servers may run one: the purge is idempotent, and the control plane
// records it done.
type Purger struct {
	control *pgxpool.Pool
	client  *Client
	log     *slog.Logger
	// Grace is how long after a deletion the purge that is recorded done
	// runs: long enough for a relationship write in flight when the
	// tenant went (a relay's delivery, an app's write) to have landed.
	Grace time.Duration
}

// PurgeGrace is a Purger's Grace unless set.
const PurgeGrace = 5 * time.Minute

// NewPurger returns a purger reading the control plane through control
// (gatehouse_app suffices).
func NewPurger(control *pgxpool.Pool, client *Client, log *slog.Logger) *Purger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Purger{control: control, client: client, log: log, Grace: PurgeGrace}
}

// Purge removes the relationships of every tenant deleted more than
// Grace ago and not purged yet, records each done, and returns how many
// tenants it purged.
func (p *Purger) Purge(ctx context.Context) (int, error) {
	q := queries.New(p.control)
	ids, err := q.TenantsToPurge(ctx, ptr(time.Now().Add(-p.Grace)))
	if err != nil {
		return 0, fmt.Errorf("list deleted tenants: %w", err)
	}
	for i, id := range ids {
		if err := p.client.DeleteTenant(ctx, tenancy.ID(id)); err != nil {
			return i, err
		}
		if err := q.MarkRelationshipsPurged(ctx, id); err != nil {
			return i, fmt.Errorf("record the purge of tenant %s: %w", id, err)
		}
	}
	return len(ids), nil
}

// Run purges every interval until ctx ends.
func (p *Purger) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if n, err := p.Purge(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("rebac: cannot remove deleted tenants' relationships yet", "err", err)
		} else if n > 0 {
			p.log.Info("rebac: removed deleted tenants' relationships", "tenants", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
