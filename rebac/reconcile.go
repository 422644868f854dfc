package rebac

import (
	"context"
	"fmt"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Drift is what a reconciliation found: relationships Postgres implies
// that SpiceDB lacked, and ones SpiceDB had that Postgres does not imply.
type Drift struct {
	Missing, Extra []Relationship
}

// expected returns the relationships tenant t's Postgres rows imply.
func expected(ctx context.Context, q *queries.Queries, t *tenancy.Tenant) ([]Relationship, error) {
	var out []Relationship
	add := func(typ, id, relation string, s SubjectRef) {
		out = append(out, Relationship{Resource: Ref{Type: typ, ID: id}, Relation: relation, Subject: s})
	}
	admins, err := q.ListAdmins(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, a := range admins {
		add("tenant", TenantObject, "admin", userSubject(a))
	}
	disabled, err := q.ListDisabledUsers(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, d := range disabled {
		add("tenant", TenantObject, "disabled", userSubject(d))
	}
	groups, err := q.ListGroups(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, g := range groups {
		add("group", g.ID.String(), "tenant", SubjectRef{Ref: tenantRef()})
	}
	members, err := q.ListAllGroupMembers(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		add("group", m.GroupID.String(), "direct_member", memberSubject(m.MemberType, m.MemberID))
		if m.Manager {
			add("group", m.GroupID.String(), "manager", userSubject(m.MemberID))
		}
	}
	roles, err := q.ListRoles(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		add("role", r.ID.String(), "tenant", SubjectRef{Ref: tenantRef()})
		add("tenant", TenantObject, "role", SubjectRef{Ref: Ref{Type: "role", ID: r.ID.String()}})
		for _, p := range r.Permissions {
			for _, every := range grantees {
				add("role", r.ID.String(), p, every)
			}
		}
	}
	assigned, err := q.ListAllRoleAssignments(ctx, t.ID.UUID())
	if err != nil {
		return nil, err
	}
	for _, a := range assigned {
		add("role", a.RoleID.String(), "assignee", memberSubject(a.SubjectType, a.SubjectID))
	}
	return out, nil
}

// Key writes a relationship as SpiceDB's text form does, with local ids.
func Key(r Relationship) string {
	return fmt.Sprintf("%s:%s#%s@%s:%s#%s", r.Resource.Type, r.Resource.ID, r.Relation, r.Subject.Type, r.Subject.ID, r.Subject.Relation)
}

// Reconcile compares what tenant t's Postgres rows imply with what
// SpiceDB holds for the types Gatehouse keeps (tenant, group, role; apps'
// resources are theirs) and, unless dryRun, repairs SpiceDB to match.
// Waiting changes are delivered first, so only true drift is reported.
func (s *Service) Reconcile(ctx context.Context, t *tenancy.Tenant, dryRun bool) (Drift, error) {
	if _, err := s.relay.Deliver(ctx, t); err != nil {
		return Drift{}, err
	}
	var want []Relationship
	if err := s.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		want, err = expected(ctx, q, t)
		return err
	}); err != nil {
		return Drift{}, err
	}
	have := map[string]Relationship{}
	for _, typ := range []string{"tenant", "group", "role"} {
		rels, err := s.client.Read(ctx, t.ID, typ)
		if err != nil {
			return Drift{}, err
		}
		for _, r := range rels {
			have[Key(r)] = r
		}
	}
	var d Drift
	wanted := map[string]bool{}
	for _, r := range want {
		wanted[Key(r)] = true
		if _, ok := have[Key(r)]; !ok {
			d.Missing = append(d.Missing, r)
		}
	}
	for k, r := range have {
		if !wanted[k] {
			d.Extra = append(d.Extra, r)
		}
	}
	if dryRun || (len(d.Missing) == 0 && len(d.Extra) == 0) {
		return d, nil
	}
	missing, extra := d.Missing, d.Extra
	for len(missing)+len(extra) > 0 {
		// At most maxWrite updates a call.
		touch, del := missing, extra
		if len(touch) > maxWrite {
			touch, del = touch[:maxWrite], nil
		} else if len(touch)+len(del) > maxWrite {
			del = del[:maxWrite-len(touch)]
		}
		written, err := s.client.Write(ctx, t.ID, touch, del)
		if err != nil {
			return d, err
		}
		if err := s.db.Tx(ctx, t, func(q *queries.Queries) error {
			if _, err := q.LockRebacState(ctx, t.ID.UUID()); err != nil {
				return err
			}
			return q.SetZedToken(ctx, queries.SetZedTokenParams{TenantID: t.ID.UUID(), Zedtoken: string(written)})
		}); err != nil {
			return d, err
		}
		missing, extra = missing[len(touch):], extra[len(del):]
	}
	return d, nil
}

// maxWrite is how many updates one SpiceDB write carries here.
const maxWrite = 500
