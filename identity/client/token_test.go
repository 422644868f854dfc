package client_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gatehouse/gatehouse/identity/client"
)

const (
	acmeURL = "https://acme.gatehouse.test"
	acmeID  = "0c9a3c52-8f2b-4c9e-9a57-0d8a5d7f1a01"
)

var acme = client.Expect{Issuer: acmeURL, Audience: acmeURL, Tenant: acmeID}

// goodClaims are the claims of a valid token of tenant want.
func goodClaims(want client.Expect) client.Claims {
	now := time.Now()
	return client.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: want.Issuer, Audience: jwt.ClaimStrings{want.Audience}, Subject: "u1", ID: "j1",
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
		},
		Tenant: want.Tenant, Session: "s1",
	}
}

func sign(t testing.TB, priv ed25519.PrivateKey, kid string, c client.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type staticKeys map[string]ed25519.PublicKey

func (s staticKeys) PublicKey(_ context.Context, kid string) (ed25519.PublicKey, error) {
	if k, ok := s[kid]; ok {
		return k, nil
	}
	return nil, client.ErrUnknownKey
}

type failingKeys struct{ err error }

func (f failingKeys) PublicKey(context.Context, string) (ed25519.PublicKey, error) { return nil, f.err }

func TestVerifyAccessTokenRefusesForgeries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pub, priv, _ := ed25519.GenerateKey(nil)
	keys := staticKeys{"k1": pub}

	c, err := client.VerifyAccessToken(ctx, sign(t, priv, "k1", goodClaims(acme)), keys, acme)
	if err != nil {
		t.Fatalf("a good token is refused: %v", err)
	}
	if c.Subject != "u1" || c.Session != "s1" || c.Tenant != acmeID || c.ID != "j1" {
		t.Fatalf("claims %+v", c)
	}

	hmac := jwt.NewWithClaims(jwt.SigningMethodHS256, goodClaims(acme))
	hmac.Header["kid"] = "k1"
	hmacSigned, _ := hmac.SignedString([]byte(pub)) // the classic key-confusion attack
	none := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims(acme))
	none.Header["kid"] = "k1"
	noneSigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	mutate := func(f func(*client.Claims)) string { c := goodClaims(acme); f(&c); return sign(t, priv, "k1", c) }
	good := sign(t, priv, "k1", goodClaims(acme))
	for _, tt := range []struct{ name, token string }{
		{"HS256 with the public key", hmacSigned},
		{"alg none", noneSigned},
		{"signed by another key", sign(t, otherPriv, "k1", goodClaims(acme))},
		{"unknown kid", sign(t, priv, "k2", goodClaims(acme))},
		{"no kid", sign(t, priv, "", goodClaims(acme))},
		{"kid too long", sign(t, priv, strings.Repeat("k", 300), goodClaims(acme))},
		{"signature cut", good[:len(good)-4]},
		{"expired", mutate(func(c *client.Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) })},
		{"no exp", mutate(func(c *client.Claims) { c.ExpiresAt = nil })},
		{"not yet valid", mutate(func(c *client.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) })},
		{"issued in the future", mutate(func(c *client.Claims) { c.IssuedAt = jwt.NewNumericDate(time.Now().Add(time.Hour)) })},
		{"other issuer", mutate(func(c *client.Claims) { c.Issuer = "https://globex.gatehouse.test" })},
		{"other audience", mutate(func(c *client.Claims) { c.Audience = jwt.ClaimStrings{"someone-else"} })},
		{"other tenant", mutate(func(c *client.Claims) { c.Tenant = "another-tenant" })},
		{"no tenant", mutate(func(c *client.Claims) { c.Tenant = "" })},
		{"no subject", mutate(func(c *client.Claims) { c.Subject = "" })},
		{"no session", mutate(func(c *client.Claims) { c.Session = "" })},
		{"no jti", mutate(func(c *client.Claims) { c.ID = "" })},
		{"oversized", mutate(func(c *client.Claims) { c.Subject = strings.Repeat("u", 10<<10) })},
		{"garbage", "a.b.c"},
		{"empty", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.VerifyAccessToken(ctx, tt.token, keys, acme)
			if !errors.Is(err, client.ErrInvalidToken) {
				t.Fatalf("%v, want ErrInvalidToken", err)
			}
			if _, ok := errors.AsType[*client.KeysUnavailableError](err); ok {
				t.Fatalf("%v is also a KeysUnavailableError", err)
			}
		})
	}
	// Within Leeway, clocks that disagree a little do not refuse a token.
	skewed := mutate(func(c *client.Claims) {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-client.Leeway / 2))
		c.NotBefore = jwt.NewNumericDate(time.Now().Add(client.Leeway / 2))
	})
	if _, err := client.VerifyAccessToken(ctx, skewed, keys, acme); err != nil {
		t.Fatalf("a token within the leeway: %v", err)
	}
}

// Keys that cannot be had say nothing of the token: the error must let a
// client tell "try again" from "throw the token away".
func TestKeysThatCannotBeHadAreNotAnInvalidToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, priv, _ := ed25519.GenerateKey(nil)
	tok := sign(t, priv, "k1", goodClaims(acme))
	for name, down := range map[string]client.KeySource{
		"key store down":      failingKeys{errors.New("connection refused")},
		"key store timed out": failingKeys{context.DeadlineExceeded},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := client.VerifyAccessToken(ctx, tok, down, acme)
			ku, ok := errors.AsType[*client.KeysUnavailableError](err)
			if !ok || errors.Is(err, client.ErrInvalidToken) {
				t.Fatalf("%v, want only a KeysUnavailableError", err)
			}
			if !errors.Is(ku, down.(failingKeys).err) {
				t.Fatalf("%v does not keep its cause", err)
			}
		})
	}
	// An unknown kid, on the other hand, is the token's fault.
	_, err := client.VerifyAccessToken(ctx, tok, failingKeys{client.ErrUnknownKey}, acme)
	if !errors.Is(err, client.ErrInvalidToken) || !errors.Is(err, client.ErrUnknownKey) {
		t.Fatalf("unknown kid: %v, want ErrInvalidToken and ErrUnknownKey", err)
	}
}

func TestVerifyAccessTokenNeedsAllOfExpect(t *testing.T) {
	t.Parallel()
	pub, priv, _ := ed25519.GenerateKey(nil)
	tok := sign(t, priv, "k1", goodClaims(acme))
	for name, want := range map[string]client.Expect{
		"no issuer":   {Audience: acmeURL, Tenant: acmeID},
		"no audience": {Issuer: acmeURL, Tenant: acmeID},
		"no tenant":   {Issuer: acmeURL, Audience: acmeURL},
	} {
		_, err := client.VerifyAccessToken(context.Background(), tok, staticKeys{"k1": pub}, want)
		if err == nil || errors.Is(err, client.ErrInvalidToken) {
			t.Errorf("%s: %v, want a programming error, not ErrInvalidToken", name, err)
		}
		if _, ok := errors.AsType[*client.KeysUnavailableError](err); ok {
			t.Errorf("%s: %v is a KeysUnavailableError", name, err)
		}
	}
}
