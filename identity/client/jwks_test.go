package client_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity/client"
)

// keyServer publishes a JWKS as a tenant's host does, and counts the
// fetches.
type keyServer struct {
	*httptest.Server
	fetches     atomic.Int64
	tenantReads atomic.Int64

	mu           sync.Mutex
	keys         map[string]ed25519.PrivateKey
	down         bool          // answer 503
	cacheControl string        // the Cache-Control header, if any
	body         string        // answer this instead of the keys, if set
	arrived      chan struct{} // if set, told of a fetch once its keys are read
	hold         chan struct{} // if set, a fetch answers once it closes
	tenantID     string        // what GET /v1/tenant says
}

func newKeyServer(t *testing.T) *keyServer {
	t.Helper()
	s := &keyServer{keys: map[string]ed25519.PrivateKey{}, tenantID: acmeID}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+client.JWKSPath, s.serveJWKS)
	mux.HandleFunc("GET /v1/tenant", func(w http.ResponseWriter, r *http.Request) {
		s.tenantReads.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.down {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q,"slug":"acme","name":"Acme"}`, s.tenantID)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *keyServer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if s.cacheControl != "" {
		w.Header().Set("Cache-Control", s.cacheControl)
	}
	w.Header().Set("Content-Type", "application/json")
	body := s.body
	if body == "" {
		set := struct {
			Keys []map[string]string `json:"keys"`
		}{Keys: []map[string]string{}}
		for kid, k := range s.keys {
			x := base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
			set.Keys = append(set.Keys, map[string]string{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
		}
		b, _ := json.Marshal(set)
		body = string(b)
	}
	arrived, hold := s.arrived, s.hold
	s.mu.Unlock()
	if arrived != nil {
		arrived <- struct{}{}
	}
	if hold != nil {
		<-hold
	}
	s.mu.Lock()
	fmt.Fprint(w, body)
}

// rotate publishes a new key kid and returns it.
func (s *keyServer) rotate(kid string) ed25519.PrivateKey {
	_, priv, _ := ed25519.GenerateKey(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[kid] = priv
	return priv
}

func (s *keyServer) set(f func(s *keyServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *keyServer) jwks(o client.JWKSOptions) *client.JWKS {
	return client.NewJWKS(s.URL+client.JWKSPath, o)
}

// eventually waits up to a few seconds for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 5 seconds", what)
}

func TestJWKSConcurrentLookupsShareOneFetch(t *testing.T) {
	t.Parallel()
	s := newKeyServer(t)
	priv := s.rotate("k1")
	keys := s.jwks(client.JWKSOptions{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			key, err := keys.PublicKey(context.Background(), "k1")
			if err != nil || !key.Equal(priv.Public()) {
				t.Errorf("PublicKey = %v, %v", key, err)
			}
		})
	}
	wg.Wait()
	if n := s.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches for 50 lookups of one kid, want 1", n)
	}
	// Kept: later lookups cost nothing.
	for range 10 {
		if _, err := keys.PublicKey(context.Background(), "k1"); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches after lookups of a kept key, want 1", n)
	}
}

func TestJWKSUnknownKidRefetchesAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	const interval = 300 * time.Millisecond
	s := newKeyServer(t)
	s.rotate("k1")
	keys := s.jwks(client.JWKSOptions{RefetchInterval: interval})
	ctx := context.Background()
	if _, err := keys.PublicKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	// A flood of made-up kids, all different: one fetch per interval at
	// most, every one of them unknown.
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if _, err := keys.PublicKey(ctx, fmt.Sprintf("made-up-%d", i)); !errors.Is(err, client.ErrUnknownKey) {
				t.Errorf("made-up kid: %v, want ErrUnknownKey", err)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if n, most := s.fetches.Load(), 1+int64(took/interval)+1; n > most {
		t.Fatalf("%d fetches in %v with a %v interval, want at most %d", n, took, interval, most)
	}
	// A kid found unknown is answered so without fetching again.
	before := s.fetches.Load()
	for range 20 {
		if _, err := keys.PublicKey(ctx, "made-up-1"); !errors.Is(err, client.ErrUnknownKey) {
			t.Fatalf("made-up kid again: %v", err)
		}
	}
	if n := s.fetches.Load(); n != before {
		t.Fatalf("%d fetches for a kid already found unknown", n-before)
	}
}

// A key published just after a fetch is found by the next one: its
// token waits for the interval, and is not refused.
func TestJWKSFindsAKeyPublishedJustAfterAFetch(t *testing.T) {
	t.Parallel()
	s := newKeyServer(t)
	s.rotate("k1")
	keys := s.jwks(client.JWKSOptions{RefetchInterval: 200 * time.Millisecond})
	ctx := context.Background()
	if _, err := keys.PublicKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	priv := s.rotate("k2")
	key, err := keys.PublicKey(ctx, "k2")
	if err != nil || !key.Equal(priv.Public()) {
		t.Fatalf("the new key: %v, %v", key, err)
	}
	if n := s.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

// A fetch that began before a kid was asked for may predate its key: a
// lookup that joined it fetches once more before it calls the kid
// unknown.
func TestJWKSDoesNotTrustAFetchOlderThanTheQuestion(t *testing.T) {
	t.Parallel()
	s := newKeyServer(t)
	s.rotate("k1")
	arrived, hold := make(chan struct{}), make(chan struct{})
	s.set(func(s *keyServer) { s.arrived, s.hold = arrived, hold })
	keys := s.jwks(client.JWKSOptions{RefetchInterval: 10 * time.Millisecond})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := keys.PublicKey(ctx, "k1")
		first <- err
	}()
	<-arrived // the fetch has read the keys: k2 is not among them
	priv := s.rotate("k2")
	s.set(func(s *keyServer) { s.arrived = nil })
	second := make(chan error, 1)
	go func() {
		key, err := keys.PublicKey(ctx, "k2")
		if err == nil && !key.Equal(priv.Public()) {
			err = errors.New("another key")
		}
		second <- err
	}()
	time.Sleep(50 * time.Millisecond) // the second lookup joins the fetch under way
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("a key published while a fetch was under way: %v", err)
	}
	if n := s.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

func TestJWKSKeepsVerifyingWhileFetchesFail(t *testing.T) {
	t.Parallel()
	s := newKeyServer(t)
	priv := s.rotate("k1")
	keys := s.jwks(client.JWKSOptions{MaxAge: 50 * time.Millisecond, RefetchInterval: 20 * time.Millisecond})
	ctx := context.Background()
	if _, err := keys.PublicKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	s.set(func(s *keyServer) { s.down = true })
	time.Sleep(100 * time.Millisecond) // the keys are past their max age
	for range 3 {
		key, err := keys.PublicKey(ctx, "k1")
		if err != nil || !key.Equal(priv.Public()) {
			t.Fatalf("a kept key while the server is down: %v, %v", key, err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	eventually(t, "a fetch after the max age", func() bool { return s.fetches.Load() >= 2 })

	// A kid not kept cannot be answered for: not unknown, unavailable.
	_, err := keys.PublicKey(ctx, "k2")
	if err == nil || errors.Is(err, client.ErrUnknownKey) {
		t.Fatalf("a kid not kept while the server is down: %v, want a failure that is not ErrUnknownKey", err)
	}
	priv2 := s.rotate("k2")
	_, err = client.VerifyAccessToken(ctx, sign(t, priv2, "k2", goodClaims(acme)), keys, acme)
	if _, ok := errors.AsType[*client.KeysUnavailableError](err); !ok || errors.Is(err, client.ErrInvalidToken) {
		t.Fatalf("verifying while the keys cannot be had: %v, want KeysUnavailableError", err)
	}

	// Back up: the new key is found.
	s.set(func(s *keyServer) { s.down = false })
	if _, err := client.VerifyAccessToken(ctx, sign(t, priv2, "k2", goodClaims(acme)), keys, acme); err != nil {
		t.Fatalf("once the server is back: %v", err)
	}
}

// Fetched keys are used for the response's max-age, capped by MaxAge,
// then fetched again in the background while they go on serving.
func TestJWKSRefetchesAfterMaxAge(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name         string
		cacheControl string
		maxAge       time.Duration
		refetch      bool
	}{
		{"max-age kept", "public, max-age=300", 0, false},
		{"MaxAge without a header", "", 50 * time.Millisecond, true},
		{"MaxAge caps max-age", "public, max-age=300", 50 * time.Millisecond, true},
		{"no-store", "no-store", 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newKeyServer(t)
			s.rotate("k1")
			s.set(func(s *keyServer) { s.cacheControl = tt.cacheControl })
			keys := s.jwks(client.JWKSOptions{MaxAge: tt.maxAge, RefetchInterval: 10 * time.Millisecond})
			ctx := context.Background()
			if _, err := keys.PublicKey(ctx, "k1"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			if _, err := keys.PublicKey(ctx, "k1"); err != nil {
				t.Fatal(err)
			}
			if tt.refetch {
				eventually(t, "a refetch", func() bool { return s.fetches.Load() == 2 })
				return
			}
			time.Sleep(50 * time.Millisecond)
			if n := s.fetches.Load(); n != 1 {
				t.Fatalf("%d fetches within max-age, want 1", n)
			}
		})
	}
}

// A key taken off the JWKS stops verifying once the keys are fetched
// again.
func TestJWKSForgetsUnpublishedKeys(t *testing.T) {
	t.Parallel()
	s := newKeyServer(t)
	s.rotate("k1")
	s.rotate("k2")
	keys := s.jwks(client.JWKSOptions{MaxAge: 20 * time.Millisecond, RefetchInterval: 10 * time.Millisecond})
	ctx := context.Background()
	if _, err := keys.PublicKey(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	s.set(func(s *keyServer) { delete(s.keys, "k1") })
	eventually(t, "k1 unknown", func() bool {
		_, err := keys.PublicKey(ctx, "k1")
		return errors.Is(err, client.ErrUnknownKey)
	})
}

func TestJWKSRefusesBadSets(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"not JSON":      "<html>",
		"no keys":       `{"keys":[]}`,
		"only RSA keys": `{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}`,
		"over the size": `{"keys":[` + strings.Repeat(`{"kty":"RSA"},`, 30_000) + `{}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := newKeyServer(t)
			s.set(func(s *keyServer) { s.body = body })
			_, err := s.jwks(client.JWKSOptions{}).PublicKey(context.Background(), "k1")
			if err == nil || errors.Is(err, client.ErrUnknownKey) {
				t.Fatalf("%v, want a failed fetch", err)
			}
		})
	}
}

// A caller that goes away does not fail the fetch it shared.
func TestJWKSCallerGoingAwayDoesNotFailOthers(t *testing.T) {
	t.Parallel()
	s := newKeyServer(t)
	s.rotate("k1")
	keys := s.jwks(client.JWKSOptions{})
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := keys.PublicKey(gone, "k1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a caller gone: %v", err)
	}
	if _, err := keys.PublicKey(context.Background(), "k1"); err != nil {
		t.Fatal(err)
	}
	if n := s.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches, want the one the gone caller began", n)
	}
}
