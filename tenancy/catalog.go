package tenancy

import (
	"context"
	"fmt"
	"slices"

	"github.com/gatehouse/gatehouse/queries"
)

// AppTables returns the tables of schema app, parents before the tables
// whose foreign keys point at them. Operations over all of a tenant's data
// (deletion, and moving it between placements) iterate this list.
func AppTables(ctx context.Context, db queries.DBTX) ([]string, error) {
	// Catalog queries are outside sqlc's schema; this is their one place.
	rows, err := db.Query(ctx, `
		select c.relname::text,
		       coalesce(array_agg(distinct p.relname::text) filter (where p.relname is not null and p.oid <> c.oid), '{}')
		from pg_class c
		join pg_namespace n on n.oid = c.relnamespace and n.nspname = 'app'
		left join pg_constraint f on f.conrelid = c.oid and f.contype = 'f'
		left join pg_class p on p.oid = f.confrelid
		where c.relkind in ('r', 'p')
		group by c.relname
		order by c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list app tables: %w", err)
	}
	defer rows.Close()
	parents := map[string][]string{}
	var names []string
	for rows.Next() {
		var name string
		var ps []string
		if err := rows.Scan(&name, &ps); err != nil {
			return nil, fmt.Errorf("list app tables: %w", err)
		}
		names = append(names, name)
		parents[name] = ps
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list app tables: %w", err)
	}
	// Depth-first topological order; names are sorted, so it is stable.
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(n string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("list app tables: foreign key cycle through %s", n)
		case 2:
			return nil
		}
		state[n] = 1
		for _, p := range parents[n] {
			if err := visit(p); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return slices.Clip(order), nil
}
