package secrets_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"

	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
)

// BenchmarkSealer measures sealing and opening a 64-byte value (an Ed25519
// private key, a TOTP seed) with the data key cached, the hot path of a
// login, against raw AES-256-GCM with a fixed key in the same run; and an
// open with an empty cache (one Transit decrypt), against the same
// baseline.
func BenchmarkSealer(b *testing.B) {
	ctx := context.Background()
	v := vaulttest.Shared(b).Connect(b)
	tenant := newTenant()
	if err := v.CreateTenantKey(ctx, tenant); err != nil {
		b.Fatal(err)
	}
	plain := make([]byte, 64)
	rand.Read(plain)
	aad := secrets.AAD("signing_keys", "private_key_sealed", "kid-1")

	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, 12)
	raw := func() {
		rand.Read(nonce)
		gcm.Open(nil, nonce, gcm.Seal(nil, nonce, plain, aad), aad)
	}
	var baseline float64
	b.Run("raw-aes-gcm", func(b *testing.B) {
		for b.Loop() {
			raw()
		}
		baseline = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	report := func(b *testing.B) {
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(ns/baseline, "x-baseline")
	}

	s := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	sealed, err := s.Seal(ctx, tenant, aad, plain)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("seal+open-cached", func(b *testing.B) {
		for b.Loop() {
			out, err := s.Seal(ctx, tenant, aad, plain)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Open(ctx, tenant, aad, out); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("open-uncached", func(b *testing.B) {
		for b.Loop() {
			s.Forget(tenant)
			if _, err := s.Open(ctx, tenant, aad, sealed); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
}
