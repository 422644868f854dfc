package identity

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/problem"
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
