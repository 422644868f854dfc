package rebac

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Questions about apps' resources, as the check API asks them.
//
// The schema takes a disabled account (tenant#disabled) out of every
// permission of the tenant and of its groups, but it cannot on apps'
// resources: apps write their relationships, which need not name the
// tenant, and a question may name a relation (viewer), which nothing
// subtracts from. So every question about a user on an app's resource
// also asks, in the same SpiceDB call and at the same revision, whether
// that user is disabled in the tenant, and denies if so. Relationships
// stay as they are: enabling the account gives back exactly what it had.

// disabledAsked reports whether a question about subject on an object
// of type typ must also ask whether subject is a disabled account: a
// user (not a set of them), on an object of the apps'.
func disabledAsked(subject SubjectRef, typ string) bool {
	return subject.Type == "user" && subject.Relation == "" && subject.ID != "*" && appTypes[typ]
}

// disabledQuestion asks whether user is a disabled account of the tenant.
func disabledQuestion(user SubjectRef) CheckItem {
	return CheckItem{Subject: SubjectRef{Ref: user.Ref}, Permission: "disabled", Resource: tenantRef()}
}

// Check reports whether subject has permission on resource in tenant t,
// seeing at least every change up to at, and returns the token the
// answer was computed at. A disabled account is denied on apps'
// resources, however the right was granted; the question costs one
// SpiceDB call all the same. Returns Invalid naming the field for input
// the schema does not know; Conflict for relationships too deep to
// follow; Unavailable (and false) when SpiceDB cannot answer.
func (s *Service) Check(ctx context.Context, t *tenancy.Tenant, subject SubjectRef, permission string, resource Ref, at ZedToken) (bool, ZedToken, error) {
	if s.client == nil {
		return false, "", problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	if !disabledAsked(subject, resource.Type) {
		return s.client.Check(ctx, t.ID, subject, permission, resource, at)
	}
	items := []CheckItem{{Subject: subject, Permission: permission, Resource: resource}, disabledQuestion(subject)}
	// Named as a single check's fields: only the first item can be
	// refused, the second is made of what the first has passed.
	answers, checkedAt, err := s.client.checkAll(ctx, t.ID, items, func(int) string { return "" }, at)
	if err != nil {
		return false, "", err
	}
	return answers[0] && !answers[1], checkedAt, nil
}

// CheckBulk answers up to MaxBulk questions of tenant t in one SpiceDB
// call, in order, as Check answers each. Same errors as Check, with the
// field naming the item ("items[3].resource.id").
func (s *Service) CheckBulk(ctx context.Context, t *tenancy.Tenant, items []CheckItem, at ZedToken) ([]bool, ZedToken, error) {
	if len(items) == 0 || len(items) > MaxBulk {
		return nil, "", problem.InvalidField("items", fmt.Sprintf("must hold 1 to %d checks", MaxBulk))
	}
	if s.client == nil {
		return nil, "", problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	// After the caller's items, one question per user they ask about
	// on apps' resources: at most MaxBulk more, in the same call.
	asked := append(make([]CheckItem, 0, 2*len(items)), items...)
	disabledAt := make([]int, len(items)) // item -> index of its user's question, 0 if none
	users := map[string]int{}
	for i, it := range items {
		if !disabledAsked(it.Subject, it.Resource.Type) {
			continue
		}
		j, ok := users[it.Subject.ID]
		if !ok {
			j = len(asked)
			users[it.Subject.ID] = j
			asked = append(asked, disabledQuestion(it.Subject))
		}
		disabledAt[i] = j
	}
	answers, checkedAt, err := s.client.checkAll(ctx, t.ID, asked, bulkField, at)
	if err != nil {
		return nil, "", err
	}
	allowed := answers[:len(items)]
	for i, j := range disabledAt {
		if j > 0 && answers[j] {
			allowed[i] = false
		}
	}
	return allowed, checkedAt, nil
}

// LookupResources returns the local ids of tenant t's objects of type
// typ on which subject has permission (at most MaxLookup), at least as
// fresh as at: none, on apps' resources, for a disabled account. Whether
// the account is disabled is asked alongside the lookup, not before it.
// Same errors as Check.
func (s *Service) LookupResources(ctx context.Context, t *tenancy.Tenant, subject SubjectRef, permission, typ string, at ZedToken) ([]string, error) {
	if s.client == nil {
		return nil, problem.Errorf(problem.Unavailable, "%s", unavailableMessage)
	}
	if !disabledAsked(subject, typ) {
		return s.client.LookupResources(ctx, t.ID, subject, permission, typ, at)
	}
	type answer struct {
		disabled bool
		err      error
	}
	asked := make(chan answer, 1)
	go func() {
		q := disabledQuestion(subject)
		disabled, _, err := s.client.Check(ctx, t.ID, q.Subject, q.Permission, q.Resource, at)
		asked <- answer{disabled, err}
	}()
	ids, err := s.client.LookupResources(ctx, t.ID, subject, permission, typ, at)
	a := <-asked
	switch {
	case err != nil:
		return nil, err
	case a.err != nil:
		return nil, a.err
	case a.disabled:
		return []string{}, nil
	}
	return ids, nil
}

// The check API's questions: those above, asked at the consistency token
// the app gave (or at the tenant's latest), with a share of the answers
// written to the audit trail.

// AppCheck is Check for the check API's caller by: at the consistency
// token given ("" for the tenant's latest), writing the decision to the
// audit trail if audited. Returns Check's errors, and Invalid naming
// consistency_token for a token this service did not give out.
func (s *Service) AppCheck(ctx context.Context, t *tenancy.Tenant, by Caller, item CheckItem, given string, audited bool) (bool, ZedToken, error) {
	at, err := s.consistency(ctx, t, given)
	if err != nil {
		return false, "", err
	}
	ok, checkedAt, err := s.Check(ctx, t, item.Subject, item.Permission, item.Resource, at)
	if err != nil {
		return false, "", tokenError(given, err)
	}
	if audited {
		s.auditChecks(ctx, t, by, []CheckItem{item}, []bool{ok})
	}
	return ok, checkedAt, nil
}

// AppCheckBulk is CheckBulk for the check API's caller by, as AppCheck
// is Check.
func (s *Service) AppCheckBulk(ctx context.Context, t *tenancy.Tenant, by Caller, items []CheckItem, given string, audited bool) ([]bool, ZedToken, error) {
	at, err := s.consistency(ctx, t, given)
	if err != nil {
		return nil, "", err
	}
	allowed, checkedAt, err := s.CheckBulk(ctx, t, items, at)
	if err != nil {
		return nil, "", tokenError(given, err)
	}
	if audited {
		s.auditChecks(ctx, t, by, items, allowed)
	}
	return allowed, checkedAt, nil
}

// AppLookupResources is LookupResources at the consistency token given
// ("" for the tenant's latest). Returns LookupResources' errors, and
// Invalid naming consistency_token as AppCheck does.
func (s *Service) AppLookupResources(ctx context.Context, t *tenancy.Tenant, subject SubjectRef, permission, typ, given string) ([]string, error) {
	at, err := s.consistency(ctx, t, given)
	if err != nil {
		return nil, err
	}
	ids, err := s.LookupResources(ctx, t, subject, permission, typ, at)
	if err != nil {
		return nil, tokenError(given, err)
	}
	return ids, nil
}

// consistency is the token a check for tenant t must be at least as
// fresh as: the caller's token if it sent one (from its own write), else
// the tenant's latest.
func (s *Service) consistency(ctx context.Context, t *tenancy.Tenant, given string) (ZedToken, error) {
	if given != "" {
		if len(given) > 1000 || !plausibleToken(given) {
			return "", problem.InvalidField("consistency_token", "is not a consistency token this service gave out")
		}
		return ZedToken(given), nil
	}
	return s.relay.Token(ctx, t)
}

// plausibleToken reports whether s could be a token SpiceDB gave out
// (base64 of a few bytes): anything else is refused before it is sent.
func plausibleToken(s string) bool {
	b, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(b) > 0
}

// tokenError is err, or, if the caller gave the consistency token and
// SpiceDB refused an argument, a refusal of that token: it is the one
// input SpiceDB sees unchecked (malformed, cut short, or another
// SpiceDB's).
func tokenError(given string, err error) error {
	if given != "" {
		switch status.Code(errors.Unwrap(err)) {
		case codes.InvalidArgument, codes.OutOfRange:
			e := problem.InvalidField("consistency_token", "is not a consistency token this service gave out")
			e.Err = err
			return e
		}
	}
	return err
}

// auditChecks writes the check API's decisions allowed on items, asked
// by by, to tenant t's audit trail in one transaction. A failure is
// logged: the answers stand.
func (s *Service) auditChecks(ctx context.Context, t *tenancy.Tenant, by Caller, items []CheckItem, allowed []bool) {
	err := s.db.Tx(ctx, t, func(q *queries.Queries) error {
		for i, it := range items {
			outcome := identity.Success
			if !allowed[i] {
				outcome = identity.Denied
			}
			details := map[string]string{"subject": it.Subject.Type + ":" + it.Subject.ID, "permission": it.Permission}
			actor := by.Principal.User
			if by.Principal.App != uuid.Nil {
				actor, details["app"] = by.Principal.App, by.Principal.App.String()
			}
			if err := identity.Audit(ctx, q, t, identity.Event{
				Actor: actor, Action: "permission.check", Target: it.Resource.Type + ":" + it.Resource.ID, Outcome: outcome, Meta: by.Meta, Details: details,
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Warn("rebac: cannot audit a sampled check", "tenant", t.Slug, "err", err)
	}
}
