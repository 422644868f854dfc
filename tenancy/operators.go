package tenancy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// operatorTokenPrefix marks operator API tokens, so that a leaked one is
// recognised for what it is (by secret scanners too).
const operatorTokenPrefix = "gho_"

var operatorName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Scope is what an operator token allows on the operator API.
type Scope string

// Operator token scopes.
const (
	ScopeRead   Scope = "read"   // follow tenants' moves
	ScopeMove   Scope = "move"   // promote, demote, resume and abort moves
	ScopeRetire Scope = "retire" // remove a moved tenant's old copy, by force too
)

// Scopes are every scope, in the order they are listed.
var Scopes = []Scope{ScopeRead, ScopeMove, ScopeRetire}

// Operator token lifetimes.
const (
	DefaultOperatorTokenTTL = 90 * 24 * time.Hour
	MaxOperatorTokenTTL     = 365 * 24 * time.Hour
)

// ParseScopes parses a comma-separated list of scopes ("read,move") into
// the order of Scopes. Returns Invalid for an unknown or empty one.
func ParseScopes(s string) ([]Scope, error) {
	var given []Scope
	for part := range strings.SplitSeq(s, ",") {
		sc := Scope(strings.TrimSpace(part))
		if !slices.Contains(Scopes, sc) {
			return nil, problem.InvalidField("scope", fmt.Sprintf("%q is not one of read, move, retire", string(sc)))
		}
		given = append(given, sc)
	}
	var out []Scope
	for _, sc := range Scopes {
		if slices.Contains(given, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// OperatorTokenOptions are what a new operator token may do, and for how
// long.
type OperatorTokenOptions struct {
	Scopes []Scope // default: read only
	// TTL is how long the token lives, at most MaxOperatorTokenTTL;
	// default DefaultOperatorTokenTTL.
	TTL time.Duration
}

// OperatorToken is an operator API token as listed: never the token.
type OperatorToken struct {
	Name     string     `json:"name"`
	Scopes   []Scope    `json:"scopes"`
	Created  time.Time  `json:"created_at"`
	Expires  time.Time  `json:"expires_at"`
	LastUsed *time.Time `json:"last_used_at,omitempty"`
}

// Operator is the holder of a live operator token.
type Operator struct {
	Name    string
	Scopes  []Scope
	Expires time.Time
}

// Can reports whether the operator's token has scope s.
func (o *Operator) Can(s Scope) bool { return slices.Contains(o.Scopes, s) }

// CreateOperatorToken makes an API token for operator name and returns
// it; only its hash is kept, so this is the one time it is seen. Returns
// Invalid for a bad name, scope or lifetime, Conflict if the name has a
// token already.
func (r *Registry) CreateOperatorToken(ctx context.Context, name string, o OperatorTokenOptions) (string, error) {
	if !operatorName.MatchString(name) {
		return "", problem.InvalidField("name", "must be 1-63 lower-case letters, digits, '.', '_' or '-'")
	}
	for _, s := range o.Scopes {
		if !slices.Contains(Scopes, s) {
			return "", problem.InvalidField("scope", fmt.Sprintf("%q is not one of read, move, retire", string(s)))
		}
	}
	scopes := []string{}
	for _, s := range Scopes { // in a canonical order, without repeats
		if slices.Contains(o.Scopes, s) {
			scopes = append(scopes, string(s))
		}
	}
	if len(scopes) == 0 {
		scopes = []string{string(ScopeRead)}
	}
	switch {
	case o.TTL == 0:
		o.TTL = DefaultOperatorTokenTTL
	case o.TTL < time.Minute || o.TTL > MaxOperatorTokenTTL:
		return "", problem.InvalidField("expires_in", "must be from 1m to 8760h (a year)")
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := operatorTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	hash := sha256.Sum256([]byte(token))
	err := queries.New(r.admin).CreateOperatorToken(ctx, queries.CreateOperatorTokenParams{
		Name: name, TokenHash: hash[:], Scopes: scopes, ExpiresAt: time.Now().Add(o.TTL),
	})
	if queries.IsUniqueViolation(err) {
		return "", problem.Errorf(problem.Conflict, "operator %q has a token already; revoke it first", name)
	}
	if err != nil {
		return "", fmt.Errorf("create operator token: %w", err)
	}
	return token, nil
}

// RevokeOperatorToken deletes operator name's token. Returns NotFound if
// there is none.
func (r *Registry) RevokeOperatorToken(ctx context.Context, name string) error {
	n, err := queries.New(r.admin).DeleteOperatorToken(ctx, name)
	if err != nil {
		return fmt.Errorf("revoke operator token: %w", err)
	}
	if n == 0 {
		return problem.Errorf(problem.NotFound, "operator %q has no token", name)
	}
	return nil
}

// OperatorTokens lists the operators that have a token, expired ones too.
func (r *Registry) OperatorTokens(ctx context.Context) ([]OperatorToken, error) {
	rows, err := queries.New(r.admin).ListOperatorTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list operator tokens: %w", err)
	}
	out := make([]OperatorToken, len(rows))
	for i, row := range rows {
		out[i] = OperatorToken{Name: row.Name, Scopes: toScopes(row.Scopes), Created: row.CreatedAt, Expires: row.ExpiresAt, LastUsed: row.LastUsedAt}
	}
	return out, nil
}

func toScopes(ss []string) []Scope {
	out := make([]Scope, len(ss))
	for i, s := range ss {
		out[i] = Scope(s)
	}
	return out
}

// Operator returns the operator token belongs to. Returns Unauthorized
// for anything but a live token.
func (r *Registry) Operator(ctx context.Context, token string) (*Operator, error) {
	if !strings.HasPrefix(token, operatorTokenPrefix) || len(token) > 100 {
		return nil, problem.Errorf(problem.Unauthorized, "an operator token is required")
	}
	hash := sha256.Sum256([]byte(token))
	row, err := queries.New(r.admin).UseOperatorToken(ctx, hash[:])
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, problem.Errorf(problem.Unauthorized, "an operator token is required")
	}
	if err != nil {
		return nil, unavailable(err)
	}
	if row.Expired {
		return nil, problem.Errorf(problem.Unauthorized, "the operator token has expired")
	}
	return &Operator{Name: row.Name, Scopes: toScopes(row.Scopes), Expires: row.ExpiresAt}, nil
}

// OperatorAction is what an operator did to a move through the operator
// API.
type OperatorAction struct {
	At       time.Time `json:"at"`
	Operator string    `json:"operator"`
	// Action is promote, demote, resume, abort, retire or force_retire.
	Action string `json:"action"`
}

// RecordOperatorAction records that operator does action to move mv:
// before it is carried out, so that nothing is done unrecorded.
func (r *Registry) RecordOperatorAction(ctx context.Context, operator, action string, mv *Move) error {
	err := queries.New(r.admin).RecordOperatorAction(ctx, queries.RecordOperatorActionParams{
		Operator: operator, Action: action, TenantID: mv.Tenant.UUID(), TenantSlug: mv.Slug, MoveID: mv.ID,
	})
	if err != nil {
		return unavailable(fmt.Errorf("record operator action: %w", err))
	}
	return nil
}

// OperatorActions returns what operators did to move, oldest first.
func (r *Registry) OperatorActions(ctx context.Context, move uuid.UUID) ([]OperatorAction, error) {
	rows, err := queries.New(r.admin).OperatorActionsOnMove(ctx, move)
	if err != nil {
		return nil, unavailable(fmt.Errorf("operator actions: %w", err))
	}
	out := make([]OperatorAction, len(rows))
	for i, row := range rows {
		out[i] = OperatorAction{At: row.At, Operator: row.Operator, Action: row.Action}
	}
	return out, nil
}
