package client

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// JWKSPath is where a tenant's host publishes the tenant's signing keys.
const JWKSPath = "/.well-known/jwks.json"

// JWKSOptions tune a JWKS; the zero value is fine.
type JWKSOptions struct {
	// HTTPClient fetches the keys; default one with a 10-second timeout.
	HTTPClient *http.Client
	// MaxAge is how long fetched keys are used before they are fetched
	// again: the response's Cache-Control max-age, but no longer than
	// this; default 10 minutes.
	MaxAge time.Duration
	// RefetchInterval is the least time between two fetches, however
	// many tokens name kids the keys do not have; default a second.
	RefetchInterval time.Duration
	// FetchTimeout bounds one fetch; default 5 seconds.
	FetchTimeout time.Duration
}

// JWKS is the KeySource of one tenant's published keys, fetched from its
// JWKS URL on first need and kept in memory.
//
// Kept keys older than their max age still verify while a fetch runs in
// the background, and go on verifying while fetches fail: an outage of
// the key endpoint does not stop verification, nor turn a good token into
// an invalid one. A kid the keys do not have makes a fetch at once (the
// key may be new), shared by every lookup meanwhile and begun no sooner
// than RefetchInterval after the last; a kid a fetch begun after it was
// asked for did not have is ErrUnknownKey, and is answered so without
// fetching for a few seconds.
//
// Only Ed25519 keys (kty OKP, crv Ed25519, alg EdDSA if given, use sig if
// given) are kept; any other or malformed key is skipped, and a response
// with no key kept is a failed fetch.
type JWKS struct {
	url     string
	client  *http.Client
	maxAge  time.Duration
	fetches shared[*keySet]

	mu      sync.Mutex
	set     *keySet              // the last fetched; nil before the first
	unknown map[string]time.Time // kids a fetch did not have, until when
}

// keySet is one fetch's keys.
type keySet struct {
	keys  map[string]ed25519.PublicKey // by kid
	fresh time.Time                    // until when used without fetching
}

// Bounds of what a JWKS keeps and reads.
const (
	maxJWKSBody   = 256 << 10
	unknownKids   = 1024
	unknownKidTTL = 10 * time.Second
)

// NewJWKS returns the KeySource of the keys published at url (a tenant's
// URL followed by JWKSPath).
func NewJWKS(url string, o JWKSOptions) *JWKS {
	j := &JWKS{
		url:     url,
		client:  cmp.Or(o.HTTPClient, defaultHTTPClient()),
		maxAge:  cmp.Or(o.MaxAge, 10*time.Minute),
		unknown: map[string]time.Time{},
	}
	j.fetches = shared[*keySet]{
		interval: cmp.Or(o.RefetchInterval, time.Second),
		timeout:  cmp.Or(o.FetchTimeout, 5*time.Second),
		fetch:    j.fetch,
	}
	return j
}

func defaultHTTPClient() *http.Client { return &http.Client{Timeout: 10 * time.Second} }

// PublicKey returns the published key kid. Returns ErrUnknownKey if the
// tenant publishes no such key, and another error if the keys could not
// be fetched and none kept has this kid.
func (j *JWKS) PublicKey(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	asked := time.Now()
	j.mu.Lock()
	set := j.set
	until, unknown := j.unknown[kid]
	j.mu.Unlock()
	if key, ok := set.lookup(kid); ok {
		if !asked.Before(set.fresh) {
			j.fetches.start(ctx) // this key serves until the fetch is in
		}
		return key, nil
	}
	if unknown && asked.Before(until) {
		return nil, ErrUnknownKey
	}
	// A fetch that began before this kid was asked for may predate its
	// key: then one more.
	for range 2 {
		c := j.fetches.start(ctx)
		fetched, err := c.wait(ctx)
		if err != nil {
			return nil, err // not unknown: not known either way
		}
		if key, ok := fetched.lookup(kid); ok {
			return key, nil
		}
		if !c.began.Before(asked) {
			break
		}
	}
	j.mu.Lock()
	if len(j.unknown) >= unknownKids {
		clear(j.unknown)
	}
	j.unknown[kid] = time.Now().Add(unknownKidTTL)
	j.mu.Unlock()
	return nil, ErrUnknownKey
}

func (s *keySet) lookup(kid string) (ed25519.PublicKey, bool) {
	if s == nil {
		return nil, false
	}
	key, ok := s.keys[kid]
	return key, ok
}

// fetch reads the published keys and keeps them.
func (j *JWKS) fetch(ctx context.Context) (*keySet, error) {
	set, err := j.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", j.url, err)
	}
	j.mu.Lock()
	j.set = set
	j.mu.Unlock()
	return set, nil
}

func (j *JWKS) get(ctx context.Context) (*keySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := j.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", res.StatusCode)
	}
	body, err := readBounded(res.Body, maxJWKSBody)
	if err != nil {
		return nil, err
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, err
	}
	age := j.maxAge
	if a, ok := maxAgeOf(res.Header); ok {
		age = min(a, age)
	}
	return &keySet{keys: keys, fresh: time.Now().Add(age)}, nil
}

// readBounded reads r to its end, refusing more than limit bytes.
func readBounded(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("body over %d bytes", limit)
	}
	return b, nil
}

// jwk is one key of a JWKS as published (RFC 7517, RFC 8037).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// parseJWKS returns the Ed25519 signing keys of a JWKS by kid, skipping
// any other key and any malformed one. A kid given to two different keys
// names neither. Having no key left is an error: a tenant always
// publishes one, and a set without is a fault to ride out with the keys
// kept.
func parseJWKS(body []byte) (map[string]ed25519.PublicKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	keys := make(map[string]ed25519.PublicKey, len(set.Keys))
	twice := map[string]bool{}
	for _, raw := range set.Keys {
		var k jwk
		if json.Unmarshal(raw, &k) != nil {
			continue
		}
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Kid == "" || len(k.Kid) > maxKidSize ||
			(k.Alg != "" && k.Alg != "EdDSA") || (k.Use != "" && k.Use != "sig") {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			continue
		}
		if prev, ok := keys[k.Kid]; ok && !prev.Equal(ed25519.PublicKey(x)) {
			twice[k.Kid] = true
		}
		keys[k.Kid] = x
	}
	for kid := range twice {
		delete(keys, kid)
	}
	if len(keys) == 0 {
		return nil, errors.New("no Ed25519 signing key in the JWKS")
	}
	return keys, nil
}

// maxAgeOf returns the max age Cache-Control gives a response: 0 for
// no-store or no-cache; false if it says nothing of it.
func maxAgeOf(h http.Header) (time.Duration, bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			d = strings.ToLower(strings.TrimSpace(d))
			switch {
			case d == "no-store" || d == "no-cache":
				return 0, true
			case strings.HasPrefix(d, "max-age="):
				n, err := strconv.ParseInt(strings.Trim(d[len("max-age="):], `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				return time.Duration(min(n, 365*24*3600)) * time.Second, true
			}
		}
	}
	return 0, false
}
