package identity

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity/client"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Claims are the claims of a Gatehouse access token (client.Claims).
type Claims = client.Claims

// Leeway is the clock skew tolerated when checking exp, nbf and iat.
const Leeway = client.Leeway

// KeySource finds the public key a token names by kid (client.KeySource).
type KeySource = client.KeySource

// Expect is what a token must say to be accepted.
type Expect struct {
	Issuer   string
	Audience string
	Tenant   tenancy.ID
}

// VerifyAccessToken checks a Gatehouse access token and returns its
// claims: client.VerifyAccessToken (the one implementation, which SaaS
// apps use too), its errors put in Gatehouse's terms. Returns
// Unauthorized for any token that does not pass, and Unavailable (with
// Retry-After) when keys could not be had: that says nothing of the
// token, and a 401 would make clients throw a good one away.
func VerifyAccessToken(ctx context.Context, token string, keys KeySource, want Expect) (*Claims, error) {
	c, err := client.VerifyAccessToken(ctx, token, keys, client.Expect{Issuer: want.Issuer, Audience: want.Audience, Tenant: want.Tenant.String()})
	if ku, ok := errors.AsType[*client.KeysUnavailableError](err); ok {
		if problem.CodeOf(ku.Err) == problem.Unavailable {
			return nil, ku.Err
		}
		return nil, problem.Wrap(problem.Unavailable, ku.Err, "signing keys unavailable, try again later")
	}
	if errors.Is(err, client.ErrInvalidToken) {
		return nil, problem.Wrap(problem.Unauthorized, err, "invalid or expired access token")
	}
	if err != nil {
		return nil, err
	}
	return c, nil
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
	return k.sign(s, t, p)
}

// sign is Issue with tenant t's signing key s at hand.
func (k *Keys) sign(s *signer, t *tenancy.Tenant, p TokenParams) (string, error) {
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

// ErrUnknownKey is what a KeySource answers for a kid it has no key for:
// the token is then refused as invalid (401). Any other failure of a
// KeySource means the keys could not be had, and is a 503
// (client.ErrUnknownKey).
var ErrUnknownKey = client.ErrUnknownKey

// keySet is the memory of one tenant's published keys.
type keySet struct {
	keys  map[string]crypto.PublicKey // by kid: ed25519.PublicKey or *rsa.PublicKey
	fresh time.Time                   // until when it is used without reading again
	began time.Time                   // when the read that made it began
}

// publicKey returns tenant t's published key kid.
//
// A tenant's published keys stay in memory for KeySetTTL, and a change
// of them (rotation, retirement) drops them at once on every server (the
// tenant change notification; see Forget). While the database cannot be
// read, the keys last read go on verifying tokens: a short outage does
// not stop verification, and never turns a valid token into a 401.
func (k *Keys) publicKey(ctx context.Context, t *tenancy.Tenant, kid string) (ed25519.PublicKey, error) {
	key, err := k.key(ctx, t, kid)
	if err != nil {
		return nil, err
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, ErrUnknownKey // an RSA key's kid: no Ed25519 key has it
	}
	return pub, nil
}

// key is publicKey for a key of either algorithm.
func (k *Keys) key(ctx context.Context, t *tenancy.Tenant, kid string) (crypto.PublicKey, error) {
	if s, ok := k.signers.Get(t.ID); ok && s.kid == kid && k.now().Before(s.until) {
		return s.private.Public(), nil
	}
	if s, ok := k.rsaSigners.Get(t.ID); ok && s.kid == kid && k.now().Before(s.until) {
		return &s.private.PublicKey, nil
	}
	known, _ := k.keySets.Get(t.ID)
	if known != nil && k.now().Before(known.fresh) {
		if key, ok := known.keys[kid]; ok {
			return key, nil
		}
	}
	// Anyone may send tokens with made-up kids: an unknown one is
	// remembered for a while, so that a stream of them costs no reads.
	// Kids are random, so none is seen before its key exists.
	if until, ok := k.unknownKids.Get(publishedKey{t.ID, kid}); ok && k.now().Before(until) {
		return nil, ErrUnknownKey
	}
	// Reads share the tenant's one read at a time, at most one a second:
	// a stream of different made-up kids costs no more, and a new key's
	// token waits a second at most. A read that began before this token
	// arrived may predate its key: then one more.
	asked := k.now()
	for range 2 {
		set, err := k.read(ctx, t)
		if err != nil {
			if key, ok := known.lookup(kid); ok {
				return key, nil // as last read, while the database is away
			}
			return nil, err
		}
		if key, ok := set.keys[kid]; ok {
			return key, nil
		}
		if !set.began.Before(asked) {
			break
		}
	}
	k.unknownKids.Add(publishedKey{t.ID, kid}, k.now().Add(unknownKidTTL))
	return nil, ErrUnknownKey
}

func (s *keySet) lookup(kid string) (crypto.PublicKey, bool) {
	if s == nil {
		return nil, false
	}
	key, ok := s.keys[kid]
	return key, ok
}

// keyReadInterval is how often a tenant's keys are read for kids not
// found in memory, at most.
const keyReadInterval = time.Second

// read lists tenant t's published keys and keeps them in memory, sharing
// the read with every lookup of the tenant meanwhile and starting it no
// sooner than keyReadInterval after the tenant's last.
func (k *Keys) read(ctx context.Context, t *tenancy.Tenant) (*keySet, error) {
	v, err, _ := k.reads.Do(t.ID.String(), func() (any, error) {
		// Shared by every lookup waiting: one caller's going away must
		// not fail the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		last, _ := k.lastRead.Get(t.ID)
		if wait := last.Add(keyReadInterval).Sub(k.now()); wait > 0 {
			timer := time.NewTimer(wait)
			defer timer.Stop()
			select {
			case <-ctx.Done():
				return nil, problem.Wrap(problem.Unavailable, ctx.Err(), "signing keys unavailable, try again later")
			case <-timer.C:
			}
		}
		began := k.now()
		k.lastRead.Add(t.ID, began)
		gen := k.gen.Load()
		keys, err := k.list(ctx, t)
		k.keyReads.Add(1)
		if err != nil {
			if problem.CodeOf(err) != problem.Unavailable {
				err = problem.Wrap(problem.Unavailable, err, "signing keys unavailable, try again later")
			}
			return nil, err
		}
		set := &keySet{keys: make(map[string]crypto.PublicKey, len(keys)), fresh: k.now().Add(KeySetTTL), began: began}
		for _, key := range keys {
			set.keys[key.Kid] = key.Public
		}
		// A change heard of since the read began may not be in it.
		k.mu.Lock()
		if k.gen.Load() == gen {
			k.keySets.Add(t.ID, set)
		}
		k.mu.Unlock()
		return set, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*keySet), nil
}

// Bounds of the memory of keys: tenants whose keys are kept, and unknown
// kids.
const (
	keyTenants    = 100_000
	unknownKids   = 10_000
	unknownKidTTL = 10 * time.Second
)

// KeySetTTL is how long a server verifies tokens with a tenant's published
// keys as it last read them, unless a change notification drops them
// sooner.
const KeySetTTL = 10 * time.Minute

type publishedKey struct {
	t   tenancy.ID
	kid string
}
