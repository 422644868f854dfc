package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/singleflight"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Sealed blob layout (all integers big-endian):
//
//	[0]      format version (1)
//	[1:3]    key generation  } together the "key stamp": byte-wise order is
//	[3:7]    key version     } (generation, version) order, so SQL can find
//	                           blobs older than a stamp with a bytea compare
//	[7:9]    length n of the wrapped data key
//	[9:9+n]  wrapped data key (Transit ciphertext, vault:vN:...)
//	[..+12]  AES-GCM nonce
//	[...]    AES-GCM ciphertext and tag
//
// Re-wrapping replaces the stamp and the wrapped key and leaves the rest
// alone, which is why neither is part of the associated data.
const (
	formatV1  = 1
	headerLen = 9
	stampLen  = 6
	nonceLen  = 12
)

// Stamp returns the key stamp of a blob sealed with key generation gen at
// version; blobs older than it compare lower byte-wise.
func Stamp(gen uint16, version int) []byte {
	b := make([]byte, stampLen)
	binary.BigEndian.PutUint16(b, gen)
	binary.BigEndian.PutUint32(b[2:], uint32(version))
	return b
}

// blob is a parsed sealed value.
type blob struct {
	gen     uint16
	version int
	wrapped []byte
	nonce   []byte
	box     []byte
}

func parseBlob(b []byte) (blob, error) {
	if len(b) < headerLen || b[0] != formatV1 {
		return blob{}, problem.Errorf(problem.Invalid, "sealed value has an unknown format")
	}
	n := int(binary.BigEndian.Uint16(b[7:9]))
	if len(b) < headerLen+n+nonceLen+16 {
		return blob{}, problem.Errorf(problem.Invalid, "sealed value is truncated")
	}
	return blob{
		gen:     binary.BigEndian.Uint16(b[1:3]),
		version: int(binary.BigEndian.Uint32(b[3:7])),
		wrapped: b[headerLen : headerLen+n],
		nonce:   b[headerLen+n : headerLen+n+nonceLen],
		box:     b[headerLen+n+nonceLen:],
	}, nil
}

func (bl blob) bytes() []byte {
	out := appendHeader(make([]byte, 0, headerLen+len(bl.wrapped)+nonceLen+len(bl.box)), bl.gen, bl.version, bl.wrapped)
	out = append(out, bl.nonce...)
	return append(out, bl.box...)
}

func appendHeader(out []byte, gen uint16, version int, wrapped []byte) []byte {
	out = append(out, formatV1)
	out = binary.BigEndian.AppendUint16(out, gen)
	out = binary.BigEndian.AppendUint32(out, uint32(version))
	out = binary.BigEndian.AppendUint16(out, uint16(len(wrapped)))
	return append(out, wrapped...)
}

// AAD builds the associated data that binds a sealed value to where it is
// stored: table, column and row id. Seal and Open add the tenant, so a
// value copied to another row, column or tenant does not open.
func AAD(table, column, row string) []byte {
	var b []byte
	for _, s := range []string{table, column, row} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// fullAAD builds the associated data actually used, format, tenant, then
// the caller's, into *buf, a pooled buffer (the hot path would otherwise
// allocate for it on every seal and open). Give buf back with putAAD.
func fullAAD(t tenancy.ID, aad []byte) (full []byte, buf *[]byte) {
	buf = aadBuffers.Get().(*[]byte)
	u := t.UUID()
	full = append((*buf)[:0], formatV1)
	full = append(full, u[:]...)
	full = append(full, aad...)
	*buf = full
	return full, buf
}

func putAAD(buf *[]byte) { aadBuffers.Put(buf) }

var aadBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 128); return &b }}

// Generations tells the Sealer which key generation is current for a
// tenant (see KeyName).
type Generations interface {
	KeyGeneration(ctx context.Context, t tenancy.ID) (uint16, error)
}

// DefaultSealKeyTTL is how long a data key seals new values by default.
const DefaultSealKeyTTL = time.Minute

// DefaultSettle is how long after a key change a rotation waits before
// its final sweep, by default: servers' data-key lifetime plus a margin
// for requests in flight, retries and clock skew.
const DefaultSettle = DefaultSealKeyTTL + 10*time.Second

// SealerOptions bound the data-key caches.
type SealerOptions struct {
	// SealKeyTTL is how long one data key seals new values of a tenant;
	// default 1m. Key rotation waits this long (plus JanitorTick) before
	// its final pass.
	SealKeyTTL time.Duration
	// SealKeyUses caps the values sealed under one data key; default 1<<20,
	// far below AES-GCM's limit for random nonces.
	SealKeyUses int64
	// OpenKeyTTL is how long an unwrapped data key stays cached for
	// opening; default 10m.
	OpenKeyTTL time.Duration
	// OpenKeys caps the cached unwrapped keys; default 10000.
	OpenKeys int
}

// Sealer envelope-encrypts per-row data: each value is sealed with
// AES-256-GCM under a data key that Vault Transit issues and wraps with the
// tenant's own key. Data keys are cached in memory for a bounded time and
// number of uses, so hot paths do not call Vault; a plaintext data key is
// zeroed when it leaves the cache. Open keeps working on cached keys while
// Vault is down; Seal does not (see Seal).
type Sealer struct {
	v    *Vault
	gens Generations
	opt  SealerOptions

	mu      sync.Mutex
	sealing map[tenancy.ID]*dataKey
	opening map[tenancy.ID]map[string]*dataKey // by tenant, then wrapped key
	opened  int                                // entries in opening
	flight  singleflight.Group
	now     func() time.Time

	stop, done chan struct{}
	closeOnce  sync.Once
}

// dataKey is a cached plaintext data key and the cipher built from it once.
// Users hold mu for reading while they use it; eviction takes it for
// writing, zeroes key, drops the cipher and marks it dead.
type dataKey struct {
	mu      sync.RWMutex
	key     []byte
	aead    cipher.AEAD
	dead    bool
	gen     uint16
	version int
	wrapped []byte
	expires time.Time
	uses    int64 // sealing only; under Sealer.mu
}

// NewSealer returns a Sealer over v, learning tenants' key generations
// from gens, and starts its cache janitor; Close stops it.
func NewSealer(v *Vault, gens Generations, o SealerOptions) *Sealer {
	return newSealer(v, gens, o, time.Now)
}

func newSealer(v *Vault, gens Generations, o SealerOptions, now func() time.Time) *Sealer {
	if o.SealKeyTTL <= 0 {
		o.SealKeyTTL = DefaultSealKeyTTL
	}
	if o.SealKeyUses <= 0 {
		o.SealKeyUses = 1 << 20
	}
	if o.OpenKeyTTL <= 0 {
		o.OpenKeyTTL = 10 * time.Minute
	}
	if o.OpenKeys <= 0 {
		o.OpenKeys = 10_000
	}
	s := &Sealer{
		v: v, gens: gens, opt: o,
		sealing: map[tenancy.ID]*dataKey{}, opening: map[tenancy.ID]map[string]*dataKey{},
		now: now, stop: make(chan struct{}), done: make(chan struct{}),
	}
	go s.janitor(JanitorTick)
	return s
}

// JanitorTick is how often a Sealer drops expired data keys: a key lives
// at most its lifetime plus this.
const JanitorTick = 250 * time.Millisecond

// Seal encrypts plain for tenant t, bound to aad (see AAD). It refuses
// while the last health check saw Vault down, even with a cached data key:
// an unavailable or sealed Vault stops new encryption (an operator's
// emergency stop must mean something), and nothing is ever written
// half-encrypted. Returns Unavailable then.
func (s *Sealer) Seal(ctx context.Context, t tenancy.ID, aad, plain []byte) ([]byte, error) {
	if err := s.v.Healthy(); err != nil {
		return nil, err
	}
	// A key may be evicted between lookup and use; then take the next one.
	for range 3 {
		k, err := s.sealKey(ctx, t)
		if err != nil {
			return nil, err
		}
		if out, ok := k.seal(t, aad, plain); ok {
			return out, nil
		}
	}
	return nil, problem.Errorf(problem.Unavailable, "data keys are being replaced, try again")
}

// seal seals with k; false if k was evicted meanwhile.
func (k *dataKey) seal(t tenancy.ID, aad, plain []byte) ([]byte, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.dead {
		return nil, false
	}
	// One allocation: header, nonce, then the ciphertext appended in place.
	n := headerLen + len(k.wrapped)
	out := appendHeader(make([]byte, 0, n+nonceLen+len(plain)+k.aead.Overhead()), k.gen, k.version, k.wrapped)
	out = out[:n+nonceLen]
	nonce := out[n:]
	rand.Read(nonce) // never fails on Linux; see crypto/rand
	full, buf := fullAAD(t, aad)
	defer putAAD(buf)
	return k.aead.Seal(out, nonce, plain, full), true
}

// Open decrypts a value Seal made for tenant t with the same aad. Returns
// Invalid if sealed is malformed or does not open (wrong tenant, row or
// column, or tampered), NotFound if the tenant's key no longer exists
// (crypto-shredded), Unavailable if the data key is not cached and Vault is
// down.
func (s *Sealer) Open(ctx context.Context, t tenancy.ID, aad, sealed []byte) ([]byte, error) {
	bl, err := parseBlob(sealed)
	if err != nil {
		return nil, err
	}
	for range 3 {
		k, err := s.openKey(ctx, t, bl)
		if err != nil {
			return nil, err
		}
		plain, ok, err := k.open(t, aad, bl)
		if ok {
			return plain, err
		}
	}
	return nil, problem.Errorf(problem.Unavailable, "data keys are being replaced, try again")
}

// open opens bl with k; false if k was evicted meanwhile.
func (k *dataKey) open(t tenancy.ID, aad []byte, bl blob) ([]byte, bool, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.dead {
		return nil, false, nil
	}
	full, buf := fullAAD(t, aad)
	defer putAAD(buf)
	plain, err := k.aead.Open(nil, bl.nonce, bl.box, full)
	if err != nil {
		return nil, true, problem.Errorf(problem.Invalid, "sealed value does not open here")
	}
	return plain, true, nil
}

// newDataKey wraps a plaintext data key for the cache.
func newDataKey(plain []byte, gen uint16, version int, wrapped []byte, expires time.Time) (*dataKey, error) {
	block, err := aes.NewCipher(plain)
	if err != nil {
		clear(plain)
		return nil, fmt.Errorf("data key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		clear(plain)
		return nil, fmt.Errorf("data key: %w", err)
	}
	return &dataKey{key: plain, aead: aead, gen: gen, version: version, wrapped: wrapped, expires: expires}, nil
}

// sealKey returns tenant t's current sealing data key, asking Vault for a
// new one when none is cached or the cached one is spent.
func (s *Sealer) sealKey(ctx context.Context, t tenancy.ID) (*dataKey, error) {
	s.mu.Lock()
	if k, ok := s.sealing[t]; ok {
		// Expiry is the janitor's job (see expire): reading the clock on
		// every seal would cost more than the encryption.
		if k.uses < s.opt.SealKeyUses {
			k.uses++
			s.mu.Unlock()
			return k, nil
		}
		delete(s.sealing, t)
		s.mu.Unlock()
		k.zero()
	} else {
		s.mu.Unlock()
	}
	v, err, _ := s.flight.Do("seal/"+t.String(), func() (any, error) {
		// Detached from the first caller: its cancellation must not fail
		// everyone else waiting on the same key.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		gen, err := s.gens.KeyGeneration(ctx, t)
		if err != nil {
			return nil, err
		}
		plain, wrapped, version, err := s.v.newDataKey(ctx, KeyName(t, gen))
		if err != nil {
			return nil, err
		}
		k, err := newDataKey(plain, gen, version, []byte(wrapped), s.now().Add(s.opt.SealKeyTTL))
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		old := s.sealing[t]
		s.sealing[t] = k
		s.mu.Unlock()
		if old != nil {
			old.zero()
		}
		return k, nil
	})
	if err != nil {
		return nil, err
	}
	k := v.(*dataKey)
	s.mu.Lock()
	k.uses++
	s.mu.Unlock()
	return k, nil
}

// flightTimeout bounds one data-key request to Vault.
const flightTimeout = 10 * time.Second

// openKey returns the plaintext data key of bl, from the cache or by
// asking Vault to unwrap it.
func (s *Sealer) openKey(ctx context.Context, t tenancy.ID, bl blob) (*dataKey, error) {
	if k := s.cachedOpenKey(t, bl.wrapped); k != nil {
		return k, nil
	}
	wrapped := string(bl.wrapped)
	v, err, _ := s.flight.Do("open/"+t.String()+"/"+wrapped, func() (any, error) {
		// Another flight may have just filled the cache.
		if k := s.cachedOpenKey(t, bl.wrapped); k != nil {
			return k, nil
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
		defer cancel()
		plain, err := s.v.unwrap(ctx, KeyName(t, bl.gen), wrapped)
		if err != nil {
			if problem.CodeOf(err) == problem.Internal && isMissingKey(err) {
				return nil, problem.Errorf(problem.NotFound, "the tenant's key no longer exists; the value cannot be opened")
			}
			if problem.CodeOf(err) == problem.Internal {
				return nil, problem.Wrap(problem.Invalid, err, "sealed value does not open here")
			}
			return nil, err
		}
		k, err := newDataKey(plain, bl.gen, bl.version, []byte(wrapped), s.now().Add(s.opt.OpenKeyTTL))
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		var victims []*dataKey
		if s.opened >= s.opt.OpenKeys {
			victims = append(victims, s.evictOpeningLocked()...)
		}
		// Fetch the tenant's map only now: eviction may have removed it.
		m := s.opening[t]
		if m == nil {
			m = map[string]*dataKey{}
			s.opening[t] = m
		}
		if old, ok := m[wrapped]; ok {
			victims = append(victims, old)
		} else {
			s.opened++
		}
		m[wrapped] = k
		s.mu.Unlock()
		zeroAll(victims)
		return k, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*dataKey), nil
}

func (s *Sealer) cachedOpenKey(t tenancy.ID, wrapped []byte) *dataKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opening[t][string(wrapped)]
}

// removeOpeningLocked takes k, tenant t's cached opening key, out of the
// cache. The caller zeroes it after unlocking: zeroing waits for users of
// the key, and no other tenant should wait on that.
func (s *Sealer) removeOpeningLocked(t tenancy.ID, k *dataKey) {
	m := s.opening[t]
	if m[string(k.wrapped)] != k {
		return
	}
	delete(m, string(k.wrapped))
	s.opened--
	if len(m) == 0 {
		delete(s.opening, t)
	}
}

// evictOpeningLocked makes room in a full opening cache: it removes the
// entry that expires first and returns it for zeroing.
func (s *Sealer) evictOpeningLocked() []*dataKey {
	var first *dataKey
	var firstTenant tenancy.ID
	for t, m := range s.opening {
		for _, k := range m {
			if first == nil || k.expires.Before(first.expires) {
				first, firstTenant = k, t
			}
		}
	}
	if first == nil {
		return nil
	}
	s.removeOpeningLocked(firstTenant, first)
	return []*dataKey{first}
}

// expire removes and zeroes every cached key past its lifetime.
func (s *Sealer) expire() {
	s.mu.Lock()
	now := s.now()
	var victims []*dataKey
	for t, k := range s.sealing {
		if !now.Before(k.expires) {
			delete(s.sealing, t)
			victims = append(victims, k)
		}
	}
	for t, m := range s.opening {
		for _, k := range m {
			if !now.Before(k.expires) {
				s.removeOpeningLocked(t, k)
				victims = append(victims, k)
			}
		}
	}
	s.mu.Unlock()
	zeroAll(victims)
}

func zeroAll(ks []*dataKey) {
	for _, k := range ks {
		k.zero()
	}
}

// janitor runs expire every tick until Close, so that keys leave memory
// at the end of their lifetime even when no one uses them.
func (s *Sealer) janitor(tick time.Duration) {
	defer close(s.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.expire()
		}
	}
}

// Forget drops every cached data key of tenant t: after its key rotated or
// was replaced, or the tenant was deleted.
func (s *Sealer) Forget(t tenancy.ID) {
	s.mu.Lock()
	var victims []*dataKey
	if k, ok := s.sealing[t]; ok {
		delete(s.sealing, t)
		victims = append(victims, k)
	}
	for _, k := range s.opening[t] {
		s.removeOpeningLocked(t, k)
		victims = append(victims, k)
	}
	s.mu.Unlock()
	zeroAll(victims)
}

// Close stops the janitor and zeroes every cached data key.
func (s *Sealer) Close() {
	s.closeOnce.Do(func() {
		close(s.stop)
		<-s.done
	})
	s.mu.Lock()
	var victims []*dataKey
	for t, k := range s.sealing {
		delete(s.sealing, t)
		victims = append(victims, k)
	}
	for t, m := range s.opening {
		for _, k := range m {
			s.removeOpeningLocked(t, k)
			victims = append(victims, k)
		}
	}
	s.mu.Unlock()
	zeroAll(victims)
}

// zero wipes the plaintext key once no one is using it and drops the
// cipher. (The AES key schedule inside the cipher is left to the garbage
// collector: Go offers no way to wipe it. Building the cipher once per data
// key keeps that to one copy per key.)
func (k *dataKey) zero() {
	k.mu.Lock()
	clear(k.key)
	k.aead = nil
	k.dead = true
	k.mu.Unlock()
}

// isMissingKey reports whether Vault said the Transit key does not exist.
func isMissingKey(err error) bool {
	return strings.Contains(err.Error(), "key not found")
}

// GenerationsFunc adapts a function to Generations.
type GenerationsFunc func(ctx context.Context, t tenancy.ID) (uint16, error)

// KeyGeneration implements Generations.
func (f GenerationsFunc) KeyGeneration(ctx context.Context, t tenancy.ID) (uint16, error) {
	return f(ctx, t)
}

// ControlPlane returns the Generations that reads tenants' key generations
// from the control plane (gatehouse_app may read it).
func ControlPlane(db queries.DBTX) Generations {
	return GenerationsFunc(func(ctx context.Context, t tenancy.ID) (uint16, error) {
		gen, err := queries.New(db).GetTenantKeyGeneration(ctx, t.UUID())
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, problem.Errorf(problem.NotFound, "no tenant %s", t)
		}
		if err != nil {
			return 0, problem.Wrap(problem.Unavailable, err, "database unavailable, try again later")
		}
		return uint16(gen), nil
	})
}
