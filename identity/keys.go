package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Sealer envelope-encrypts per-row secrets (secrets.Sealer): what identity
// needs, nothing more.
type Sealer interface {
	Seal(ctx context.Context, t tenancy.ID, aad, plain []byte) ([]byte, error)
	Open(ctx context.Context, t tenancy.ID, aad, sealed []byte) ([]byte, error)
}

// AAD builds associated data binding a sealed value to its table, column
// and row (secrets.AAD has the same layout).
type AAD func(table, column, row string) []byte

// SigningKey is one of a tenant's token signing keys: Ed25519 (EdDSA,
// every token by default) or RSA (RS256, for the apps that ask for it).
type SigningKey struct {
	Kid       string
	Alg       string           // AlgEdDSA or AlgRS256
	Public    crypto.PublicKey // ed25519.PublicKey or *rsa.PublicKey
	CreatedAt time.Time
	Retiring  bool // replaced: signs nothing new, still published
}

// rsaBits is the size of tenants' RSA keys.
const rsaBits = 2048

// Keys manages tenants' token signing keys: created on first need (or
// with the tenant), the private half sealed under the tenant's own key,
// published as JWKS, rotated with overlap.
type Keys struct {
	db     *tenancy.DB
	sealer Sealer
	aad    AAD

	// Tenants' opened current keys and published keys; bounded, least
	// recently used tenants forgotten first.
	signers    *lru.Cache[tenancy.ID, *signer]
	rsaSigners *lru.Cache[tenancy.ID, *rsaSigner]
	keySets    *lru.Cache[tenancy.ID, *keySet]
	// gen is bumped by every Forget: a read that began before a change was
	// heard of is not kept (see read).
	mu  sync.Mutex
	gen atomic.Uint64
	// unknownKids are kids tokens named that no key has, until when.
	unknownKids *lru.Cache[publishedKey, time.Time]
	// reads shares a tenant's reads of its keys; lastRead is when each
	// tenant's last began (see read).
	reads    singleflight.Group
	lastRead *lru.Cache[tenancy.ID, time.Time]
	keyReads atomic.Int64  // reads made, for tests
	ttl      time.Duration // how long an opened signing key stays in memory
	now      func() time.Time
}

type signer struct {
	kid     string
	private ed25519.PrivateKey
	until   time.Time
}

// rsaSigner is a tenant's current RSA key, opened.
type rsaSigner struct {
	kid     string
	private *rsa.PrivateKey
	until   time.Time
}

// NewKeys returns the signing-key store over db, sealing private keys with
// sealer (aad binds them to their row).
func NewKeys(db *tenancy.DB, sealer Sealer, aad AAD) *Keys {
	return &Keys{db: db, sealer: sealer, aad: aad,
		signers: newLRU[tenancy.ID, *signer](keyTenants), rsaSigners: newLRU[tenancy.ID, *rsaSigner](keyTenants),
		keySets:     newLRU[tenancy.ID, *keySet](keyTenants),
		unknownKids: newLRU[publishedKey, time.Time](unknownKids), lastRead: newLRU[tenancy.ID, time.Time](keyTenants),
		ttl: KeyCacheTTL, now: time.Now}
}

func newLRU[K comparable, V any](size int) *lru.Cache[K, V] {
	c, err := lru.New[K, V](size)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return c
}

// MaxTokenLife is how long a token tenant t's keys signed may still be
// valid after its key stopped signing: the longest of its access tokens,
// apps' access tokens and ID tokens, plus the key caches' lag and clock
// skew. Retire keys no sooner.
func MaxTokenLife(t *tenancy.Tenant) time.Duration {
	return KeyCacheTTL + max(t.AccessTokenTTL, maxAppTokenTTL, idTokenTTL) + Leeway
}

// KeyCacheTTL is how long a server keeps using an opened signing key
// before reading the keys again, unless a change notification drops it
// sooner: after a rotation whose notification a server missed, it may
// sign with the previous key this long.
const KeyCacheTTL = time.Minute

func (k *Keys) keyAAD(t tenancy.ID, kid string) []byte {
	return k.aad("signing_keys", "private_key_sealed", t.String()+"/"+kid)
}

// Published returns tenant t's keys that verify tokens: the current one
// and those retiring. Creates the tenant's first key if it has none.
func (k *Keys) Published(ctx context.Context, t *tenancy.Tenant) ([]SigningKey, error) {
	keys, err := k.list(ctx, t)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		if _, err := k.Rotate(ctx, t); err != nil {
			return nil, err
		}
		return k.list(ctx, t)
	}
	return keys, nil
}

func (k *Keys) list(ctx context.Context, t *tenancy.Tenant) ([]SigningKey, error) {
	var rows []queries.AppSigningKey
	err := k.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		rows, err = q.ListSigningKeys(ctx, t.ID.UUID())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	keys := make([]SigningKey, 0, len(rows))
	for _, r := range rows {
		k := SigningKey{Kid: r.Kid, Alg: r.Algorithm, Public: ed25519.PublicKey(r.PublicKey), CreatedAt: r.CreatedAt, Retiring: r.RetiringAt != nil}
		if r.Algorithm == AlgRS256 {
			pub, err := x509.ParsePKIXPublicKey(r.PublicKey)
			rp, ok := pub.(*rsa.PublicKey)
			if err != nil || !ok {
				return nil, fmt.Errorf("signing key %s: not an RSA public key", r.Kid)
			}
			k.Public = rp
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// current returns the newest of rows of algorithm alg that is not
// retiring, or nil.
func current(rows []queries.AppSigningKey, alg string) *queries.AppSigningKey {
	for _, r := range rows {
		if r.RetiringAt == nil && r.Algorithm == alg {
			return &r
		}
	}
	return nil
}

// signer returns tenant t's current signing key, opened. Opened keys stay
// in memory for a minute, so signing a token costs no database read or
// Vault call on the hot path.
func (k *Keys) signer(ctx context.Context, t *tenancy.Tenant) (*signer, error) {
	now := k.now()
	if s, ok := k.signers.Get(t.ID); ok && now.Before(s.until) {
		return s, nil
	}
	// The newest key that is not retiring signs; a tenant without one
	// gets its first key now.
	for attempt := 0; ; attempt++ {
		row, err := k.current(ctx, t, AlgEdDSA)
		if err != nil {
			return nil, err
		}
		if row != nil {
			return k.open(t, row)
		}
		if attempt > 0 {
			return nil, errors.New("load signing key: the new key vanished")
		}
		if _, err := k.Rotate(ctx, t); err != nil {
			return nil, err
		}
	}
}

// current reads tenant t's current key of algorithm alg (nil: none).
func (k *Keys) current(ctx context.Context, t *tenancy.Tenant, alg string) (*queries.AppSigningKey, error) {
	var row *queries.AppSigningKey
	err := k.db.Tx(ctx, t, func(q *queries.Queries) error {
		rows, err := q.ListSigningKeys(ctx, t.ID.UUID())
		row = current(rows, alg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	return row, nil
}

// rsaSigner returns tenant t's current RSA key, opened, made on first
// need: only tenants with apps that ask for RS256 have one.
func (k *Keys) rsaSigner(ctx context.Context, t *tenancy.Tenant) (*rsaSigner, error) {
	now := k.now()
	if s, ok := k.rsaSigners.Get(t.ID); ok && now.Before(s.until) {
		return s, nil
	}
	for attempt := 0; ; attempt++ {
		row, err := k.current(ctx, t, AlgRS256)
		if err != nil {
			return nil, err
		}
		if row != nil {
			der, err := k.sealer.Open(context.Background(), t.ID, k.keyAAD(t.ID, row.Kid), row.PrivateKeySealed)
			if err != nil {
				return nil, fmt.Errorf("open signing key %s: %w", row.Kid, err)
			}
			private, err := x509.ParsePKCS8PrivateKey(der)
			clear(der)
			rk, ok := private.(*rsa.PrivateKey)
			if err != nil || !ok {
				return nil, fmt.Errorf("open signing key %s: not an RSA key", row.Kid)
			}
			s := &rsaSigner{kid: row.Kid, private: rk, until: k.now().Add(k.ttl)}
			k.rsaSigners.Add(t.ID, s)
			return s, nil
		}
		if attempt > 0 {
			return nil, errors.New("load signing key: the new key vanished")
		}
		if _, err := k.rotate(ctx, t, AlgRS256); err != nil {
			return nil, err
		}
	}
}

func (k *Keys) open(t *tenancy.Tenant, row *queries.AppSigningKey) (*signer, error) {
	seed, err := k.sealer.Open(context.Background(), t.ID, k.keyAAD(t.ID, row.Kid), row.PrivateKeySealed)
	if err != nil {
		return nil, fmt.Errorf("open signing key %s: %w", row.Kid, err)
	}
	defer clear(seed)
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("open signing key %s: not an Ed25519 seed", row.Kid)
	}
	s := &signer{kid: row.Kid, private: ed25519.NewKeyFromSeed(seed), until: k.now().Add(k.ttl)}
	k.signers.Add(t.ID, s)
	return s, nil
}

// Rotate makes a new signing key for tenant t, which signs from now on,
// and a new RSA key too if t has one; the previous keys stop signing but
// stay published until Retire drops them (once every token they signed
// has expired). Returns the new Ed25519 key's kid.
func (k *Keys) Rotate(ctx context.Context, t *tenancy.Tenant) (string, error) {
	kid, err := k.rotate(ctx, t, AlgEdDSA)
	if err != nil {
		return "", err
	}
	if row, err := k.current(ctx, t, AlgRS256); err != nil || row == nil {
		return kid, err
	}
	_, err = k.rotate(ctx, t, AlgRS256)
	return kid, err
}

// newKey makes a key pair of algorithm alg: its public key as stored and
// its private key as sealed.
func newKey(alg string) (public, private []byte, err error) {
	if alg == AlgRS256 {
		rk, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, nil, err
		}
		public, err = x509.MarshalPKIXPublicKey(&rk.PublicKey)
		if err != nil {
			return nil, nil, err
		}
		private, err = x509.MarshalPKCS8PrivateKey(rk)
		return public, private, err
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	defer clear(priv)
	return pub, bytes.Clone(priv.Seed()), nil
}

// rotate makes tenant t's new key of algorithm alg, and stops its others
// of alg from signing.
func (k *Keys) rotate(ctx context.Context, t *tenancy.Tenant, alg string) (string, error) {
	public, private, err := newKey(alg)
	if err != nil {
		return "", err
	}
	defer clear(private)
	kidBytes := make([]byte, 12)
	rand.Read(kidBytes)
	kid := base64.RawURLEncoding.EncodeToString(kidBytes)
	sealed, err := k.sealer.Seal(ctx, t.ID, k.keyAAD(t.ID, kid), private)
	if err != nil {
		return "", fmt.Errorf("seal signing key: %w", err)
	}
	err = k.db.Tx(ctx, t, func(q *queries.Queries) error {
		if err := q.CreateSigningKey(ctx, queries.CreateSigningKeyParams{
			TenantID: t.ID.UUID(), Kid: kid, Algorithm: alg, PublicKey: public, PrivateKeySealed: sealed,
		}); err != nil {
			return err
		}
		_, err := q.RetireSigningKeys(ctx, queries.RetireSigningKeysParams{TenantID: t.ID.UUID(), Kid: kid, Algorithm: alg})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store signing key: %w", err)
	}
	k.changed(ctx, t.ID)
	return kid, nil
}

// Retire unpublishes tenant t's keys that stopped signing more than
// maxTokenLife ago: no token they signed can still be valid. Returns how
// many it retired.
func (k *Keys) Retire(ctx context.Context, t *tenancy.Tenant, maxTokenLife time.Duration) (int64, error) {
	var n int64
	err := k.db.Tx(ctx, t, func(q *queries.Queries) (err error) {
		n, err = q.DropRetiredSigningKeys(ctx, queries.DropRetiredSigningKeysParams{
			TenantID: t.ID.UUID(), RetiringAt: ptr(k.now().Add(-maxTokenLife)),
		})
		return err
	})
	if n > 0 {
		k.changed(ctx, t.ID)
	}
	return n, err
}

// changed tells every server (this one at once) that tenant t's keys
// changed. Should the notice not go out, the others see the change
// within KeyCacheTTL and KeySetTTL; a retired key's tokens had expired
// anyway.
func (k *Keys) changed(ctx context.Context, t tenancy.ID) {
	k.Forget(t)
	_ = k.db.NotifyChange(ctx, t)
}

// Forget drops what is in memory of tenant t's keys (after a rotation, or
// when the tenant changed).
func (k *Keys) Forget(t tenancy.ID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen.Add(1)
	k.signers.Remove(t)
	k.rsaSigners.Remove(t)
	k.keySets.Remove(t)
}

// ForgetAll drops what is in memory of every tenant's keys (when changes
// may have gone unheard: the change subscription was down).
func (k *Keys) ForgetAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen.Add(1)
	k.signers.Purge()
	k.rsaSigners.Purge()
	k.keySets.Purge()
}

func ptr[T any](v T) *T { return &v }
