package client

import (
	"context"
	"fmt"
	"net/http"
)

// The check API: permission checks, bulk checks, resource lookups and
// relationship writes. Every call needs Options.Token, a token of an
// account with the tenant's manage_apps permission, and names objects of
// the tenant only. Refusals are *APIError: 400 invalid (with Fields),
// 401 unauthorized, 403 forbidden (no manage_apps), 429 too_many and 503
// unavailable (with RetryAfter).

// ConsistencyToken says how fresh an answer must be: a check given the
// token a write returned sees that write. The zero value asks for the
// tenant's latest state as Gatehouse knows it.
type ConsistencyToken string

// Object is a resource: an app's own ("resource", its id) or one of
// Gatehouse's (tenant, group, role).
type Object struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Subject is who a question or relationship is about: a user, or a set
// of subjects (a group's members: Type "group", Relation "member").
type Subject struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Relation string `json:"relation,omitempty"`
}

// Question asks whether Subject has Permission on Resource.
type Question struct {
	Subject    Subject `json:"subject"`
	Permission string  `json:"permission"`
	Resource   Object  `json:"resource"`
}

// Decision is the answer to a Question, with the consistency it was
// checked at.
type Decision struct {
	Allowed          bool             `json:"allowed"`
	ConsistencyToken ConsistencyToken `json:"consistency_token"`
}

// Check asks one Question (POST /v1/permissions/check), at least as fresh
// as at.
func (c *Client) Check(ctx context.Context, q Question, at ConsistencyToken) (Decision, error) {
	req := struct {
		Question
		ConsistencyToken ConsistencyToken `json:"consistency_token,omitempty"`
	}{q, at}
	var d Decision
	err := c.do(ctx, "check", http.MethodPost, "/v1/permissions/check", true, req, &d)
	return d, err
}

// BulkDecision answers Questions in their order, all checked at one
// consistency.
type BulkDecision struct {
	Allowed          []bool
	ConsistencyToken ConsistencyToken
}

// CheckBulk asks up to 100 Questions at once (POST
// /v1/permissions/check-bulk), at least as fresh as at.
func (c *Client) CheckBulk(ctx context.Context, qs []Question, at ConsistencyToken) (BulkDecision, error) {
	req := struct {
		Items            []Question       `json:"items"`
		ConsistencyToken ConsistencyToken `json:"consistency_token,omitempty"`
	}{qs, at}
	var res struct {
		Results []struct {
			Allowed bool `json:"allowed"`
		} `json:"results"`
		ConsistencyToken ConsistencyToken `json:"consistency_token"`
	}
	if err := c.do(ctx, "check bulk", http.MethodPost, "/v1/permissions/check-bulk", true, req, &res); err != nil {
		return BulkDecision{}, err
	}
	if len(res.Results) != len(qs) {
		return BulkDecision{}, fmt.Errorf("check bulk: %d answers to %d questions", len(res.Results), len(qs))
	}
	d := BulkDecision{Allowed: make([]bool, len(qs)), ConsistencyToken: res.ConsistencyToken}
	for i, r := range res.Results {
		d.Allowed[i] = r.Allowed
	}
	return d, nil
}

// Lookup asks which resources of ResourceType Subject has Permission on.
type Lookup struct {
	Subject      Subject `json:"subject"`
	Permission   string  `json:"permission"`
	ResourceType string  `json:"resource_type"`
}

// Resources answers a Lookup: the resources' ids, at most 1,000;
// Truncated if there may be more.
type Resources struct {
	IDs       []string `json:"resources"`
	Truncated bool     `json:"truncated"`
}

// LookupResources answers a Lookup (POST
// /v1/permissions/lookup-resources), at least as fresh as at. The answer
// carries no consistency token.
func (c *Client) LookupResources(ctx context.Context, l Lookup, at ConsistencyToken) (Resources, error) {
	req := struct {
		Lookup
		ConsistencyToken ConsistencyToken `json:"consistency_token,omitempty"`
	}{l, at}
	var r Resources
	err := c.do(ctx, "lookup resources", http.MethodPost, "/v1/permissions/lookup-resources", true, req, &r)
	return r, err
}

// Relationship says that Subject has Relation to Resource, which is one
// of the app's own (Type "resource").
type Relationship struct {
	Resource Object  `json:"resource"`
	Relation string  `json:"relation"`
	Subject  Subject `json:"subject"`
}

// WriteRelationships writes relationships of the app's resources (POST
// /v1/relationships): touch creates them or leaves them be, del removes
// them; up to 100 in all, in one write. Returns the token of the write,
// for checks that must see it.
func (c *Client) WriteRelationships(ctx context.Context, touch, del []Relationship) (ConsistencyToken, error) {
	req := struct {
		Touch  []Relationship `json:"touch,omitempty"`
		Delete []Relationship `json:"delete,omitempty"`
	}{touch, del}
	var res struct {
		ConsistencyToken ConsistencyToken `json:"consistency_token"`
	}
	err := c.do(ctx, "write relationships", http.MethodPost, "/v1/relationships", true, req, &res)
	return res.ConsistencyToken, err
}
