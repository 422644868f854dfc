package rebac

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"

	"github.com/gatehouse/gatehouse/internal/outbox"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Operations of a relationship change.
const (
	Touch  = "touch"  // create the relationship, or keep it
	Delete = "delete" // remove it, if it is there
	// Forget removes every relationship of an app resource with the
	// row's subject (see EnqueueForget).
	Forget = "forget"
)

// Enqueue records a relationship change of tenant t in q's transaction:
// it reaches SpiceDB if and only if the transaction commits, after the
// tenant's earlier changes. The relationship is checked against the
// schema first (Invalid naming the field).
func Enqueue(ctx context.Context, q *queries.Queries, t tenancy.ID, op string, r Relationship) error {
	if op != Touch && op != Delete {
		return fmt.Errorf("rebac: unknown operation %q", op)
	}
	if _, err := buildUpdate(t, v1.RelationshipUpdate_OPERATION_TOUCH, r); err != nil {
		return err
	}
	return q.EnqueueRelationship(ctx, queries.EnqueueRelationshipParams{
		TenantID: t.UUID(), Op: op, ResourceType: r.Resource.Type, ResourceID: r.Resource.ID, Relation: r.Relation,
		SubjectType: r.Subject.Type, SubjectID: r.Subject.ID, SubjectRelation: r.Subject.Relation,
	})
}

// EnqueueForget records, in q's transaction, that every relationship of
// the apps' resources (type resource) whose subject is subject goes: for a
// deleted user, whom apps may have made an owner, editor or viewer of any
// number of their objects. It reaches SpiceDB in order with the tenant's
// other changes.
func EnqueueForget(ctx context.Context, q *queries.Queries, t tenancy.ID, subject SubjectRef) error {
	if _, err := subjectRef(t, "subject", subject); err != nil {
		return err
	}
	return q.EnqueueRelationship(ctx, queries.EnqueueRelationshipParams{
		TenantID: t.UUID(), Op: Forget, ResourceType: "resource", ResourceID: "*", Relation: "*",
		SubjectType: subject.Type, SubjectID: subject.ID, SubjectRelation: subject.Relation,
	})
}

// RelayOptions tune a Relay; zero values take the defaults.
type RelayOptions struct {
	Sweep   time.Duration // how often every tenant's outbox is checked; default 5s
	Backoff time.Duration // first retry delay, doubled up to a minute; default 1s
	Keep    time.Duration // how long delivered changes stay as a record; default 7 days
	Log     *slog.Logger
}

// Relay carries tenants' relationship changes from their outboxes to
// SpiceDB, in order per tenant, and keeps each tenant's consistency token.
// Any number of server instances may each run one: a tenant's deliveries
// are serialised by its state row's lock. It is the relationship outbox
// of an outbox.Relay.
type Relay struct {
	db     *tenancy.DB
	client *Client
	o      RelayOptions
	relay  *outbox.Relay
}

// NewRelay returns a relay over the outboxes of the tenants that tenants
// lists (nil: only those Notify names, and Deliver).
func NewRelay(db *tenancy.DB, tenants func(context.Context) ([]*tenancy.Tenant, error), client *Client, o RelayOptions) *Relay {
	if o.Sweep <= 0 {
		o.Sweep = 5 * time.Second
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Keep <= 0 {
		o.Keep = 7 * 24 * time.Hour
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{db: db, client: client, o: o}
	r.relay = outbox.New(db, tenants, r, outbox.Options{Name: "rebac", Sweep: o.Sweep, Log: o.Log})
	return r
}

// Run delivers until ctx ends: every tenant with due changes at each
// sweep, and a tenant at once when Notify names it.
func (r *Relay) Run(ctx context.Context) { r.relay.Run(ctx) }

// Notify asks the relay to deliver tenant t's changes soon.
func (r *Relay) Notify(t *tenancy.Tenant) { r.relay.Notify(t) }

// Due is the relationship outbox's probe: has the tenant changes to
// deliver now?
func (r *Relay) Due() string { return queries.HasDueChangesProbe }

// Drain delivers tenant t's due changes (outbox.Outbox).
func (r *Relay) Drain(ctx context.Context, t *tenancy.Tenant) error {
	_, err := r.Deliver(ctx, t)
	return err
}

// Deliver carries tenant t's due changes to SpiceDB now, in batches, and
// returns the consistency token of the last one (the stored token when
// there was nothing to deliver). Returns Unavailable when SpiceDB cannot
// be reached; the changes stay and are retried with backoff.
func (r *Relay) Deliver(ctx context.Context, t *tenancy.Tenant) (ZedToken, error) {
	return r.deliver(ctx, t, false)
}

// deliver is Deliver; forced, it does not wait for a failed change's
// retry time (a request is waiting for it).
func (r *Relay) deliver(ctx context.Context, t *tenancy.Tenant, force bool) (ZedToken, error) {
	for {
		var token ZedToken
		var failure error
		more := false
		err := r.db.Tx(ctx, t, func(q *queries.Queries) error {
			state, err := q.LockRebacState(ctx, t.ID.UUID())
			if err != nil {
				return err
			}
			token = ZedToken(state.Zedtoken)
			rows, err := q.DueRelationships(ctx, queries.DueRelationshipsParams{TenantID: t.ID.UUID(), Force: force, Lim: deliveryBatch})
			if err != nil || len(rows) == 0 {
				return err
			}
			more = len(rows) == deliveryBatch
			// A forget goes alone, in its place in the order: the changes
			// before it in one write, then it, then the rest.
			if i := slices.IndexFunc(rows, func(c queries.AppRebacOutbox) bool { return c.Op == Forget }); i >= 0 {
				cut := rows[:max(i, 1)]
				more = more || len(cut) < len(rows)
				rows = cut
			}
			var written ZedToken
			if rows[0].Op == Forget {
				c := rows[0]
				written, err = r.client.DeleteAll(ctx, t.ID, c.ResourceType, SubjectRef{Ref: Ref{Type: c.SubjectType, ID: c.SubjectID}, Relation: c.SubjectRelation})
			} else {
				touch, del := coalesce(rows)
				written, err = r.client.Write(ctx, t.ID, touch, del)
			}
			if err != nil {
				// Recorded, and committed: the changes wait for a retry.
				failure = err
				return r.retryLater(ctx, q, t, rows[0], err)
			}
			token = written
			if err := q.DeliveredRelationships(ctx, queries.DeliveredRelationshipsParams{TenantID: t.ID.UUID(), Seq: rows[len(rows)-1].Seq}); err != nil {
				return err
			}
			return q.SetZedToken(ctx, queries.SetZedTokenParams{TenantID: t.ID.UUID(), Zedtoken: string(token)})
		})
		if err != nil {
			return "", fmt.Errorf("deliver relationships of %s: %w", t.Slug, err)
		}
		if failure != nil {
			return "", failure
		}
		if !more {
			r.prune(ctx, t)
			return token, nil
		}
	}
}

// deliveryBatch is how many changes go to SpiceDB in one write (SpiceDB
// takes at most 1,000 updates a call).
const deliveryBatch = 500

// coalesce turns changes in order into one write: where a relationship
// changes more than once, its last change wins (SpiceDB refuses two
// updates of one relationship in a call).
func coalesce(rows []queries.AppRebacOutbox) (touch, del []Relationship) {
	type key struct{ rt, rid, rel, st, sid, srel string }
	last := map[key]int{}
	for i, c := range rows {
		last[key{c.ResourceType, c.ResourceID, c.Relation, c.SubjectType, c.SubjectID, c.SubjectRelation}] = i
	}
	for i, c := range rows {
		if last[key{c.ResourceType, c.ResourceID, c.Relation, c.SubjectType, c.SubjectID, c.SubjectRelation}] != i {
			continue
		}
		r := Relationship{
			Resource: Ref{Type: c.ResourceType, ID: c.ResourceID}, Relation: c.Relation,
			Subject: SubjectRef{Ref: Ref{Type: c.SubjectType, ID: c.SubjectID}, Relation: c.SubjectRelation},
		}
		if c.Op == Touch {
			touch = append(touch, r)
		} else {
			del = append(del, r)
		}
	}
	return touch, del
}

// retryLater records a failed delivery on the tenant's oldest change,
// which holds back the rest until it is due again.
func (r *Relay) retryLater(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, first queries.AppRebacOutbox, cause error) error {
	d := outbox.Backoff(r.o.Backoff, int(first.Attempts)+1, time.Minute)
	msg := outbox.Truncate(cause.Error(), 500)
	return q.RetryRelationships(ctx, queries.RetryRelationshipsParams{TenantID: t.ID.UUID(), Seq: first.Seq, LastError: &msg, Delay: d.Seconds()})
}

func (r *Relay) prune(ctx context.Context, t *tenancy.Tenant) {
	err := r.db.Tx(ctx, t, func(q *queries.Queries) error {
		return q.PruneRelationships(ctx, queries.PruneRelationshipsParams{TenantID: t.ID.UUID(), DeliveredAt: ptr(time.Now().Add(-r.o.Keep))})
	})
	if err != nil {
		r.o.Log.Warn("rebac relay: cannot prune the outbox", "tenant", t.Slug, "err", err)
	}
}

func ptr[T any](v T) *T { return &v }

// Token returns the token checks for tenant t must be at least as fresh
// as: it first delivers any change the tenant still has waiting, so that
// a check never answers from before a change an admin has seen commit.
// Returns Unavailable when changes wait and SpiceDB cannot take them: the
// check must then deny.
func (r *Relay) Token(ctx context.Context, t *tenancy.Tenant) (ZedToken, error) {
	var f queries.RebacFreshnessRow
	// On every check's path: one round trip.
	err := r.db.Once(ctx, t, func(q *queries.Queries) (err error) {
		f, err = q.RebacFreshness(ctx, t.ID.UUID())
		return err
	})
	if err != nil {
		return "", err
	}
	if !f.Pending {
		return ZedToken(f.Zedtoken), nil
	}
	// Everything committed before this check began is delivered now, or
	// the check cannot be made.
	tok, err := r.deliver(ctx, t, true)
	if err != nil {
		return "", err
	}
	return tok, nil
}
