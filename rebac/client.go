package rebac

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	authzed "github.com/authzed/authzed-go/v1"
	"github.com/authzed/grpcutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Config says how to reach SpiceDB.
type Config struct {
	Addr string // host:port of its gRPC API
	Key  string // the preshared key
	// Plaintext talks to SpiceDB unencrypted: allowed to a loopback
	// address only. Otherwise TLS, verified against the system's roots or
	// CAFile.
	Plaintext bool
	CAFile    string
	// Timeout bounds each call; default 5s.
	Timeout time.Duration
}

// Client talks to SpiceDB on behalf of tenants.
type Client struct {
	api     *authzed.Client
	timeout time.Duration
}

// Connect returns a client for cfg. It does not wait for SpiceDB: calls
// made while it is unreachable fail with Unavailable.
func Connect(cfg Config) (*Client, error) {
	if cfg.Addr == "" {
		return nil, problem.Errorf(problem.Invalid, "no SpiceDB address")
	}
	if cfg.Key == "" {
		return nil, problem.Errorf(problem.Invalid, "no SpiceDB preshared key")
	}
	var opts []grpc.DialOption
	if cfg.Plaintext {
		host, _, err := net.SplitHostPort(cfg.Addr)
		if err != nil || !isLoopback(host) {
			return nil, problem.Errorf(problem.Invalid, "plaintext to SpiceDB is allowed to a loopback address only, not %s", cfg.Addr)
		}
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpcutil.WithInsecureBearerToken(cfg.Key))
	} else {
		var tlsOpt grpc.DialOption
		var err error
		if cfg.CAFile != "" {
			tlsOpt, err = grpcutil.WithCustomCerts(grpcutil.VerifyCA, cfg.CAFile)
		} else {
			tlsOpt, err = grpcutil.WithSystemCerts(grpcutil.VerifyCA)
		}
		if err != nil {
			return nil, fmt.Errorf("spicedb tls: %w", err)
		}
		opts = append(opts, tlsOpt, grpcutil.WithBearerToken(cfg.Key))
	}
	api, err := authzed.NewClient(cfg.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("spicedb client: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Client{api: api, timeout: cfg.Timeout}, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Close closes the connection.
func (c *Client) Close() error { return c.api.Close() }

// EnsureSchema writes SchemaText to SpiceDB unless it is already what
// SpiceDB has, and reports whether it wrote.
func (c *Client) EnsureSchema(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.api.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	if err == nil {
		diff, err := c.api.DiffSchema(ctx, &v1.DiffSchemaRequest{
			Consistency:      &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}},
			ComparisonSchema: SchemaText,
		})
		if err != nil {
			return false, callError("compare schema", err)
		}
		if len(diff.Diffs) == 0 {
			return false, nil
		}
	} else if status.Code(err) != codes.NotFound {
		return false, callError("read schema", err)
	}
	if _, err := c.api.WriteSchema(ctx, &v1.WriteSchemaRequest{Schema: SchemaText}); err != nil {
		return false, callError("write schema", err)
	}
	return true, nil
}

// Healthy checks that SpiceDB answers (for readiness).
func (c *Client) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	_, err := c.api.ReadSchema(ctx, &v1.ReadSchemaRequest{})
	return callError("read schema", err)
}

// Ref is an object of a tenant: its type and its local id (the tenant
// is added by the client).
type Ref struct {
	Type string
	ID   string
}

// SubjectRef is a subject of a relationship or a check: an object, or a
// set of them (Relation, e.g. group#member).
type SubjectRef struct {
	Ref
	Relation string
}

// Relationship is one relationship of a tenant: resource's relation to
// subject.
type Relationship struct {
	Resource Ref
	Relation string
	Subject  SubjectRef
}

// ZedToken is SpiceDB's consistency token: a check made with one sees
// at least every change up to the write that returned it.
type ZedToken string

func objectRef(t tenancy.ID, field string, r Ref) (*v1.ObjectReference, error) {
	if _, ok := Schema[r.Type]; !ok {
		return nil, problem.InvalidField(field+".type", "is not a known object type")
	}
	id, err := ObjectID(t, field+".id", r.ID)
	if err != nil {
		return nil, err
	}
	return &v1.ObjectReference{ObjectType: r.Type, ObjectId: id}, nil
}

func subjectRef(t tenancy.ID, field string, s SubjectRef) (*v1.SubjectReference, error) {
	if (s.Type == "user" || s.Type == "app") && s.ID == "*" && s.Relation == "" {
		// A wildcard: every user (or app) of the schema, used only to
		// carry a role's permissions. Its id is SpiceDB's own.
		return &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: s.Type, ObjectId: "*"}}, nil
	}
	o, err := objectRef(t, field, s.Ref)
	if err != nil {
		return nil, err
	}
	if s.Relation != "" && !HasPermission(s.Type, s.Relation) {
		return nil, problem.InvalidField(field+".relation", "is not a relation or permission of "+s.Type)
	}
	return &v1.SubjectReference{Object: o, OptionalRelation: s.Relation}, nil
}

// update builds a relationship update of tenant t, checked against the
// schema.
func buildUpdate(t tenancy.ID, op v1.RelationshipUpdate_Operation, r Relationship) (*v1.RelationshipUpdate, error) {
	res, err := objectRef(t, "resource", r.Resource)
	if err != nil {
		return nil, err
	}
	subject, err := subjectRef(t, "subject", r.Subject)
	if err != nil {
		return nil, err
	}
	if _, ok := Schema[r.Resource.Type].Relations[r.Relation]; !ok {
		return nil, problem.InvalidField("relation", "is not a relation of "+r.Resource.Type)
	}
	subjectID := r.Subject.ID
	if subjectID != "*" {
		subjectID = ""
	}
	want := r.Subject.Type
	if subjectID == "*" {
		want += ":*"
	}
	if !Admits(r.Resource.Type, r.Relation, want, r.Subject.Relation) {
		return nil, problem.InvalidField("subject", fmt.Sprintf("%s#%s does not take %s", r.Resource.Type, r.Relation, subjectName(r.Subject)))
	}
	return &v1.RelationshipUpdate{Operation: op, Relationship: &v1.Relationship{Resource: res, Relation: r.Relation, Subject: subject}}, nil
}

func subjectName(s SubjectRef) string {
	n := s.Type
	if s.ID == "*" {
		n += ":*"
	}
	if s.Relation != "" {
		n += "#" + s.Relation
	}
	return n
}

// Write applies relationship changes of tenant t atomically: touch
// (create or keep) and delete are both idempotent, so a write may be
// retried. Returns the ZedToken of the change; Invalid naming the field
// for input the schema does not take; Unavailable when SpiceDB is
// unreachable.
func (c *Client) Write(ctx context.Context, t tenancy.ID, touch, del []Relationship) (ZedToken, error) {
	var updates []*v1.RelationshipUpdate
	for _, r := range touch {
		u, err := buildUpdate(t, v1.RelationshipUpdate_OPERATION_TOUCH, r)
		if err != nil {
			return "", err
		}
		updates = append(updates, u)
	}
	for _, r := range del {
		u, err := buildUpdate(t, v1.RelationshipUpdate_OPERATION_DELETE, r)
		if err != nil {
			return "", err
		}
		updates = append(updates, u)
	}
	if len(updates) == 0 {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := c.api.WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: updates})
	if err != nil {
		return "", callError("write relationships", err)
	}
	return ZedToken(res.WrittenAt.GetToken()), nil
}

// DeleteAll removes every relationship of tenant t's objects of type typ
// whose subject is subject, and returns the token of the change. Same
// errors as Write.
func (c *Client) DeleteAll(ctx context.Context, t tenancy.ID, typ string, subject SubjectRef) (ZedToken, error) {
	sub, err := subjectRef(t, "subject", subject)
	if err != nil {
		return "", err
	}
	filter := &v1.SubjectFilter{SubjectType: sub.Object.ObjectType, OptionalSubjectId: sub.Object.ObjectId}
	if sub.OptionalRelation != "" {
		filter.OptionalRelation = &v1.SubjectFilter_RelationFilter{Relation: sub.OptionalRelation}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	res, err := c.api.DeleteRelationships(ctx, &v1.DeleteRelationshipsRequest{
		RelationshipFilter: &v1.RelationshipFilter{ResourceType: typ, OptionalSubjectFilter: filter},
	})
	if err != nil {
		return "", callError("delete relationships", err)
	}
	return ZedToken(res.DeletedAt.GetToken()), nil
}

// consistency asks for answers at least as fresh as at (when set).
func consistency(at ZedToken) *v1.Consistency {
	if at == "" {
		return &v1.Consistency{Requirement: &v1.Consistency_MinimizeLatency{MinimizeLatency: true}}
	}
	return &v1.Consistency{Requirement: &v1.Consistency_AtLeastAsFresh{AtLeastAsFresh: &v1.ZedToken{Token: string(at)}}}
}

// Check reports whether subject has permission on resource in tenant t,
// seeing at least every change up to at, and returns the token the
// answer was computed at: what the relationships say, which on apps'
// resources still grants a disabled account its rights (Service.Check
// takes them away). Returns Invalid naming the field for input the
// schema does not know; Unavailable (and false) when SpiceDB cannot
// answer: a check never allows by default.
func (c *Client) Check(ctx context.Context, t tenancy.ID, subject SubjectRef, permission string, resource Ref, at ZedToken) (bool, ZedToken, error) {
	it, err := checkItem(t, "", CheckItem{Subject: subject, Permission: permission, Resource: resource})
	if err != nil {
		return false, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.api.CheckPermission(ctx, &v1.CheckPermissionRequest{
		Consistency: consistency(at), Resource: it.Resource, Permission: it.Permission, Subject: it.Subject,
	})
	if err != nil {
		return false, "", callError("check permission", err)
	}
	return r.Permissionship == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION, ZedToken(r.CheckedAt.GetToken()), nil
}

// errUnavailable is what callers see of a SpiceDB they cannot reach: the
// gRPC error itself stays in the cause, for logs.
const unavailableMessage = "the permission service is unavailable; try again shortly"

// callError maps a SpiceDB call's error to a problem. SpiceDB's own
// messages never reach callers: input is checked against the schema
// before a call, so anything SpiceDB refuses is our fault or its outage.
func callError(op string, err error) error {
	if err == nil {
		return nil
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted:
		e := problem.Wrap(problem.Unavailable, fmt.Errorf("spicedb %s: %w", op, err), unavailableMessage)
		e.RetryAfter = 2 * time.Second
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return problem.Wrap(problem.Unavailable, fmt.Errorf("spicedb %s: %w", op, err), unavailableMessage)
	}
	if status.Code(err) == codes.FailedPrecondition && strings.Contains(status.Convert(err).Message(), "max depth") {
		// The relationships the question runs through are too deep (or
		// loop): the data's fault, which its writer can mend.
		return problem.Wrap(problem.Conflict, fmt.Errorf("spicedb %s: %w", op, err),
			"the relationships this question runs through are too deep or loop (parents, groups); shorten them and ask again")
	}
	return fmt.Errorf("spicedb %s: %w", op, err)
}

// CheckItem is one question of a bulk check.
type CheckItem struct {
	Subject    SubjectRef
	Permission string
	Resource   Ref
}

// MaxBulk is how many questions one bulk check may ask.
const MaxBulk = 100

// CheckBulk answers up to MaxBulk checks of tenant t in one call, in
// order, at least as fresh as at. Same errors as Check, with the field
// naming the item ("items[3].resource.id").
func (c *Client) CheckBulk(ctx context.Context, t tenancy.ID, items []CheckItem, at ZedToken) ([]bool, ZedToken, error) {
	if len(items) == 0 || len(items) > MaxBulk {
		return nil, "", problem.InvalidField("items", fmt.Sprintf("must hold 1 to %d checks", MaxBulk))
	}
	return c.checkAll(ctx, t, items, bulkField, at)
}

// bulkField names item i of a bulk check in errors.
func bulkField(i int) string { return fmt.Sprintf("items[%d].", i) }

// checkItem checks question it of tenant t against the schema, naming
// its fields after prefix in errors ("" or "items[3].").
func checkItem(t tenancy.ID, prefix string, it CheckItem) (*v1.CheckBulkPermissionsRequestItem, error) {
	res, err := objectRef(t, prefix+"resource", it.Resource)
	if err != nil {
		return nil, err
	}
	if !HasPermission(it.Resource.Type, it.Permission) {
		return nil, problem.InvalidField(prefix+"permission", "is not a permission of "+it.Resource.Type)
	}
	sub, err := subjectRef(t, prefix+"subject", it.Subject)
	if err != nil {
		return nil, err
	}
	return &v1.CheckBulkPermissionsRequestItem{Resource: res, Permission: it.Permission, Subject: sub}, nil
}

// checkAll answers items of tenant t in one call, in order, with no
// bound on their number (SpiceDB's own applies), naming item i's fields
// after field(i) in errors. Same errors as CheckBulk.
func (c *Client) checkAll(ctx context.Context, t tenancy.ID, items []CheckItem, field func(int) string, at ZedToken) ([]bool, ZedToken, error) {
	req := &v1.CheckBulkPermissionsRequest{Consistency: consistency(at), Items: make([]*v1.CheckBulkPermissionsRequestItem, len(items))}
	for i, it := range items {
		item, err := checkItem(t, field(i), it)
		if err != nil {
			return nil, "", err
		}
		req.Items[i] = item
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	r, err := c.api.CheckBulkPermissions(ctx, req)
	if err != nil {
		return nil, "", callError("check permissions", err)
	}
	out := make([]bool, len(items))
	for i, p := range r.Pairs {
		if i >= len(out) {
			break
		}
		if e := p.GetError(); e != nil {
			// One failed question fails the answer: a partial answer
			// must not read as denials that may be allowed, or worse.
			return nil, "", callError("check permissions", status.ErrorProto(e))
		}
		out[i] = p.GetItem().GetPermissionship() == v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION
	}
	return out, ZedToken(r.CheckedAt.GetToken()), nil
}

// MaxLookup bounds how many resources a lookup returns.
const MaxLookup = 1000

// LookupResources returns the local ids of tenant t's objects of type
// typ on which subject has permission (at most MaxLookup), at least as
// fresh as at, disabled account or not (see Service.LookupResources).
func (c *Client) LookupResources(ctx context.Context, t tenancy.ID, subject SubjectRef, permission, typ string, at ZedToken) ([]string, error) {
	if _, ok := Schema[typ]; !ok {
		return nil, problem.InvalidField("resource_type", "is not a known object type")
	}
	if !HasPermission(typ, permission) {
		return nil, problem.InvalidField("permission", "is not a permission of "+typ)
	}
	sub, err := subjectRef(t, "subject", subject)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	stream, err := c.api.LookupResources(ctx, &v1.LookupResourcesRequest{
		Consistency: consistency(at), ResourceObjectType: typ, Permission: permission, Subject: sub, OptionalLimit: MaxLookup,
	})
	if err != nil {
		return nil, callError("lookup resources", err)
	}
	ids := []string{}
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return ids, nil
		}
		if err != nil {
			return nil, callError("lookup resources", err)
		}
		// Only ids of this tenant can match a subject of this tenant;
		// anything else is skipped, never shown.
		if id, ok := LocalID(t, r.ResourceObjectId); ok && r.Permissionship == v1.LookupPermissionship_LOOKUP_PERMISSIONSHIP_HAS_PERMISSION {
			ids = append(ids, id)
		}
	}
}

// Read returns tenant t's relationships whose resources are of type typ.
func (c *Client) Read(ctx context.Context, t tenancy.ID, typ string) ([]Relationship, error) {
	return c.read(ctx, t, &v1.RelationshipFilter{ResourceType: typ, OptionalResourceIdPrefix: t.String() + Separator})
}

// Subjects returns the subjects of tenant t's relationships res#relation,
// as they stand now.
func (c *Client) Subjects(ctx context.Context, t tenancy.ID, res Ref, relation string) ([]SubjectRef, error) {
	ref, err := objectRef(t, "resource", res)
	if err != nil {
		return nil, err
	}
	rs, err := c.read(ctx, t, &v1.RelationshipFilter{ResourceType: ref.ObjectType, OptionalResourceId: ref.ObjectId, OptionalRelation: relation})
	if err != nil {
		return nil, err
	}
	out := make([]SubjectRef, len(rs))
	for i, r := range rs {
		out[i] = r.Subject
	}
	return out, nil
}

// read returns tenant t's relationships that filter matches, fully
// consistent.
func (c *Client) read(ctx context.Context, t tenancy.ID, filter *v1.RelationshipFilter) ([]Relationship, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*c.timeout)
	defer cancel()
	stream, err := c.api.ReadRelationships(ctx, &v1.ReadRelationshipsRequest{
		Consistency:        &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}},
		RelationshipFilter: filter,
	})
	if err != nil {
		return nil, callError("read relationships", err)
	}
	var out []Relationship
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, callError("read relationships", err)
		}
		rel := r.Relationship
		res, ok1 := LocalID(t, rel.Resource.ObjectId)
		sub, ok2 := LocalID(t, rel.Subject.Object.ObjectId)
		if rel.Subject.Object.ObjectId == "*" {
			sub, ok2 = "*", true
		}
		if !ok1 || !ok2 {
			continue // not this tenant's: never written by it, never shown
		}
		out = append(out, Relationship{
			Resource: Ref{Type: rel.Resource.ObjectType, ID: res}, Relation: rel.Relation,
			Subject: SubjectRef{Ref: Ref{Type: rel.Subject.Object.ObjectType, ID: sub}, Relation: rel.Subject.OptionalRelation},
		})
	}
}
