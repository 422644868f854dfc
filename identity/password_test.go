package identity

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// cheap are parameters that keep unit tests fast; the hashing code is the
// same at any cost.
var cheap = HashParams{Memory: 64, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

func TestHashAndVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := NewHasher(cheap, 2, time.Second)
	phc, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(phc, "$argon2id$v=19$m=64,t=1,p=1$") || strings.Contains(phc, "staple") {
		t.Fatalf("PHC string %q", phc)
	}
	if again, _ := h.Hash(ctx, "correct horse battery staple"); again == phc {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	if ok, rehash, err := h.Verify(ctx, phc, "correct horse battery staple"); !ok || rehash || err != nil {
		t.Fatalf("Verify(right) = %v, %v, %v", ok, rehash, err)
	}
	if ok, _, err := h.Verify(ctx, phc, "correct horse battery stapler"); ok || err != nil {
		t.Fatalf("Verify(wrong) = %v, %v", ok, err)
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=64,t=1$c2FsdA$aGFzaA",
		"$argon2id$v=16$m=64,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=64,t=1,p=1$!!$aGFzaA", "plain text"} {
		if _, _, err := h.Verify(ctx, bad, "x"); err == nil {
			t.Errorf("Verify accepted malformed hash %q", bad)
		}
	}
}

func TestVerifyAsksForRehashWhenParametersGrew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, err := NewHasher(cheap, 1, time.Second).Hash(ctx, "an old password of mine")
	if err != nil {
		t.Fatal(err)
	}
	stronger := cheap
	stronger.Memory, stronger.Time = 128, 2
	h := NewHasher(stronger, 1, time.Second)
	if ok, rehash, _ := h.Verify(ctx, old, "an old password of mine"); !ok || !rehash {
		t.Fatalf("Verify with grown parameters = %v, rehash %v; want true, true", ok, rehash)
	}
	if ok, rehash, _ := h.Verify(ctx, old, "not the password"); ok || rehash {
		t.Fatalf("wrong password asked for a rehash (%v, %v)", ok, rehash)
	}
	fresh, _ := h.Hash(ctx, "an old password of mine")
	if _, rehash, _ := h.Verify(ctx, fresh, "an old password of mine"); rehash {
		t.Fatal("a current hash asks for a rehash")
	}
}

func TestDefaultParametersMeetOWASP(t *testing.T) {
	p := DefaultHashParams
	if p.Memory < 19*1024 || p.Time < 2 || p.Threads < 1 || p.SaltLen < 16 || p.KeyLen < 32 {
		t.Fatalf("default parameters %+v are below OWASP's argon2id minimum", p)
	}
}

func TestSaturatedHasherRefusesInsteadOfQueueing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	slow := HashParams{Memory: 32 * 1024, Time: 3, Threads: 1, KeyLen: 32, SaltLen: 16}
	h := NewHasher(slow, 1, 20*time.Millisecond)
	h.Hash(ctx, "warm up the moving average") // learn how long one hash takes
	var mu sync.Mutex
	var ok, refused int
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			start := time.Now()
			_, err := h.Hash(ctx, "a storm of sign-ins")
			waited := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case problem.CodeOf(err) == problem.Unavailable:
				refused++
				e, isProblem := errors.AsType[*problem.Error](err)
				if !isProblem || e.RetryAfter < time.Second {
					t.Errorf("refusal without a Retry-After: %v", err)
				}
				if waited > time.Second {
					t.Errorf("a refused request waited %s", waited)
				}
			default:
				t.Errorf("unexpected error: %v", err)
			}
		})
	}
	wg.Wait()
	if ok == 0 || refused == 0 {
		t.Fatalf("%d hashed, %d refused: want some of each", ok, refused)
	}
}

func TestHasherHonoursCancellation(t *testing.T) {
	t.Parallel()
	h := NewHasher(HashParams{Memory: 32 * 1024, Time: 3, Threads: 1, KeyLen: 32, SaltLen: 16}, 1, time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	go h.Hash(context.Background(), "occupies the only worker")
	time.Sleep(5 * time.Millisecond)
	cancel()
	if _, err := h.Hash(ctx, "waits, then gives up"); err == nil {
		t.Fatal("a cancelled request was hashed")
	}
}

func TestVerifyNobodyNeverMatches(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 1, time.Second)
	for _, pw := range []string{"", "no account has this password", "anything at all"} {
		if err := h.VerifyNobody(context.Background(), pw); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPasswordPolicy(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, password, email, reason string
	}{
		{"eleven characters", "abcdefghijk", "a@x.test", "at least 12"},
		{"twelve characters", "zq8#Lm!2vR@p", "a@x.test", ""},
		{"128 characters", strings.Repeat("zQ8#", 32), "a@x.test", ""},
		{"129 characters", strings.Repeat("zQ8#", 32) + "x", "a@x.test", "at most 128"},
		{"counted in characters, not bytes", "ÄÖÜäöüßéèêëî", "a@x.test", ""},
		{"emoji count as one each", strings.Repeat("🔑", 11), "a@x.test", "at least 12"},
		{"common", "1qaz2wsx3edc", "a@x.test", "too common"},
		{"common in another case", "1QAZ2WSX3EDC", "a@x.test", "too common"},
		{"common deep in the list", "wangxiaofeng", "a@x.test", "too common"},
		{"common after normalising full-width", "１ｑａｚ２ｗｓｘ３ｅｄｃ", "a@x.test", "too common"},
		{"contains the email's name", "Hello-Jonathan-2024", "jonathan@acme.test", "email"},
		{"invalid UTF-8", "abcdefghijkl\xff", "a@x.test", "UTF-8"},
		{"twelve spaces", strings.Repeat(" ", 12), "a@x.test", "only spaces"},
		{"spaces of other kinds", strings.Repeat("\u00a0\u2003", 6), "a@x.test", "only spaces"},
		{"twelve NULs", strings.Repeat("\x00", 12), "a@x.test", "control characters"},
		{"a NUL inside", "zq8#Lm!2vR@p\x00", "a@x.test", "control characters"},
		{"spaces inside are fine", "correct horse battery", "a@x.test", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckPassword(tt.password, tt.email)
			if tt.reason == "" {
				if err != nil || got != NormalizePassword(tt.password) {
					t.Fatalf("CheckPassword = %q, %v; want it accepted", got, err)
				}
				return
			}
			if problem.CodeOf(err) != problem.Invalid || !strings.Contains(problem.MessageOf(err), tt.reason) {
				t.Fatalf("CheckPassword = %v; want Invalid saying %q", err, tt.reason)
			}
			if d := problem.DetailsOf(err); len(d.Errors) != 1 || d.Errors[0].Field != "password" {
				t.Fatalf("field errors %+v, want one for password", d.Errors)
			}
		})
	}
}

func TestCommonPasswordFilterCoversTheList(t *testing.T) {
	t.Parallel()
	count := int(commonPasswords[5])<<24 | int(commonPasswords[6])<<16 | int(commonPasswords[7])<<8 | int(commonPasswords[8])
	if count < 40_000 || len(commonPasswords) != 9+6*count {
		t.Fatalf("filter holds %d entries in %d bytes", count, len(commonPasswords))
	}
	for _, pw := range []string{"123qweasdzxc", "q1w2e3r4t5y6", "wangwangwang", "mailcreated5240"} {
		if !IsCommonPassword(pw) {
			t.Errorf("%q is in the list but not found", pw)
		}
	}
	for _, pw := range []string{"zq8#Lm!2vR@p", "correct horse battery staple x7"} {
		if IsCommonPassword(pw) {
			t.Errorf("%q reported common", pw)
		}
	}
}

func TestNormalizeEmailRefusesLookAlikes(t *testing.T) {
	t.Parallel()
	for name, email := range map[string]string{
		"right-to-left override": "ad\u202emin@example.com",
		"left-to-right isolate":  "\u2066admin@example.com",
		"zero width space":       "ad\u200bmin@example.com",
		"full-width letters":     "\uff41dmin@example.com",
		"full-width at sign":     "admin\uff20example.com",
		"ligature":               "\ufb01nance@example.com",
		"control character":      "ad\x07min@example.com",
	} {
		if _, err := NormalizeEmail(email); problem.CodeOf(err) != problem.Invalid {
			t.Errorf("%s: %q accepted (%v)", name, email, err)
		}
	}
	for _, email := range []string{"Admin@Example.com", "jürgen@example.com", "ада@example.com"} {
		if _, err := NormalizeEmail(email); err != nil {
			t.Errorf("%q refused: %v", email, err)
		}
	}
}

// tenantCtx is a request context of a tenant of its own.
func tenantCtx() context.Context {
	return tenancy.WithTenant(context.Background(), &tenancy.Tenant{ID: tenancy.ID(uuid.New())})
}

// queued reports how many callers wait for h's workers.
func (h *Hasher) queued() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiting
}

// occupy takes h's only worker until the returned function is called.
func occupy(t *testing.T, h *Hasher) func() {
	t.Helper()
	release := make(chan struct{})
	go h.run(context.Background(), func() { <-release })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		h.mu.Lock()
		busy := h.running == h.workers
		h.mu.Unlock()
		if busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker was never taken")
		}
	}
	return sync.OnceFunc(func() { close(release) })
}

// served queues calls of the tenants of ctxs on h, one after the other,
// and returns their names in the order h serves them once free.
type served struct {
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func (s *served) queue(t *testing.T, h *Hasher, ctx context.Context, name string) {
	t.Helper()
	n := h.queued()
	s.wg.Go(func() {
		if err := h.run(ctx, func() { s.mu.Lock(); s.order = append(s.order, name); s.mu.Unlock() }); err != nil {
			t.Errorf("%s refused: %v", name, err)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); h.queued() != n+1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never queued", name)
		}
	}
}

func TestHasherServesTenantsInTurn(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 1, time.Minute)
	free := occupy(t, h)
	a, b := tenantCtx(), tenantCtx()
	var s served
	for range 6 {
		s.queue(t, h, a, "a")
	}
	s.queue(t, h, b, "b")
	s.queue(t, h, b, "b")
	free()
	s.wg.Wait()
	if got := strings.Join(s.order, ""); got != "ababaaaa" {
		t.Fatalf("served %s, want the tenants in turn (ababaaaa)", got)
	}
}

func TestHasherRefusesOnlyTheTenantThatFloods(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 1, 9500*time.Millisecond)
	free := occupy(t, h)
	h.avg.Store(int64(time.Second)) // as if each hash took a second
	flood, calm := tenantCtx(), tenantCtx()
	var s served
	for range 9 { // waits of 1 to 9 seconds: within maxWait
		s.queue(t, h, flood, "flood")
	}
	start := time.Now()
	err := h.run(flood, func() { t.Error("a call past the deadline ran") })
	if e, ok := errors.AsType[*problem.Error](err); !ok || e.Code != problem.Unavailable || e.RetryAfter < 10*time.Second || time.Since(start) > time.Second {
		t.Fatalf("the flooding tenant's tenth waiting call: %v after %s; want Unavailable at once, with a Retry-After of its wait", err, time.Since(start))
	}
	if _, cancel, err := h.book(flood); err == nil {
		cancel()
		t.Fatal("the flooding tenant booked a place past the deadline")
	}
	// The other tenant waits behind one of the flood's calls at most.
	s.queue(t, h, calm, "calm")
	free()
	s.wg.Wait()
	if i := slices.Index(s.order, "calm"); i > 1 {
		t.Fatalf("the other tenant was served %d calls after the flood's first; want next", i)
	}
}

func TestHasherCountsBookedPlaces(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 1, 9500*time.Millisecond)
	free := occupy(t, h)
	defer free()
	h.avg.Store(int64(time.Second))
	flood, calm := tenantCtx(), tenantCtx()
	var cancels []func()
	for i := range 9 {
		_, cancel, err := h.book(flood)
		if err != nil {
			t.Fatalf("booking %d: %v", i+1, err)
		}
		cancels = append(cancels, cancel)
	}
	// Nine booked hashes of a second: a tenth would wait ten seconds.
	if _, _, err := h.book(flood); problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("a tenth booking: %v; want Unavailable", err)
	}
	if err := h.run(flood, func() {}); problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("an unbooked hash behind nine booked: %v; want Unavailable", err)
	}
	_, cancel, err := h.book(calm)
	if err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	cancel()
	// Given back, the places are free again; a booked hash takes its own.
	cancels[0]()
	cancels[0]() // twice is once
	ctx, cancel, err := h.book(flood)
	if err != nil {
		t.Fatalf("booking after one was given back: %v", err)
	}
	defer cancel()
	if _, _, err := h.book(flood); err == nil {
		t.Fatal("a second booking after one was given back")
	}
	done := make(chan error, 1)
	go func() { done <- h.run(ctx, func() {}) }()
	for deadline := time.Now().Add(5 * time.Second); h.queued() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the booked hash never queued")
		}
	}
	free()
	if err := <-done; err != nil {
		t.Fatalf("the booked hash: %v", err)
	}
	for _, c := range cancels[1:] {
		c()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.queues) != 0 || len(h.ring) != 0 || h.waiting != 0 || h.running != 0 {
		t.Fatalf("after everything: %d queues, %d in the ring, %d waiting, %d running", len(h.queues), len(h.ring), h.waiting, h.running)
	}
}

func TestHasherKeepsAWorkerForOtherTenants(t *testing.T) {
	t.Parallel()
	h := NewHasher(cheap, 2, time.Minute)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	h.now = func() time.Time { return time.Unix(0, clock.Load()) }
	flood, calm := tenantCtx(), tenantCtx()
	if err := h.run(calm, func() {}); err != nil { // the other tenant signs in now and then
		t.Fatal(err)
	}
	// The flood gets one worker of two while the other tenant is active.
	started := make(chan int, 3)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			if err := h.run(flood, func() { started <- i; <-release }); err != nil {
				t.Error(err)
			}
		})
		if i == 0 {
			<-started
		}
	}
	for deadline := time.Now().Add(5 * time.Second); h.queued() != 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d flood calls queued, want 2 (one running, a worker kept free)", h.queued())
		}
	}
	done := make(chan error, 1)
	go func() { done <- h.run(calm, func() {}) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other tenant waited for the flood")
	}
	// Once the other tenant is quiet, the flood may use every worker.
	clock.Add(int64(2 * activeFor))
	release <- struct{}{} // ends the first flood call
	for range 2 {
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatal("the flood did not get both workers once alone")
		}
	}
	close(release)
	wg.Wait()
}
