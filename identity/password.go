package identity

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gatehouse/gatehouse/problem"
)

// HashParams are argon2id's cost parameters. Every hash records the ones
// it was made with (PHC string format), so they can be raised later and
// old hashes upgraded at the next login.
type HashParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8
	KeyLen  uint32 // bytes of output
	SaltLen uint32 // bytes of salt
}

// DefaultHashParams are OWASP's minimum for argon2id: 19 MiB, 2 passes, one
// lane.
var DefaultHashParams = HashParams{Memory: 19 * 1024, Time: 2, Threads: 1, KeyLen: 32, SaltLen: 16}

// weaker reports whether p costs less than q in any dimension.
func (p HashParams) weaker(q HashParams) bool {
	return p.Memory < q.Memory || p.Time < q.Time || p.Threads < q.Threads || p.KeyLen < q.KeyLen || p.SaltLen < q.SaltLen
}

// hash derives the argon2id PHC string of password with a fresh salt.
func (p HashParams) hash(password string) string {
	salt := make([]byte, p.SaltLen)
	rand.Read(salt)
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// parsePHC reads an argon2id PHC string.
func parsePHC(phc string) (HashParams, []byte, []byte, error) {
	parts := strings.Split(phc, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return HashParams{}, nil, nil, errors.New("not an argon2id v19 PHC string")
	}
	var p HashParams
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return HashParams{}, nil, nil, fmt.Errorf("parameter %s: %w", k, err)
		}
		switch k {
		case "m":
			p.Memory = uint32(n)
		case "t":
			p.Time = uint32(n)
		case "p":
			if n > math.MaxUint8 {
				return HashParams{}, nil, nil, errors.New("parameter p out of range")
			}
			p.Threads = uint8(n)
		}
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	key, err2 := b64.DecodeString(parts[5])
	if err := errors.Join(err1, err2); err != nil || len(key) == 0 || len(salt) == 0 {
		return HashParams{}, nil, nil, errors.New("malformed salt or hash")
	}
	if p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		return HashParams{}, nil, nil, errors.New("missing parameters")
	}
	p.KeyLen, p.SaltLen = uint32(len(key)), uint32(len(salt))
	return p, salt, key, nil
}

// Hasher hashes and verifies passwords with argon2id in a bounded pool of
// workers (one per CPU by default). argon2id is deliberately expensive:
// unbounded, a login storm would take every core and all the memory. When
// a request would wait longer than MaxWait for a worker, it is refused at
// once with Unavailable and a Retry-After, instead of piling up.
type Hasher struct {
	params  HashParams
	slots   chan struct{}
	maxWait time.Duration
	waiting atomic.Int64
	avg     atomic.Int64 // moving average of one hash's duration, ns

	dummyOnce sync.Once
	dummy     string
}

// NewHasher returns a Hasher making hashes with params, running at most
// workers at once (0: one per CPU); a request that would queue longer than
// maxWait is refused.
func NewHasher(params HashParams, workers int, maxWait time.Duration) *Hasher {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	h := &Hasher{params: params, slots: make(chan struct{}, workers), maxWait: maxWait}
	h.avg.Store(int64(50 * time.Millisecond)) // a first guess; measured from the first hash on
	return h
}

// Params returns the parameters new hashes are made with.
func (h *Hasher) Params() HashParams { return h.params }

// Hash returns the PHC string of password. Returns Unavailable (with a
// Retry-After) when the pool is saturated.
func (h *Hasher) Hash(ctx context.Context, password string) (string, error) {
	var out string
	err := h.run(ctx, func() { out = h.params.hash(password) })
	return out, err
}

// Verify reports whether password matches the PHC string, and whether the
// hash should be replaced because it was made with weaker parameters than
// the current ones. A malformed PHC string is an error, not a mismatch.
// Returns Unavailable (with a Retry-After) when the pool is saturated.
func (h *Hasher) Verify(ctx context.Context, phc, password string) (ok, rehash bool, err error) {
	p, salt, want, err := parsePHC(phc)
	if err != nil {
		return false, false, fmt.Errorf("verify password: %w", err)
	}
	var got []byte
	if err := h.run(ctx, func() { got = argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen) }); err != nil {
		return false, false, err
	}
	ok = subtle.ConstantTimeCompare(got, want) == 1
	return ok, ok && p.weaker(h.params), nil
}

// VerifyNobody spends the time of a verification for a user that does not
// exist, so that a login for an unknown email takes as long as a wrong
// password for a known one. It always reports false.
func (h *Hasher) VerifyNobody(ctx context.Context, password string) error {
	h.dummyOnce.Do(func() { h.dummy = h.params.hash("no account has this password") })
	_, _, err := h.Verify(ctx, h.dummy, password)
	return err
}

// run runs fn on a worker, queueing for one unless the predicted wait is
// over maxWait.
func (h *Hasher) run(ctx context.Context, fn func()) error {
	select {
	case h.slots <- struct{}{}: // a free worker: no wait
	default:
		ahead := h.waiting.Add(1)
		defer h.waiting.Add(-1)
		predicted := time.Duration(ahead * h.avg.Load() / int64(cap(h.slots)))
		if predicted > h.maxWait {
			return h.busy(predicted)
		}
		timer := time.NewTimer(h.maxWait)
		defer timer.Stop()
		select {
		case h.slots <- struct{}{}:
		case <-timer.C:
			return h.busy(h.maxWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-h.slots }()
	start := time.Now()
	fn()
	// Exponential moving average, weight 1/8.
	d := int64(time.Since(start))
	for {
		old := h.avg.Load()
		if h.avg.CompareAndSwap(old, old+(d-old)/8) {
			break
		}
	}
	return nil
}

func (h *Hasher) busy(wait time.Duration) error {
	e := problem.Errorf(problem.Unavailable, "too many sign-ins at once, try again shortly")
	e.RetryAfter = max(wait, time.Second)
	return e
}
