package identity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"testing"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(k *rsa.PublicKey, kid string) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(k *ecdsa.PublicKey, kid string) map[string]any {
	p, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	n := (len(p) - 1) / 2
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(p[1 : 1+n]), "y": b64(p[1+n:])}
}

func edJWK(k ed25519.PublicKey, kid string) map[string]any {
	return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k), "alg": "EdDSA", "key_ops": []string{"verify"}}
}

func jwks(keys ...map[string]any) map[string]any { return map[string]any{"keys": keys} }

// withMember returns a copy of m with k set to v (deleted if v is nil).
func withMember(m map[string]any, k string, v any) map[string]any {
	c := map[string]any{}
	for key, val := range m {
		c[key] = val
	}
	if v == nil {
		delete(c, k)
	} else {
		c[k] = v
	}
	return c
}

// TestClientJWKSHoldsOnlyPublicKeys: a private_key_jwt app registers
// public RSA, EC and Ed25519 keys, which ClientKeys gives back as Go keys;
// private members, symmetric, weak, off-curve and unknown keys and
// members are refused naming the member; and the keys serve only that
// app while it is enabled.
func TestClientJWKSHoldsOnlyPublicKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@jwks.test").AccessToken
	ctx := context.Background()
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edPub2, _, _ := ed25519.GenerateKey(rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)

	app := e.createApp("acme", boss, map[string]any{"name": "partner", "kind": "web", "token_endpoint_auth_method": "private_key_jwt",
		"redirect_uris": []string{"https://partner.test/cb"},
		"jwks":          jwks(rsaJWK(&rsaKey.PublicKey, "r1"), ecJWK(&ecKey.PublicKey, "e1"), edJWK(edPub, "d1"))})
	if app.ClientSecret != "" || len(app.Secrets) != 0 || len(app.JWKS) == 0 {
		t.Fatalf("private_key_jwt app: %+v", app)
	}
	keys, err := e.svc.ClientKeys(ctx, tn, app.ClientID)
	if err != nil || len(keys) != 3 {
		t.Fatalf("client keys: %v, %v", keys, err)
	}
	if k, ok := keys[0].Key.(*rsa.PublicKey); !ok || !k.Equal(&rsaKey.PublicKey) || keys[0].Kid != "r1" || keys[0].Alg != "RS256" {
		t.Fatalf("RSA key: %+v", keys[0])
	}
	if k, ok := keys[1].Key.(*ecdsa.PublicKey); !ok || !k.Equal(&ecKey.PublicKey) || keys[1].Kid != "e1" {
		t.Fatalf("EC key: %+v", keys[1])
	}
	if k, ok := keys[2].Key.(ed25519.PublicKey); !ok || !k.Equal(edPub) || keys[2].Alg != "EdDSA" {
		t.Fatalf("Ed25519 key: %+v", keys[2])
	}
	machine := e.createApp("acme", boss, map[string]any{"name": "job", "kind": "machine", "token_endpoint_auth_method": "private_key_jwt",
		"jwks": jwks(ecJWK(&ecKey.PublicKey, ""))})
	if machine.ClientSecret != "" {
		t.Fatal("a private_key_jwt machine app got a secret")
	}
	if e.verifies(tn, app.ClientID, "") || e.verifies(tn, machine.ClientID, "anything-at-all") {
		t.Fatal("a private_key_jwt app authenticated with a secret")
	}
	e.problemOf(e.do("POST", "acme", "/v1/admin/apps/"+app.ID.String()+"/secret", boss, nil), 409)

	// New keys replace the old ones.
	e.must(200, "PATCH", "acme", "/v1/admin/apps/"+app.ID.String(), boss, map[string]any{"jwks": jwks(edJWK(edPub2, "d2"))})
	keys, err = e.svc.ClientKeys(ctx, tn, app.ClientID)
	if err != nil || len(keys) != 1 || !keys[0].Key.(ed25519.PublicKey).Equal(edPub2) {
		t.Fatalf("client keys after the change: %v, %v", keys, err)
	}
	// Only an enabled private_key_jwt app has keys to give.
	e.must(200, "PATCH", "acme", "/v1/admin/apps/"+app.ID.String(), boss, map[string]any{"disabled": true})
	secretApp := e.createApp("acme", boss, webApp("plain"))
	for name, client := range map[string]string{"disabled": app.ClientID, "secret app": secretApp.ClientID, "unknown": "BBBBBBBBBBBBBBBBBBBBBB"} {
		if _, err := e.svc.ClientKeys(ctx, tn, client); problem.CodeOf(err) != problem.Unauthorized {
			t.Errorf("%s: client keys answered %v", name, err)
		}
	}

	rsaPub := rsaJWK(&rsaKey.PublicKey, "r")
	ecPub := ecJWK(&ecKey.PublicKey, "e")
	offCurve := withMember(ecPub, "y", b64(bytes.Repeat([]byte{1}, 32)))
	six := make([]map[string]any, 6)
	for i := range six {
		six[i] = edJWK(edPub, string(rune('a'+i)))
	}
	for _, c := range []struct {
		name  string
		jwks  any
		field string
	}{
		{"a private RSA key", jwks(withMember(rsaPub, "d", b64(rsaKey.D.Bytes()))), "jwks.keys[0].d"},
		{"a symmetric key", jwks(map[string]any{"kty": "oct", "k": b64([]byte("0123456789abcdef"))}), "jwks.keys[0].k"},
		{"a symmetric key type", jwks(map[string]any{"kty": "oct"}), "jwks.keys[0].kty"},
		{"an unknown key type", jwks(map[string]any{"kty": "PQC", "x": "AA"}), "jwks.keys[0].kty"},
		{"a key type that is not text", jwks(map[string]any{"kty": 7}), "jwks.keys[0].kty"},
		{"a 1024-bit RSA key", jwks(rsaJWK(&weak.PublicKey, "w")), "jwks.keys[0].n"},
		{"an even exponent", jwks(withMember(rsaPub, "e", b64([]byte{1, 0, 0}))), "jwks.keys[0].e"},
		{"a padded modulus", jwks(withMember(rsaPub, "n", base64.URLEncoding.EncodeToString(rsaKey.N.Bytes()))), "jwks.keys[0].n"},
		{"a point off the curve", jwks(offCurve), "jwks.keys[0].x"},
		{"a short coordinate", jwks(withMember(ecPub, "x", b64([]byte{1, 2, 3}))), "jwks.keys[0].x"},
		{"ES384 on P-256", jwks(withMember(ecPub, "alg", "ES384")), "jwks.keys[0].alg"},
		{"an EC key with an RSA member", jwks(withMember(ecPub, "n", "AQAB")), "jwks.keys[0].n"},
		{"X25519", jwks(withMember(edJWK(edPub, "x"), "crv", "X25519")), "jwks.keys[0].crv"},
		{"a certificate URL", jwks(withMember(rsaPub, "x5u", "https://evil.test/cert")), "jwks.keys[0].x5u"},
		{"a certificate chain", jwks(withMember(rsaPub, "x5c", []string{"MIIB"})), "jwks.keys[0].x5c"},
		{"two keys of one kid", jwks(edJWK(edPub, "same"), edJWK(edPub2, "same")), "jwks.keys[1].kid"},
		{"an encryption key", jwks(withMember(rsaPub, "use", "enc")), "jwks.keys[0].use"},
		{"signing operations", jwks(withMember(edJWK(edPub, "s"), "key_ops", []string{"sign"})), "jwks.keys[0].key_ops"},
		{"no keys", jwks(), "jwks.keys"},
		{"six keys", jwks(six...), "jwks.keys"},
		{"not a set", "keys", "jwks"},
		{"a member beside keys", map[string]any{"keys": []any{edJWK(edPub, "k")}, "issuer": "x"}, "jwks.issuer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			d := e.problemOf(e.do("POST", "acme", "/v1/admin/apps", boss, map[string]any{"name": "bad", "kind": "machine",
				"token_endpoint_auth_method": "private_key_jwt", "jwks": c.jwks}), 400)
			if len(d.Errors) == 0 || d.Errors[0].Field != c.field {
				t.Fatalf("refusal names %+v (%s); want %s", d.Errors, d.Detail, c.field)
			}
		})
	}
	e.t = t
	if n := e.appCount(); n != 3 {
		t.Fatalf("%d apps after the refusals; want 3", n)
	}
}
