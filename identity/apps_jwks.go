package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"

	"github.com/gatehouse/gatehouse/problem"
)

// ClientKey is a public key an app signs its client assertions with
// (private_key_jwt).
type ClientKey struct {
	Kid string           // "" when the JWK names none
	Alg string           // "" when the JWK names none: any algorithm of the key's type
	Key crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// Bounds of a registered JWK Set.
const (
	maxJWKSBytes = 8192
	maxJWKSKeys  = 5
	minRSABits   = 2048
	maxRSABits   = 4096
)

// clientJWK is a checked public key as stored: only the members
// Gatehouse uses.
type clientJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

type clientJWKS struct {
	Keys []clientJWK `json:"keys"`
}

// jwkPrivate are the members of a JWK that hold private or symmetric key
// material (RFC 7518, section 6).
var jwkPrivate = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// jwkAlgs are the signature algorithms of each key type.
var jwkAlgs = map[string][]string{
	"RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
	"EC":  {"ES256", "ES384", "ES512"},
	"OKP": {"EdDSA"},
}

var jwkCurves = map[string]struct {
	curve elliptic.Curve
	size  int
	alg   string
}{
	"P-256": {elliptic.P256(), 32, "ES256"},
	"P-384": {elliptic.P384(), 48, "ES384"},
	"P-521": {elliptic.P521(), 66, "ES512"},
}

// parseJWKS checks a JWK Set of public signature keys (at most
// maxJWKSBytes, 1 to maxJWKSKeys keys of type RSA (2048 to 4096 bits),
// EC (P-256, P-384, P-521, points on their curve) or OKP (Ed25519), no
// private members) and returns its keys and its normalized JSON. Returns
// Invalid naming the member at fault (jwks.keys[1].d, say).
func parseJWKS(raw []byte) ([]ClientKey, []byte, error) {
	if len(raw) > maxJWKSBytes {
		return nil, nil, problem.InvalidField("jwks", fmt.Sprintf("must be at most %d bytes", maxJWKSBytes))
	}
	var set map[string]json.RawMessage
	if err := json.Unmarshal(raw, &set); err != nil || set == nil {
		return nil, nil, problem.InvalidField("jwks", `must be a JWK Set: {"keys": [...]}`)
	}
	for _, name := range sortedKeys(set) {
		if name != "keys" {
			return nil, nil, problem.InvalidField("jwks."+name, "is not a member of a JWK Set (keys is its only one)")
		}
	}
	var members []map[string]json.RawMessage
	if err := json.Unmarshal(set["keys"], &members); err != nil {
		return nil, nil, problem.InvalidField("jwks.keys", "must be an array of JWKs")
	}
	if len(members) == 0 || len(members) > maxJWKSKeys {
		return nil, nil, problem.InvalidField("jwks.keys", fmt.Sprintf("must hold 1 to %d keys", maxJWKSKeys))
	}
	keys := make([]ClientKey, len(members))
	out := clientJWKS{Keys: make([]clientJWK, len(members))}
	for i, m := range members {
		field := fmt.Sprintf("jwks.keys[%d]", i)
		k, j, err := parseJWK(field, m)
		if err != nil {
			return nil, nil, err
		}
		if k.Kid != "" && slices.ContainsFunc(keys[:i], func(o ClientKey) bool { return o.Kid == k.Kid }) {
			return nil, nil, problem.InvalidField(field+".kid", "is given to another key too")
		}
		keys[i], out.Keys[i] = k, j
	}
	normalized, err := json.Marshal(out)
	if err != nil {
		return nil, nil, err
	}
	return keys, normalized, nil
}

// parseJWK checks one public key of a JWK Set.
func parseJWK(field string, m map[string]json.RawMessage) (ClientKey, clientJWK, error) {
	var k ClientKey
	var j clientJWK
	bad := func(member, reason string) (ClientKey, clientJWK, error) {
		return k, j, problem.InvalidField(field+"."+member, reason)
	}
	str := map[string]string{}
	for _, name := range sortedKeys(m) {
		switch {
		case slices.Contains(jwkPrivate, name):
			return bad(name, "is private key material: register public keys only")
		case name == "key_ops":
			var ops []string
			if err := json.Unmarshal(m[name], &ops); err != nil || len(ops) == 0 || slices.ContainsFunc(ops, func(op string) bool { return op != "verify" }) {
				return bad(name, `may hold only "verify": the keys verify client assertions`)
			}
		case slices.Contains([]string{"kty", "use", "alg", "kid", "n", "e", "crv", "x", "y"}, name):
			var v string
			if err := json.Unmarshal(m[name], &v); err != nil {
				return bad(name, "must be a string")
			}
			str[name] = v
		default:
			return bad(name, "is not a supported JWK member (give kty, kid, use, alg and the public key members alone)")
		}
	}
	j = clientJWK{Kty: str["kty"], Kid: str["kid"], Use: str["use"], Alg: str["alg"]}
	k.Kid, k.Alg = j.Kid, j.Alg
	switch j.Kty {
	case "RSA", "EC", "OKP":
	case "oct":
		return bad("kty", "symmetric keys cannot be registered: give public keys (RSA, EC or OKP)")
	case "":
		return bad("kty", "is required")
	default:
		return bad("kty", "must be RSA, EC or OKP")
	}
	if j.Use != "" && j.Use != "sig" {
		return bad("use", "must be sig: the keys verify client assertions")
	}
	if len(j.Kid) > 200 || strings.ContainsFunc(j.Kid, func(r rune) bool { return r < ' ' || r > '~' }) {
		return bad("kid", "must be at most 200 printable ASCII characters")
	}
	if j.Alg != "" && !slices.Contains(jwkAlgs[j.Kty], j.Alg) {
		return bad("alg", fmt.Sprintf("must be one of %s for a %s key", strings.Join(jwkAlgs[j.Kty], ", "), j.Kty))
	}
	only := func(allowed ...string) (string, bool) {
		for _, name := range []string{"n", "e", "crv", "x", "y"} {
			if _, ok := str[name]; ok && !slices.Contains(allowed, name) {
				return name, false
			}
		}
		return "", true
	}
	bytesOf := func(member string) ([]byte, bool) {
		v, ok := str[member]
		if !ok || v == "" {
			return nil, false
		}
		b, err := base64.RawURLEncoding.Strict().DecodeString(v)
		return b, err == nil
	}
	switch j.Kty {
	case "RSA":
		if name, ok := only("n", "e"); !ok {
			return bad(name, "is not a member of an RSA key")
		}
		n, ok := bytesOf("n")
		if !ok {
			return bad("n", "is required: the modulus, base64url without padding")
		}
		e, ok := bytesOf("e")
		if !ok || len(e) > 4 {
			return bad("e", "is required: the public exponent, base64url without padding, at most 4 bytes")
		}
		mod := new(big.Int).SetBytes(n)
		if mod.BitLen() < minRSABits || mod.BitLen() > maxRSABits {
			return bad("n", fmt.Sprintf("must be a modulus of %d to %d bits", minRSABits, maxRSABits))
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return bad("e", "must be an odd public exponent of at least 3")
		}
		k.Key = &rsa.PublicKey{N: mod, E: exp}
		j.N, j.E = str["n"], str["e"]
	case "EC":
		if name, ok := only("crv", "x", "y"); !ok {
			return bad(name, "is not a member of an EC key")
		}
		c, ok := jwkCurves[str["crv"]]
		if !ok {
			return bad("crv", "must be P-256, P-384 or P-521")
		}
		if j.Alg != "" && j.Alg != c.alg {
			return bad("alg", fmt.Sprintf("must be %s for a %s key", c.alg, str["crv"]))
		}
		x, okx := bytesOf("x")
		y, oky := bytesOf("y")
		if !okx || len(x) != c.size {
			return bad("x", fmt.Sprintf("must be %d bytes, base64url without padding", c.size))
		}
		if !oky || len(y) != c.size {
			return bad("y", fmt.Sprintf("must be %d bytes, base64url without padding", c.size))
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(c.curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return bad("x", "with y, must be a point on the curve")
		}
		k.Key = pub
		j.Crv, j.X, j.Y = str["crv"], str["x"], str["y"]
	case "OKP":
		if name, ok := only("crv", "x"); !ok {
			return bad(name, "is not a member of an OKP key")
		}
		switch str["crv"] {
		case "Ed25519":
		case "X25519":
			return bad("crv", "X25519 keys are for key agreement, not signatures: give an Ed25519 key")
		default:
			return bad("crv", "must be Ed25519")
		}
		x, ok := bytesOf("x")
		if !ok || len(x) != ed25519.PublicKeySize {
			return bad("x", "must be 32 bytes, base64url without padding")
		}
		k.Key = ed25519.PublicKey(x)
		j.Crv, j.X = "Ed25519", str["x"]
	}
	return k, j, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
