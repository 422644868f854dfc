package identity_test

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// BenchmarkVerifyAccessToken measures identity.VerifyAccessToken (parse,
// algorithm pin, signature, every claim check) against raw ed25519.Verify
// of the same signing input, in the same run.
func BenchmarkVerifyAccessToken(b *testing.B) {
	ctx := context.Background()
	pub, priv, _ := ed25519.GenerateKey(nil)
	tenant := tenancy.ID(uuid.New())
	iss := "https://acme.gatehouse.test"
	now := time.Now()
	claims := identity.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: iss, Audience: jwt.ClaimStrings{iss}, Subject: uuid.NewString(), ID: "j1",
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		},
		Tenant: tenant.String(), Session: uuid.NewString(),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = "k1"
	signed, err := tok.SignedString(priv)
	if err != nil {
		b.Fatal(err)
	}
	dot := strings.LastIndexByte(signed, '.')
	input := []byte(signed[:dot])
	sig, _ := jwt.NewParser().DecodeSegment(signed[dot+1:])

	var baseline float64
	b.Run("raw-ed25519-verify", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(pub, input, sig) {
				b.Fatal("bad signature")
			}
		}
		baseline = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	keys := staticKeys{"k1": pub}
	want := identity.Expect{Issuer: iss, Audience: iss, Tenant: tenant}
	b.Run("verify-access-token", func(b *testing.B) {
		for b.Loop() {
			if _, err := identity.VerifyAccessToken(ctx, signed, keys, want); err != nil {
				b.Fatal(err)
			}
		}
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(baseline/ns, "x-baseline-throughput")
	})
}

// BenchmarkRefresh measures one refresh-token grant (Service.Refresh:
// spend, checks, rotation, audit, access token) against one bare write
// transaction (BEGIN, INSERT, COMMIT) on the same database and pool.
func BenchmarkRefresh(b *testing.B) {
	ctx := context.Background()
	e := newBenchEnv(b, withCachingResolver())
	tn, err := e.reg.Create(ctx, tenancy.CreateParams{Slug: "bench", Name: "Bench"})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.svc.Signup(ctx, tn, identity.SignupInput{Email: "bench@example.com", Password: goodPassword}, identity.Meta{}); err != nil {
		b.Fatal(err)
	}
	tokens, err := e.svc.Login(ctx, tn, "bench@example.com", goodPassword, identity.Meta{})
	if err != nil {
		b.Fatal(err)
	}
	pool := pgtest.Pool(b, e.appURL, 4)
	if _, err := e.admin.Exec(ctx, "create table public.bench_write (id bigserial primary key, v text); grant all on public.bench_write, public.bench_write_id_seq to gatehouse_app"); err != nil {
		b.Fatal(err)
	}
	var baseline float64
	b.Run("bare-write-tx", func(b *testing.B) {
		for b.Loop() {
			tx, err := pool.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "insert into public.bench_write (v) values ($1)", "x"); err != nil {
				b.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				b.Fatal(err)
			}
		}
		baseline = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	refresh := tokens.RefreshToken
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			next, err := e.svc.Refresh(ctx, tn, refresh, identity.Meta{})
			if err != nil {
				b.Fatal(err)
			}
			refresh = next.RefreshToken
		}
		ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		b.ReportMetric(ns/baseline, "x-baseline")
	})
}
