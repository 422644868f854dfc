package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Claims are the claims of a Gatehouse access token.
type Claims struct {
	jwt.RegisteredClaims
	Tenant  string `json:"tid"` // tenant id
	Session string `json:"sid"` // session id
}

// Leeway is the clock skew tolerated when checking exp, nbf and iat.
const Leeway = 30 * time.Second

// KeySource finds the public key a token names by kid.
type KeySource interface {
	PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error)
}

// Expect is what a token must say to be accepted.
type Expect struct {
	Issuer   string
	Audience string
	Tenant   tenancy.ID
}

// VerifyAccessToken checks a Gatehouse access token and returns its
// claims. It pins the algorithm to EdDSA (no "none", no HMAC confusion),
// requires exp, checks iss, aud, exp, nbf and iat with Leeway, and refuses
// a token whose tenant is not the expected one, so that a token of tenant
// A is worthless on tenant B's host even if both shared a key. SaaS apps
// in Go can use it with their own KeySource (keys from the tenant's JWKS).
// Returns Unauthorized for any token that does not pass.
func VerifyAccessToken(ctx context.Context, token string, keys KeySource, want Expect) (*Claims, error) {
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
		if kid == "" {
			return nil, errors.New("no kid")
		}
		return keys.PublicKey(ctx, kid)
	})
	if err != nil {
		if problem.CodeOf(err) == problem.Unavailable {
			return nil, err
		}
		return nil, problem.Wrap(problem.Unauthorized, err, "invalid or expired access token")
	}
	if claims.Tenant != want.Tenant.String() {
		return nil, problem.Errorf(problem.Unauthorized, "invalid or expired access token")
	}
	if claims.Subject == "" || claims.Session == "" || claims.ID == "" {
		return nil, problem.Errorf(problem.Unauthorized, "invalid or expired access token")
	}
	return &claims, nil
}

// TokenParams describe an access token to issue.
type TokenParams struct {
	Issuer   string
	Audience string
	User     uuid.UUID
	Session  uuid.UUID
	TTL      time.Duration
}

// Issue signs an access token for tenant t with its current key. Returns
// the token and its lifetime.
func (k *Keys) Issue(ctx context.Context, t *tenancy.Tenant, p TokenParams) (string, error) {
	s, err := k.signer(ctx, t)
	if err != nil {
		return "", err
	}
	now := k.now()
	jti := make([]byte, 16)
	rand.Read(jti)
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    p.Issuer,
			Subject:   p.User.String(),
			Audience:  jwt.ClaimStrings{p.Audience},
			ExpiresAt: jwt.NewNumericDate(now.Add(p.TTL)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        base64.RawURLEncoding.EncodeToString(jti),
		},
		Tenant:  t.ID.String(),
		Session: p.Session.String(),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = s.kid
	signed, err := tok.SignedString(s.private)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return signed, nil
}

// TenantKeys is the KeySource of one tenant's published keys, read through
// Keys (for Gatehouse's own endpoints).
func (k *Keys) TenantKeys(t *tenancy.Tenant) KeySource { return tenantKeys{k, t} }

type tenantKeys struct {
	k *Keys
	t *tenancy.Tenant
}

func (tk tenantKeys) PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	return tk.k.publicKey(ctx, tk.t, kid)
}

// publicKey returns tenant t's published key kid. Keys are cached briefly
// with the opened signer; a miss reads the table.
func (k *Keys) publicKey(ctx context.Context, t *tenancy.Tenant, kid string) (ed25519.PublicKey, error) {
	k.mu.Lock()
	s, ok := k.signers[t.ID]
	k.mu.Unlock()
	if ok && s.kid == kid && k.now().Before(s.until) {
		return s.private.Public().(ed25519.PublicKey), nil
	}
	k.mu.Lock()
	pub, ok := k.published[publishedKey{t.ID, kid}]
	k.mu.Unlock()
	if ok && k.now().Before(pub.until) {
		return pub.key, nil
	}
	// Anyone may send tokens with made-up kids: an unknown one is
	// remembered for a while, so that a stream of them costs no reads.
	// Kids are random, so none is seen before its key exists.
	if until, ok := k.unknownKids.Get(publishedKey{t.ID, kid}); ok && k.now().Before(until) {
		return nil, errUnknownKid
	}
	// New kids share the tenant's reads of its keys, at most one a
	// second: a stream of different made-up kids costs no more, and a
	// new key's token waits a second at most. A read that began before
	// this token arrived may predate its key: then one more.
	asked := k.now()
	for range 2 {
		keys, began, err := k.read(ctx, t)
		if err != nil {
			return nil, err
		}
		for _, key := range keys {
			if key.Kid == kid {
				k.mu.Lock()
				k.published[publishedKey{t.ID, kid}] = publishedEntry{key: key.Public, until: k.now().Add(k.ttl)}
				k.mu.Unlock()
				return key.Public, nil
			}
		}
		if !began.Before(asked) {
			break
		}
	}
	k.unknownKids.Add(publishedKey{t.ID, kid}, k.now().Add(unknownKidTTL))
	return nil, errUnknownKid
}

// keyReadInterval is how often a tenant's keys are read for kids not
// found in memory, at most.
const keyReadInterval = time.Second

// read lists tenant t's published keys for a kid not found in memory,
// sharing the read with every such lookup of the tenant meanwhile and
// starting it no sooner than keyReadInterval after the last. It returns
// the keys and when their read began.
func (k *Keys) read(ctx context.Context, t *tenancy.Tenant) ([]SigningKey, time.Time, error) {
	type result struct {
		keys  []SigningKey
		began time.Time
	}
	v, err, _ := k.reads.Do(t.ID.String(), func() (any, error) {
		// Shared by every lookup waiting: one caller's going away must
		// not fail the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		k.mu.Lock()
		wait := k.lastRead[t.ID].Add(keyReadInterval).Sub(k.now())
		k.mu.Unlock()
		if wait > 0 {
			timer := time.NewTimer(wait)
			defer timer.Stop()
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-timer.C:
			}
		}
		began := k.now()
		k.mu.Lock()
		k.lastRead[t.ID] = began
		k.mu.Unlock()
		keys, err := k.list(ctx, t)
		k.keyReads.Add(1)
		return result{keys, began}, err
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	r := v.(result)
	return r.keys, r.began, nil
}

var errUnknownKid = errors.New("unknown kid")

// Bounds of the memory of unknown kids.
const (
	unknownKids   = 10_000
	unknownKidTTL = 10 * time.Second
)

type publishedKey struct {
	t   tenancy.ID
	kid string
}

type publishedEntry struct {
	key   ed25519.PublicKey
	until time.Time
}
