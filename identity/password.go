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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
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
//
// The pool is shared by every tenant (the tenant in the request's
// context), so that one cannot starve the others: each tenant's callers
// wait in a queue of their own, a free worker takes the queues in turn,
// and while other tenants sign in (they asked within activeFor) no tenant
// holds every worker, so theirs rarely wait for one. A tenant flooding the
// pool fills and overflows its own queue; alone, it may use every worker.
type Hasher struct {
	params  HashParams
	workers int
	maxWait time.Duration
	avg     atomic.Int64 // moving average of one hash's duration, ns
	now     func() time.Time

	mu      sync.Mutex
	running int                   // workers busy
	waiting int                   // callers queued, all queues
	queues  map[string]*hashQueue // by tenant: those with callers running, waiting or booked
	ring    []*hashQueue          // the queues with callers waiting, in the order they are served
	turn    int                   // index in ring of the queue served next
	seen    map[string]time.Time  // when each tenant last asked for a worker, within activeFor

	checks atomic.Int64 // verifications of stored hashes (VerifyNobody's are not)

	dummyOnce sync.Once
	dummy     string
}

// activeFor is how long after its last request a tenant counts as
// signing in, and keeps the pool from giving another tenant every worker.
const activeFor = time.Second

// hashQueue is one tenant's share of the pool: its callers waiting for a
// worker, oldest first, those running, and the hashes booked for it
// (book) that have not been asked for yet.
type hashQueue struct {
	key     string
	waiters []*hashWaiter
	running int
	booked  int
}

// hashWaiter is a caller waiting for a worker; ready is closed when a
// worker is handed to it.
type hashWaiter struct {
	key   string
	ready chan struct{}
}

// booking is a place in the pool taken before the hash is asked for; the
// first hash of a context carrying it takes it.
type booking struct {
	key   string
	taken atomic.Bool
}

type bookingKey struct{}

// NewHasher returns a Hasher making hashes with params, running at most
// workers at once (0: one per CPU); a request that would queue longer than
// maxWait is refused.
func NewHasher(params HashParams, workers int, maxWait time.Duration) *Hasher {
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	h := &Hasher{
		params: params, workers: workers, maxWait: maxWait, now: time.Now,
		queues: map[string]*hashQueue{}, seen: map[string]time.Time{},
	}
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
	ok, rehash, err = h.verify(ctx, phc, password)
	if err == nil {
		h.checks.Add(1)
	}
	return ok, rehash, err
}

func (h *Hasher) verify(ctx context.Context, phc, password string) (ok, rehash bool, err error) {
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
	_, _, err := h.verify(ctx, h.dummy, password)
	return err
}

// queueKey is the queue a caller waits in: its request's tenant.
func queueKey(ctx context.Context) string {
	if t, ok := tenancy.FromContext(ctx); ok {
		return t.ID.String()
	}
	return ""
}

// limit is how many workers queue key may hold at once: all of them,
// unless another tenant is signing in. h.mu must be held.
func (h *Hasher) limit(key string) int {
	if h.workers == 1 {
		return 1
	}
	now := h.now()
	others := false
	for k, at := range h.seen {
		switch {
		case now.Sub(at) >= activeFor:
			delete(h.seen, k)
		case k != key:
			others = true
		}
	}
	if others {
		return h.workers - 1
	}
	return h.workers
}

// predict returns how long a new caller of queue key would wait for a
// worker. Served in turn, it waits for the callers ahead of it in its own
// queue (booked ones included) and, for each of those rounds and its own,
// for at most one caller of every other queue; and its queue gets no more
// than its limit of workers. h.mu must be held.
func (h *Hasher) predict(key string) time.Duration {
	ahead, running := 0, 0
	if q := h.queues[key]; q != nil {
		ahead, running = len(q.waiters)+q.booked, q.running
	}
	limit := h.limit(key)
	before := ahead
	for _, q := range h.queues {
		if q.key != key {
			before += min(len(q.waiters)+q.booked, ahead+1)
		}
	}
	if before < h.workers-h.running && ahead < limit-running {
		return 0 // a free worker
	}
	avg := h.avg.Load()
	return time.Duration(max(int64(before+1)*avg/int64(h.workers), int64(ahead+1)*avg/int64(limit)))
}

// book takes a place in the pool for a hash that the caller will ask for
// with the returned context after some other work (reading the account),
// so that the work is not done for a hash the pool would refuse, and
// callers arriving meanwhile count the place. Returns Unavailable, with a
// Retry-After, if the caller would wait longer than maxWait. Call cancel
// when done: it gives the place back if no hash took it.
func (h *Hasher) book(ctx context.Context) (context.Context, func(), error) {
	key := queueKey(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen[key] = h.now()
	if predicted := h.predict(key); predicted > h.maxWait {
		return ctx, func() {}, h.busy(predicted)
	}
	h.queue(key).booked++
	b := &booking{key: key}
	cancel := func() {
		if b.taken.CompareAndSwap(false, true) {
			h.mu.Lock()
			q := h.queues[b.key]
			q.booked--
			h.forget(q)
			h.mu.Unlock()
		}
	}
	return context.WithValue(ctx, bookingKey{}, b), cancel, nil
}

// queue returns queue key, made if need be. h.mu must be held.
func (h *Hasher) queue(key string) *hashQueue {
	q := h.queues[key]
	if q == nil {
		q = &hashQueue{key: key}
		h.queues[key] = q
	}
	return q
}

// forget drops q if nothing is left of it. h.mu must be held.
func (h *Hasher) forget(q *hashQueue) {
	if len(q.waiters) == 0 && q.running == 0 && q.booked == 0 {
		delete(h.queues, q.key)
	}
}

// run runs fn on a worker, queueing for one in its tenant's queue unless
// the predicted wait is over maxWait (a booked caller was admitted when
// it booked).
func (h *Hasher) run(ctx context.Context, fn func()) error {
	key := queueKey(ctx)
	b, _ := ctx.Value(bookingKey{}).(*booking)
	booked := b != nil && b.taken.CompareAndSwap(false, true)
	h.mu.Lock()
	h.seen[key] = h.now()
	q := h.queue(key)
	if booked {
		q.booked--
	}
	if h.running < h.workers && len(q.waiters) == 0 && q.running < h.limit(key) { // a free worker: no wait
		h.running++
		q.running++
		h.mu.Unlock()
	} else {
		if predicted := h.predict(key); !booked && predicted > h.maxWait {
			h.forget(q)
			h.mu.Unlock()
			return h.busy(predicted)
		}
		w := h.enqueue(q)
		h.dispatch() // limits may have grown since the last release
		h.mu.Unlock()
		timer := time.NewTimer(h.maxWait)
		defer timer.Stop()
		select {
		case <-w.ready:
		case <-timer.C:
			if h.abandon(w) {
				return h.busy(h.maxWait)
			}
			<-w.ready // handed a worker as the timer fired: use it
		case <-ctx.Done():
			if !h.abandon(w) {
				h.release(key) // handed a worker meanwhile: pass it on
			}
			return ctx.Err()
		}
	}
	defer h.release(key)
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

// enqueue adds a waiter to q, which joins the end of the ring if it had
// none. h.mu must be held.
func (h *Hasher) enqueue(q *hashQueue) *hashWaiter {
	if len(q.waiters) == 0 {
		h.ring = append(h.ring, q)
	}
	w := &hashWaiter{key: q.key, ready: make(chan struct{})}
	q.waiters = append(q.waiters, w)
	h.waiting++
	return w
}

// abandon takes w out of its queue, and reports false if it was no longer
// there: a worker was handed to it.
func (h *Hasher) abandon(w *hashWaiter) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[w.key]
	if q == nil {
		return false
	}
	i := slices.Index(q.waiters, w)
	if i < 0 {
		return false
	}
	q.waiters = slices.Delete(q.waiters, i, i+1)
	h.waiting--
	if len(q.waiters) == 0 {
		h.unring(q)
	}
	h.forget(q)
	return true
}

// release frees a worker of queue key and hands out the free ones.
func (h *Hasher) release(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := h.queues[key]
	q.running--
	h.running--
	h.forget(q)
	h.dispatch()
}

// dispatch hands free workers to the first callers of the queues in turn,
// skipping those at their limit. h.mu must be held.
func (h *Hasher) dispatch() {
	for h.running < h.workers && len(h.ring) > 0 {
		if h.turn >= len(h.ring) {
			h.turn = 0
		}
		i := h.turn
		for n := 0; n < len(h.ring) && h.ring[i].running >= h.limit(h.ring[i].key); n++ {
			i = (i + 1) % len(h.ring)
		}
		q := h.ring[i]
		if q.running >= h.limit(q.key) {
			return // every waiting queue at its limit: the free worker waits for others
		}
		w := q.waiters[0]
		q.waiters[0] = nil
		q.waiters = q.waiters[1:]
		h.waiting--
		q.running++
		h.running++
		h.turn = i + 1
		if len(q.waiters) == 0 {
			h.unring(q) // the queue after it moves up to its place
		}
		close(w.ready)
	}
}

// unring takes q, out of waiters, off the ring, keeping the turn on the
// queue that was to be served next. h.mu must be held.
func (h *Hasher) unring(q *hashQueue) {
	i := slices.Index(h.ring, q)
	h.ring = slices.Delete(h.ring, i, i+1)
	if i < h.turn {
		h.turn--
	}
}

func (h *Hasher) busy(wait time.Duration) error {
	e := problem.Errorf(problem.Unavailable, "too many sign-ins at once, try again shortly")
	e.RetryAfter = max(wait, time.Second)
	return e
}
