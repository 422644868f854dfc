package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the claims of a Gatehouse access token.
type Claims struct {
	jwt.RegisteredClaims
	Tenant  string `json:"tid"` // tenant id
	Session string `json:"sid"` // session id
}

// Leeway is the clock skew tolerated when checking exp, nbf and iat.
const Leeway = 30 * time.Second

// KeySource finds the public key a token names by kid. It answers
// ErrUnknownKey for a kid it has no key for; any other error means the
// keys could not be had.
type KeySource interface {
	PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error)
}

// ErrUnknownKey is what a KeySource answers for a kid it has no key for:
// the token is then refused as invalid (ErrInvalidToken). Any other
// failure of a KeySource means the keys could not be had
// (*KeysUnavailableError).
var ErrUnknownKey = errors.New("no key has this kid")

// ErrInvalidToken is in the chain of every error for a token that does
// not pass: malformed, badly signed, of an unknown key, expired, or for
// another issuer, audience or tenant. A client may throw such a token
// away.
var ErrInvalidToken = errors.New("invalid or expired access token")

// KeysUnavailableError is the error for a token that could not be
// checked because what checking needs could not be had (the KeySource
// failed, or a Client could not learn its tenant's id). It says nothing
// of the token: try again later, and keep the token.
type KeysUnavailableError struct {
	Err error
}

func (e *KeysUnavailableError) Error() string { return "signing keys unavailable: " + e.Err.Error() }
func (e *KeysUnavailableError) Unwrap() error { return e.Err }

// Expect is what a token must say to be accepted. Every field is
// required.
type Expect struct {
	Issuer   string // iss: the tenant's URL, e.g. https://acme.gatehouse.example
	Audience string // aud: the same URL for Gatehouse's access tokens
	Tenant   string // tid: the tenant's id
}

// Bounds of what is parsed of a token before its signature is checked.
const (
	maxTokenSize = 8 << 10
	maxKidSize   = 256
)

// VerifyAccessToken checks a Gatehouse access token and returns its
// claims. It pins the algorithm to EdDSA (no "none", no HMAC confusion),
// requires exp, checks iss, aud, exp, nbf and iat with Leeway, requires
// sub, sid and jti, and refuses a token whose tenant is not want.Tenant,
// so that a token of tenant A is worthless on tenant B even if both
// shared a key.
//
// Returns an error wrapping ErrInvalidToken for any token that does not
// pass, and a *KeysUnavailableError when keys failed with anything but
// ErrUnknownKey. An incomplete want is a programming error, returned as
// neither.
func VerifyAccessToken(ctx context.Context, token string, keys KeySource, want Expect) (*Claims, error) {
	if want.Issuer == "" || want.Audience == "" || want.Tenant == "" {
		return nil, errors.New("verify access token: Expect needs Issuer, Audience and Tenant")
	}
	if len(token) > maxTokenSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenSize)
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(want.Issuer),
		jwt.WithAudience(want.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
	)
	var claims Claims
	_, err := parser.ParseWithClaims(token, &claims, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		if kid == "" || len(kid) > maxKidSize {
			return nil, ErrUnknownKey
		}
		key, err := keys.PublicKey(ctx, kid)
		if err != nil && !errors.Is(err, ErrUnknownKey) {
			return nil, &KeysUnavailableError{Err: err}
		}
		return key, err
	})
	if ku, ok := errors.AsType[*KeysUnavailableError](err); ok {
		return nil, ku
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if claims.Tenant != want.Tenant {
		return nil, fmt.Errorf("%w: of another tenant", ErrInvalidToken)
	}
	if claims.Subject == "" || claims.Session == "" || claims.ID == "" {
		return nil, fmt.Errorf("%w: sub, sid or jti missing", ErrInvalidToken)
	}
	return &claims, nil
}
