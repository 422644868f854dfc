package tenancy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// operatorTokenPrefix marks operator API tokens, so that a leaked one is
// recognised for what it is (by secret scanners too).
const operatorTokenPrefix = "gho_"

var operatorName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// OperatorToken is an operator API token as listed: never the token.
type OperatorToken struct {
	Name     string     `json:"name"`
	Created  time.Time  `json:"created_at"`
	LastUsed *time.Time `json:"last_used_at,omitempty"`
}

// CreateOperatorToken makes an API token for operator name and returns
// it; only its hash is kept, so this is the one time it is seen. Returns
// Invalid for a bad name, Conflict if the name has a token already.
func (r *Registry) CreateOperatorToken(ctx context.Context, name string) (string, error) {
	if !operatorName.MatchString(name) {
		return "", problem.InvalidField("name", "must be 1-63 lower-case letters, digits, '.', '_' or '-'")
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := operatorTokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	hash := sha256.Sum256([]byte(token))
	err := queries.New(r.admin).CreateOperatorToken(ctx, queries.CreateOperatorTokenParams{Name: name, TokenHash: hash[:]})
	if isUniqueViolation(err) {
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

// OperatorTokens lists the operators that have a token.
func (r *Registry) OperatorTokens(ctx context.Context) ([]OperatorToken, error) {
	rows, err := queries.New(r.admin).ListOperatorTokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("list operator tokens: %w", err)
	}
	out := make([]OperatorToken, len(rows))
	for i, row := range rows {
		out[i] = OperatorToken{Name: row.Name, Created: row.CreatedAt, LastUsed: row.LastUsedAt}
	}
	return out, nil
}

// Operator returns the name of the operator token belongs to. Returns
// Unauthorized for anything but a live token.
func (r *Registry) Operator(ctx context.Context, token string) (string, error) {
	if !strings.HasPrefix(token, operatorTokenPrefix) || len(token) > 100 {
		return "", problem.Errorf(problem.Unauthorized, "an operator token is required")
	}
	hash := sha256.Sum256([]byte(token))
	name, err := queries.New(r.admin).UseOperatorToken(ctx, hash[:])
	if errors.Is(err, pgx.ErrNoRows) {
		return "", problem.Errorf(problem.Unauthorized, "an operator token is required")
	}
	if err != nil {
		return "", unavailable(err)
	}
	return name, nil
}
