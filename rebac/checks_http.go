package rebac

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// The check API, for SaaS apps: permission checks (single and bulk),
// resource lookups, and writes of relationships of the apps' own
// resources. A caller needs the tenant's manage_apps permission (its
// admins have it); everything it names is an object of the tenant the
// request resolved to.

// appGrantTTL is how long a caller's manage_apps permission is trusted
// without asking SpiceDB again: a check should cost one SpiceDB call, not
// two.
const appGrantTTL = 5 * time.Second

// appGrants remembers which callers may use the check API, briefly.
type appGrants struct {
	mu sync.Mutex
	m  map[[2]uuid.UUID]time.Time
}

func (g *appGrants) ok(t tenancy.ID, user uuid.UUID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, found := g.m[[2]uuid.UUID{t.UUID(), user}]
	return found && time.Now().Before(until)
}

func (g *appGrants) remember(t tenancy.ID, user uuid.UUID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil || len(g.m) > 10_000 {
		g.m = map[[2]uuid.UUID]time.Time{}
	}
	g.m[[2]uuid.UUID{t.UUID(), user}] = time.Now().Add(appGrantTTL)
}

func (h *HTTP) checkRoutes(r fiber.Router) {
	auth := h.auth.RequireUserOrApp
	r.Post("/v1/permissions/check", auth, h.requireApp, h.check)
	r.Post("/v1/permissions/check-bulk", auth, h.requireApp, h.checkBulk)
	r.Post("/v1/permissions/lookup-resources", auth, h.requireApp, h.lookupResources)
	r.Post("/v1/relationships", auth, h.requireApp, h.writeRelationships)
}

// requireApp admits callers with the tenant's manage_apps permission:
// users, and machine apps through the roles assigned to them.
func (h *HTTP) requireApp(c *fiber.Ctx) error {
	t := tenancy.Of(c)
	p := identity.PrincipalOf(c)
	who, subject := p.User, userSubject(p.User)
	if p.App != uuid.Nil {
		who, subject = p.App, appSubject(p.App)
	}
	if h.grants.ok(t.ID, who) {
		return c.Next()
	}
	ok, err := h.authz.SubjectAllowed(c.UserContext(), t, subject, "manage_apps")
	if err != nil {
		return err
	}
	if !ok {
		return problem.Errorf(problem.Forbidden, "the check API needs the tenant's manage_apps permission (for a machine app: a role that carries it)")
	}
	h.grants.remember(t.ID, who)
	return c.Next()
}

type objectJSON struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

type subjectJSON struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Relation string `json:"relation,omitempty"`
}

func (o objectJSON) ref() Ref { return Ref{Type: o.Type, ID: o.ID} }
func (s subjectJSON) ref() SubjectRef {
	return SubjectRef{Ref: Ref{Type: s.Type, ID: s.ID}, Relation: s.Relation}
}
func required(fields ...[2]string) error { return httpapi.Required(toMap(fields)) }

func toMap(fields [][2]string) map[string]string {
	m := make(map[string]string, len(fields))
	for _, f := range fields {
		m[f[0]] = f[1]
	}
	return m
}

type checkRequest struct {
	Subject          subjectJSON `json:"subject"`
	Permission       string      `json:"permission"`
	Resource         objectJSON  `json:"resource"`
	ConsistencyToken string      `json:"consistency_token"`
}

// item is the question the request asks.
func (r checkRequest) item() CheckItem {
	return CheckItem{Subject: r.Subject.ref(), Permission: r.Permission, Resource: r.Resource.ref()}
}

func (r checkRequest) check(prefix string) error {
	if err := required([2]string{prefix + "subject.type", r.Subject.Type}, [2]string{prefix + "subject.id", r.Subject.ID},
		[2]string{prefix + "permission", r.Permission}, [2]string{prefix + "resource.type", r.Resource.Type},
		[2]string{prefix + "resource.id", r.Resource.ID}); err != nil {
		return err
	}
	if err := r.Subject.one(prefix + "subject.id"); err != nil {
		return err
	}
	return askable(r.Resource.Type, r.Permission, prefix+"permission")
}

// askable refuses a question about one of Gatehouse's own objects
// (tenant, group, role) that names a relation rather than a permission:
// a relation is what was written, and answers without what the
// permissions take away (a disabled account, say). On apps' resources
// both are theirs to ask.
func askable(typ, permission, field string) error {
	d := Schema[typ]
	if typ == "resource" || d == nil || d.Permissions[permission] {
		return nil
	}
	if _, isRelation := d.Relations[permission]; isRelation {
		return problem.InvalidField(field, fmt.Sprintf("%s is a relation of %s; ask for one of its permissions", permission, typ))
	}
	return nil
}

// one refuses a wildcard subject: a question is about one subject.
func (s subjectJSON) one(field string) error {
	if s.ID == "*" {
		return problem.InvalidField(field, "must name one subject: wildcards are not accepted")
	}
	return nil
}

func (h *HTTP) check(c *fiber.Ctx) error {
	defer h.metrics.took("check", time.Now())
	var req checkRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := req.check(""); err != nil {
		return err
	}
	t := tenancy.Of(c)
	ok, checkedAt, err := h.authz.AppCheck(c.UserContext(), t, h.caller(c), req.item(), req.ConsistencyToken, h.sampled())
	if err != nil {
		return h.failed(t, "check", 1, err)
	}
	h.metrics.decided(t.Slug, "check", []bool{ok})
	httpapi.NoStore(c)
	return c.JSON(checkResponse{Allowed: ok, ConsistencyToken: checkedAt})
}

// checkResponse answers a check. (Fields in the order of their names, as
// the API has always sent them.)
type checkResponse struct {
	Allowed          bool     `json:"allowed"`
	ConsistencyToken ZedToken `json:"consistency_token"`
}

type checkBulkRequest struct {
	Items            []checkRequest `json:"items"`
	ConsistencyToken string         `json:"consistency_token"`
}

func (h *HTTP) checkBulk(c *fiber.Ctx) error {
	defer h.metrics.took("check_bulk", time.Now())
	var req checkBulkRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if len(req.Items) == 0 || len(req.Items) > MaxBulk {
		return problem.InvalidField("items", fmt.Sprintf("must hold 1 to %d checks", MaxBulk))
	}
	items := make([]CheckItem, len(req.Items))
	for i, it := range req.Items {
		if err := it.check(fmt.Sprintf("items[%d].", i)); err != nil {
			return err
		}
		if it.ConsistencyToken != "" {
			return problem.InvalidField(fmt.Sprintf("items[%d].consistency_token", i), "goes once, beside items")
		}
		items[i] = it.item()
	}
	t := tenancy.Of(c)
	allowed, checkedAt, err := h.authz.AppCheckBulk(c.UserContext(), t, h.caller(c), items, req.ConsistencyToken, h.sampled())
	if err != nil {
		return h.failed(t, "check_bulk", len(items), err)
	}
	h.metrics.decided(t.Slug, "check_bulk", allowed)
	results := make([]checkResult, len(allowed))
	for i, ok := range allowed {
		results[i] = checkResult{Allowed: ok}
	}
	httpapi.NoStore(c)
	return c.JSON(checkBulkResponse{ConsistencyToken: checkedAt, Results: results})
}

// checkBulkResponse answers a bulk check, in the order of its items.
// (Fields in the order of their names, as the API has always sent them.)
type checkBulkResponse struct {
	ConsistencyToken ZedToken      `json:"consistency_token"`
	Results          []checkResult `json:"results"`
}

type checkResult struct {
	Allowed bool `json:"allowed"`
}

type lookupRequest struct {
	Subject          subjectJSON `json:"subject"`
	Permission       string      `json:"permission"`
	ResourceType     string      `json:"resource_type"`
	ConsistencyToken string      `json:"consistency_token"`
}

func (h *HTTP) lookupResources(c *fiber.Ctx) error {
	defer h.metrics.took("lookup_resources", time.Now())
	var req lookupRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if err := required([2]string{"subject.type", req.Subject.Type}, [2]string{"subject.id", req.Subject.ID},
		[2]string{"permission", req.Permission}, [2]string{"resource_type", req.ResourceType}); err != nil {
		return err
	}
	if err := req.Subject.one("subject.id"); err != nil {
		return err
	}
	if err := askable(req.ResourceType, req.Permission, "permission"); err != nil {
		return err
	}
	ids, err := h.authz.AppLookupResources(c.UserContext(), tenancy.Of(c), req.Subject.ref(), req.Permission, req.ResourceType, req.ConsistencyToken)
	if err != nil {
		return err
	}
	httpapi.NoStore(c)
	return c.JSON(lookupResponse{Resources: ids, Truncated: len(ids) == MaxLookup})
}

// lookupResponse lists resources; Truncated when there may be more than
// the MaxLookup listed.
type lookupResponse struct {
	Resources []string `json:"resources"`
	Truncated bool     `json:"truncated"`
}

type relationshipJSON struct {
	Resource objectJSON  `json:"resource"`
	Relation string      `json:"relation"`
	Subject  subjectJSON `json:"subject"`
}

type relationshipsRequest struct {
	Touch  []relationshipJSON `json:"touch"`
	Delete []relationshipJSON `json:"delete"`
}

// appTypes are the object types whose relationships apps write: their
// own resources. Tenants, groups and roles are Gatehouse's to keep.
// Questions about users on them deny disabled accounts (Service.Check).
var appTypes = map[string]bool{"resource": true}

func (h *HTTP) writeRelationships(c *fiber.Ctx) error {
	var req relationshipsRequest
	if err := httpapi.DecodeJSON(c, &req); err != nil {
		return err
	}
	if n := len(req.Touch) + len(req.Delete); n == 0 || n > MaxBulk {
		return problem.Errorf(problem.Invalid, "give 1 to %d relationships in touch and delete", MaxBulk)
	}
	convert := func(name string, in []relationshipJSON) ([]Relationship, error) {
		out := make([]Relationship, len(in))
		for i, r := range in {
			field := fmt.Sprintf("%s[%d].", name, i)
			if err := required([2]string{field + "resource.type", r.Resource.Type}, [2]string{field + "resource.id", r.Resource.ID},
				[2]string{field + "relation", r.Relation}, [2]string{field + "subject.type", r.Subject.Type},
				[2]string{field + "subject.id", r.Subject.ID}); err != nil {
				return nil, err
			}
			if !appTypes[r.Resource.Type] {
				return nil, problem.InvalidField(field+"resource.type", "must be resource: apps write relationships of their own resources")
			}
			out[i] = Relationship{Resource: r.Resource.ref(), Relation: r.Relation, Subject: r.Subject.ref()}
		}
		return out, nil
	}
	touch, err := convert("touch", req.Touch)
	if err != nil {
		return err
	}
	del, err := convert("delete", req.Delete)
	if err != nil {
		return err
	}
	written, err := h.authz.WriteRelationships(c.UserContext(), tenancy.Of(c), touch, del)
	if err != nil {
		return err
	}
	return c.JSON(writeResponse{ConsistencyToken: written})
}

// writeResponse gives the token a check must be at least as fresh as to
// see a write.
type writeResponse struct {
	ConsistencyToken ZedToken `json:"consistency_token"`
}

// failed counts the items of a check SpiceDB could not answer (they are
// denied: the caller gets 503), and returns err.
func (h *HTTP) failed(t *tenancy.Tenant, endpoint string, items int, err error) error {
	if problem.CodeOf(err) == problem.Unavailable {
		h.metrics.unavailable(t.Slug, endpoint, items)
	}
	return err
}

// sampled reports whether a request's decisions go to the audit trail:
// a share of them (HTTPOptions.AuditSample).
func (h *HTTP) sampled() bool {
	return h.auditSample > 0 && rand.Float64() < h.auditSample
}
