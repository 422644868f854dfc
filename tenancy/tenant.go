package tenancy

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/queries"
)

// ID identifies a tenant. It is a distinct type so that a user id or any
// other uuid cannot be passed where a tenant is meant.
type ID uuid.UUID

// ParseID parses a tenant id in its canonical text form.
func ParseID(s string) (ID, error) {
	u, err := uuid.Parse(s)
	return ID(u), err
}

// UUID returns id as a plain uuid, for queries.
func (id ID) UUID() uuid.UUID { return uuid.UUID(id) }

func (id ID) String() string { return uuid.UUID(id).String() }

// MarshalText writes id in its canonical text form (in JSON, a string).
func (id ID) MarshalText() ([]byte, error) { return uuid.UUID(id).MarshalText() }

// UnmarshalText reads id from its canonical text form.
func (id *ID) UnmarshalText(b []byte) error { return (*uuid.UUID)(id).UnmarshalText(b) }

// Status is a tenant's lifecycle state.
type Status string

// Tenant statuses.
const (
	Active    Status = "active"    // serving
	Suspended Status = "suspended" // known, but every request is refused with 403
	Moving    Status = "moving"    // serving while its data moves between placements
	Deleted   Status = "deleted"   // data gone; the row remains as a tombstone
)

// Placement says where a tenant's data lives.
type Placement string

// Placements.
const (
	Shared Placement = "shared" // schema app of the primary database, under RLS
	Silo   Placement = "silo"   // a dedicated database, also under RLS
)

// Tenant is a customer organisation as the control plane records it. The
// resolver shares one *Tenant among concurrent requests: treat it as
// read-only.
type Tenant struct {
	ID        ID
	Slug      string
	Name      string
	Status    Status
	Placement Placement
	// SiloRef references, in the secret store, how to reach a silo
	// tenant's database (see SiloLocator). Empty for shared tenants.
	SiloRef   string
	Plan      string
	CreatedAt time.Time

	// Signup says who may create an account: SignupOpen (anyone) or
	// SignupInvite (only people a tenant admin invited).
	Signup Signup
	// RequireVerifiedEmail refuses login until the email is verified.
	RequireVerifiedEmail bool
	// AccessTokenTTL is how long the tenant's access tokens live.
	AccessTokenTTL time.Duration

	// Mail settings; empty means the server's default. Mail goes out From
	// MailFromName <MailFromAddress>, with replies to MailReplyTo, and
	// its links point under LinkBaseURL.
	MailFromAddress string
	MailFromName    string
	MailReplyTo     string
	LinkBaseURL     string
}

// Signup is a tenant's sign-up policy.
type Signup string

// Sign-up policies.
const (
	SignupOpen   Signup = "open"
	SignupInvite Signup = "invite"
)

func tenantFromRow(r queries.ControlTenant) *Tenant {
	t := &Tenant{
		ID:        ID(r.ID),
		Slug:      r.Slug,
		Name:      r.Name,
		Status:    Status(r.Status),
		Placement: Placement(r.Placement),
		Plan:      r.Plan,
		CreatedAt: r.CreatedAt,

		Signup:               Signup(r.Signup),
		RequireVerifiedEmail: r.RequireVerifiedEmail,
		AccessTokenTTL:       time.Duration(r.AccessTokenTtl) * time.Second,
	}
	for dst, src := range map[*string]*string{
		&t.SiloRef: r.SiloRef, &t.MailFromAddress: r.MailFromAddress, &t.MailFromName: r.MailFromName,
		&t.MailReplyTo: r.MailReplyTo, &t.LinkBaseURL: r.LinkBaseUrl,
	} {
		if src != nil {
			*dst = *src
		}
	}
	return t
}

type ctxKey struct{}

// WithTenant returns a context carrying the resolved tenant.
func WithTenant(ctx context.Context, t *Tenant) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the tenant the resolver put in ctx, if any.
func FromContext(ctx context.Context) (*Tenant, bool) {
	t, ok := ctx.Value(ctxKey{}).(*Tenant)
	return t, ok && t != nil
}
