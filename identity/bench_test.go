package identity

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// BenchmarkPasswordVerify measures password verification at the default
// (OWASP) parameters through the Hasher's bounded pool, with as many
// concurrent callers as the benchmark runs, against raw argon2id at the
// same parameters on as many goroutines, in the same run.
func BenchmarkPasswordVerify(b *testing.B) {
	p := DefaultHashParams
	salt := make([]byte, p.SaltLen)
	rand.Read(salt)
	var baseline float64
	b.Run("raw-argon2id", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				argon2.IDKey([]byte("correct horse battery staple"), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
			}
		})
		baseline = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	h := NewHasher(p, 0, time.Minute)
	phc, err := h.Hash(context.Background(), "correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("hasher-verify", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, _, err := h.Verify(context.Background(), phc, "correct horse battery staple"); !ok || err != nil {
					b.Fatal("verify failed", err)
				}
			}
		})
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(baseline/ns, "x-baseline-throughput")
	})
}
