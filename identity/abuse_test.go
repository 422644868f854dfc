package identity_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

// TestUnknownKidIsRememberedAsUnknown sends a well-formed token of the
// tenant that names a kid no key has: it is refused, a repeat is refused
// without reading the keys again (here: while their table is locked, so
// a read would wait), and a stream of different made-up kids costs at
// most a read a second.
func TestUnknownKidIsRememberedAsUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, tenancy.SignupOpen)
	e.signup("acme", "ada@example.com", goodPassword)
	real := e.login("acme", "ada@example.com", goodPassword)

	var claims identity.Claims
	if _, _, err := jwt.NewParser().ParseUnverified(real.AccessToken, &claims); err != nil {
		t.Fatal(err)
	}
	_, forger, _ := ed25519.GenerateKey(nil)
	forge := func(kid string) string {
		forged := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
		forged.Header["kid"] = kid
		token, err := forged.SignedString(forger)
		if err != nil {
			t.Fatal(err)
		}
		return token
	}
	token := forge("made-up-kid")
	e.problemOf(e.do("GET", "acme", "/v1/me", token, nil), 401)

	// Different made-up kids, forty at once: they share reads.
	before, start := e.keys.KeyReads(), time.Now()
	var wg sync.WaitGroup
	for i := range 40 {
		tok := forge(fmt.Sprintf("made-up-%d", i))
		wg.Go(func() {
			req := httptest.NewRequest("GET", "/v1/me", nil)
			req.Host = "acme.localhost"
			req.Header.Set("Authorization", "Bearer "+tok)
			if res, err := e.app.Test(req, -1); err == nil {
				res.Body.Close()
			}
		})
	}
	wg.Wait()
	if reads, most := e.keys.KeyReads()-before, int64(time.Since(start)/time.Second)+2; reads > most {
		t.Fatalf("40 made-up kids over %s made %d reads of the keys; want at most %d", time.Since(start), reads, most)
	}
	// The tenant's real tokens are not held up by any of it.
	e.must(200, "GET", "acme", "/v1/me", real.AccessToken, nil)

	ctx := context.Background()
	tx, err := e.admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "lock table app.signing_keys in access exclusive mode"); err != nil {
		t.Fatal(err)
	}
	answered := make(chan int, 1)
	go func() {
		req := httptest.NewRequest("GET", "/v1/me", nil)
		req.Host = "acme.localhost"
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := e.app.Test(req, -1)
		if err != nil {
			answered <- 0
			return
		}
		res.Body.Close()
		answered <- res.StatusCode
	}()
	select {
	case status := <-answered:
		if status != 401 {
			t.Fatalf("the repeated unknown kid answered %d, want 401", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the repeated unknown kid waited for the keys table: it was looked up again")
	}
}
