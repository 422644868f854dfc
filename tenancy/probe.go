package tenancy

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/queries"
)

// probeBatch is how many tenants one round trip of Which asks about.
const probeBatch = 500

// Which returns those of tenants for which query, a statement answering
// one boolean with the tenant's id as $1, is true when run scoped to that
// tenant. Background work uses it to find the few tenants with something
// to do without a transaction for each: the shared database's tenants are
// asked in batches, each query under its own tenant's setting, in one
// read-only transaction a batch; silo tenants one at a time. A silo that
// cannot be reached is skipped (and reported in the error) rather than
// holding up the rest.
func (db *DB) Which(ctx context.Context, tenants []*Tenant, query string) ([]*Tenant, error) {
	var found, shared []*Tenant
	var errs []error
	for _, t := range tenants {
		if t.Placement == Silo {
			var yes bool
			err := db.RawTx(ctx, t, func(tx queries.DBTX) error {
				return tx.QueryRow(ctx, query, t.ID.UUID()).Scan(&yes)
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("tenant %s: %w", t.Slug, err))
			} else if yes {
				found = append(found, t)
			}
			continue
		}
		shared = append(shared, t)
	}
	for len(shared) > 0 {
		n := min(len(shared), probeBatch)
		hits, err := db.probeShared(ctx, shared[:n], query)
		if err != nil {
			return found, errors.Join(append(errs, err)...)
		}
		found = append(found, hits...)
		shared = shared[n:]
	}
	return found, errors.Join(errs...)
}

func (db *DB) probeShared(ctx context.Context, tenants []*Tenant, query string) ([]*Tenant, error) {
	b := &pgx.Batch{}
	b.Queue("begin read only")
	for _, t := range tenants {
		b.Queue(setTenant, t.ID.String())
		b.Queue(query, t.ID.UUID())
	}
	b.Queue("commit")
	conn, err := db.shared.Acquire(ctx)
	if err != nil {
		return nil, unavailable(err)
	}
	defer conn.Release()
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return nil, unavailable(err)
	}
	var found []*Tenant
	for _, t := range tenants {
		if _, err := br.Exec(); err != nil {
			return nil, err
		}
		var yes bool
		if err := br.QueryRow().Scan(&yes); err != nil {
			return nil, fmt.Errorf("probe tenant %s: %w", t.Slug, err)
		}
		if yes {
			found = append(found, t)
		}
	}
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	return found, nil
}
