package rebac

import (
	"context"
	"errors"
	"fmt"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// MaxParentDepth bounds how many parent links lead up from a resource:
// SpiceDB walks each of them on every check, and gives up (an error, not
// an answer) past its own dispatch depth.
const MaxParentDepth = 16

// WriteRelationships applies an app's changes to relationships of its
// resources in tenant t, and makes later checks see them. It holds the
// tenant's delivery lock across the write, so that the tenant's stored
// token only ever moves forward (a slower write cannot store an older
// token over a newer one) and a new parent link is checked against a
// graph that nobody changes meanwhile. Returns Invalid naming the item
// for a relationship given twice, a wildcard subject, or a parent link
// that would make a resource its own ancestor or lead up more than
// MaxParentDepth links; Unavailable when SpiceDB is down.
func (s *Service) WriteRelationships(ctx context.Context, t *tenancy.Tenant, touch, del []Relationship) (ZedToken, error) {
	if err := distinct(touch, del); err != nil {
		return "", err
	}
	if s.client == nil {
		return "", problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	var written ZedToken
	err := s.db.Tx(ctx, t, func(q *queries.Queries) error {
		if _, err := q.LockRebacState(ctx, t.ID.UUID()); err != nil {
			return err
		}
		if err := s.acyclic(ctx, t, touch, del); err != nil {
			return err
		}
		w, err := s.client.Write(ctx, t.ID, touch, del)
		if err != nil {
			return err
		}
		written = w
		return q.SetZedToken(ctx, queries.SetZedTokenParams{TenantID: t.ID.UUID(), Zedtoken: string(w)})
	})
	return written, err
}

// distinct refuses a write that names one relationship twice (SpiceDB
// takes each relationship once a call) or a wildcard subject (apps grant
// to someone, not to everyone).
func distinct(touch, del []Relationship) error {
	seen := map[Relationship]string{}
	for _, list := range []struct {
		name string
		rs   []Relationship
	}{{"touch", touch}, {"delete", del}} {
		for i, r := range list.rs {
			field := fmt.Sprintf("%s[%d]", list.name, i)
			if r.Subject.ID == "*" {
				return problem.InvalidField(field+".subject.id", "must name one subject: wildcards are not accepted")
			}
			if first, ok := seen[r]; ok {
				return problem.InvalidField(field, "names the same relationship as "+first)
			}
			seen[r] = field
		}
	}
	return nil
}

// acyclic refuses parent links among touch that would close a loop of
// parents (SpiceDB would then fail every check on the loop), or put more
// than MaxParentDepth links above the resource, given what SpiceDB holds
// and the rest of the write. The caller holds the tenant's delivery lock.
// (Links below the resource are not walked: a wide tree would cost a read
// per resource under it. A check that runs into SpiceDB's own depth
// limit that way answers 409.)
func (s *Service) acyclic(ctx context.Context, t *tenancy.Tenant, touch, del []Relationship) error {
	up := map[string][]string{}     // links the write adds
	removed := map[[2]string]bool{} // {child, parent} links it removes
	for _, r := range touch {
		if isParent(r) {
			up[r.Resource.ID] = append(up[r.Resource.ID], r.Subject.ID)
		}
	}
	if len(up) == 0 {
		return nil
	}
	for _, r := range del {
		if isParent(r) {
			removed[[2]string{r.Resource.ID, r.Subject.ID}] = true
		}
	}
	known := map[string][]string{}
	parents := func(id string) ([]string, error) {
		if ids, ok := known[id]; ok {
			return ids, nil
		}
		held, err := s.client.Subjects(ctx, t.ID, Ref{Type: "resource", ID: id}, "parent")
		if err != nil {
			return nil, err
		}
		ids := make([]string, 0, len(held)+len(up[id]))
		for _, h := range held {
			if !removed[[2]string{id, h.ID}] {
				ids = append(ids, h.ID)
			}
		}
		ids = append(ids, up[id]...)
		known[id] = ids
		return ids, nil
	}
	for i, r := range touch {
		if !isParent(r) {
			continue
		}
		field := fmt.Sprintf("touch[%d]", i)
		if r.Subject.ID == r.Resource.ID {
			return problem.InvalidField(field, "would make a resource its own parent")
		}
		w := &ancestry{stop: r.Resource.ID, parents: parents, memo: map[string]int{}, visiting: map[string]bool{}}
		h, err := w.height(r.Subject.ID, 1)
		switch {
		case errors.Is(err, errLoop):
			return problem.InvalidField(field, fmt.Sprintf("would make resource %s its own ancestor", r.Resource.ID))
		case errors.Is(err, errTooMany):
			return problem.InvalidField(field, fmt.Sprintf("would put resource %s under more than %d ancestors", r.Resource.ID, maxAncestors))
		case err != nil:
			return err
		case h > MaxParentDepth:
			return problem.InvalidField(field, fmt.Sprintf("would put resource %s under a chain of more than %d parent links", r.Resource.ID, MaxParentDepth))
		}
	}
	return nil
}

// maxAncestors bounds how many resources one new parent link makes the
// write walk (a read of SpiceDB each, under the tenant's lock).
const maxAncestors = 1000

var (
	errLoop    = errors.New("loop of parents")
	errTooMany = errors.New("too many ancestors")
)

// ancestry walks up the parents of resources, depth first, to find how
// long the longest chain above one is, and whether it meets stop.
type ancestry struct {
	stop     string
	parents  func(string) ([]string, error)
	memo     map[string]int  // resource -> its height
	visiting map[string]bool // on the current path: a loop already there
	visits   int
}

// height returns how many resources the longest chain of parents from id
// holds, id included, walking no further than MaxParentDepth+1 levels
// (that many are already too many). Returns errLoop if it meets stop or a
// loop, errTooMany past maxAncestors resources.
func (a *ancestry) height(id string, level int) (int, error) {
	if id == a.stop || a.visiting[id] {
		return 0, errLoop
	}
	if h, ok := a.memo[id]; ok {
		return h, nil
	}
	if level > MaxParentDepth+1 {
		return 1, nil
	}
	if a.visits++; a.visits > maxAncestors {
		return 0, errTooMany
	}
	ps, err := a.parents(id)
	if err != nil {
		return 0, err
	}
	a.visiting[id] = true
	defer delete(a.visiting, id)
	best := 0
	for _, p := range ps {
		h, err := a.height(p, level+1)
		if err != nil {
			return 0, err
		}
		best = max(best, h)
	}
	a.memo[id] = best + 1
	return best + 1, nil
}

func isParent(r Relationship) bool {
	return r.Resource.Type == "resource" && r.Relation == "parent" && r.Subject.Type == "resource" && r.Subject.Relation == ""
}
