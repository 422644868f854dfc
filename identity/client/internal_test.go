package client

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestParseJWKSSkipsWhatIsNotAnEd25519SigningKey(t *testing.T) {
	t.Parallel()
	key := func(b byte) string {
		pub := make([]byte, ed25519.PublicKeySize)
		pub[0] = b
		return base64.RawURLEncoding.EncodeToString(pub)
	}
	jwk := func(kid, fields string) string {
		return fmt.Sprintf(`{"kid":%q,%s}`, kid, fields)
	}
	good := `"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","x":"` + key(1) + `"`
	body := `{"keys":[` + jwk("good", good) + `,` +
		jwk("no-alg-no-use", `"kty":"OKP","crv":"Ed25519","x":"`+key(2)+`"`) + `,` +
		jwk("rsa", `"kty":"RSA","n":"AQAB","e":"AQAB"`) + `,` +
		jwk("x25519", `"kty":"OKP","crv":"X25519","x":"`+key(3)+`"`) + `,` +
		jwk("other-alg", `"kty":"OKP","crv":"Ed25519","alg":"ES256","x":"`+key(4)+`"`) + `,` +
		jwk("for-encryption", `"kty":"OKP","crv":"Ed25519","use":"enc","x":"`+key(5)+`"`) + `,` +
		jwk("short-x", `"kty":"OKP","crv":"Ed25519","x":"AAAA"`) + `,` +
		jwk("padded-x", `"kty":"OKP","crv":"Ed25519","x":"`+key(6)+`="`) + `,` +
		jwk("x-not-base64", `"kty":"OKP","crv":"Ed25519","x":"!!!"`) + `,` +
		jwk("", good) + `,` +
		jwk("twice", `"kty":"OKP","crv":"Ed25519","x":"`+key(7)+`"`) + `,` +
		jwk("twice", `"kty":"OKP","crv":"Ed25519","x":"`+key(8)+`"`) + `,` +
		jwk("same-twice", `"kty":"OKP","crv":"Ed25519","x":"`+key(9)+`"`) + `,` +
		jwk("same-twice", `"kty":"OKP","crv":"Ed25519","x":"`+key(9)+`"`) + `,` +
		`"not an object",` +
		`{"kid":"wrong-types","kty":1}` + `]}`
	keys, err := parseJWKS([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for kid := range keys {
		kids = append(kids, kid)
	}
	slices.Sort(kids)
	if want := []string{"good", "no-alg-no-use", "same-twice"}; !slices.Equal(kids, want) {
		t.Fatalf("kept %v, want %v", kids, want)
	}
	if keys["good"][0] != 1 {
		t.Fatalf("good key %x", keys["good"])
	}
}

func TestMaxAgeOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		header []string
		age    time.Duration
		ok     bool
	}{
		{nil, 0, false},
		{[]string{"public"}, 0, false},
		{[]string{"public, max-age=300"}, 300 * time.Second, true},
		{[]string{"public", "Max-Age=60"}, time.Minute, true},
		{[]string{`max-age="30"`}, 30 * time.Second, true},
		{[]string{"max-age=-1"}, 0, false},
		{[]string{"max-age=soon"}, 0, false},
		{[]string{"max-age=99999999999999999999"}, 0, false},
		{[]string{"max-age=9999999999"}, 365 * 24 * time.Hour, true},
		{[]string{"no-store"}, 0, true},
		{[]string{"no-cache, max-age=300"}, 0, true},
	} {
		h := http.Header{"Cache-Control": tt.header}
		if age, ok := maxAgeOf(h); age != tt.age || ok != tt.ok {
			t.Errorf("%q: %v, %v; want %v, %v", tt.header, age, ok, tt.age, tt.ok)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"2":                             2 * time.Second,
		"0":                             0,
		"-5":                            0,
		"soon":                          0,
		"99999999":                      24 * time.Hour,
		"Wed, 01 Jan 2025 12:00:30 GMT": 30 * time.Second,
		"Wed, 01 Jan 2025 11:00:00 GMT": 0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("Retry-After %q: %v, want %v", v, got, want)
		}
	}
}
