package secrets_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// firstGeneration is the key generation of every tenant that has not
// brought its own key.
var firstGeneration = secrets.GenerationsFunc(func(context.Context, tenancy.ID) (uint16, error) { return 1, nil })

// newKeyedTenant returns a tenant with its Transit key created.
func newKeyedTenant(t *testing.T, v *secrets.Vault) tenancy.ID {
	t.Helper()
	id := newTenant()
	if err := v.CreateTenantKey(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	return id
}

// wrappedKey returns the wrapped data key a sealed blob carries.
func wrappedKey(b []byte) string {
	n := int(b[7])<<8 | int(b[8])
	return string(b[9 : 9+n])
}

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	s := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	a := newKeyedTenant(t, v)
	aad := secrets.AAD("signing_keys", "private_key", "kid-1")
	plain := []byte("-----ed25519 private key material-----")

	b1, err := s.Seal(ctx, a, aad, plain)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := s.Seal(ctx, a, aad, plain)
	if bytes.Contains(b1, plain) || bytes.Equal(b1, b2) {
		t.Fatal("sealed blobs show the plaintext or repeat each other")
	}
	if b1[0] != 1 || !bytes.HasPrefix([]byte(wrappedKey(b1)), []byte("vault:v1:")) {
		t.Fatalf("blob header: format %d, wrapped key %.12q", b1[0], wrappedKey(b1))
	}
	for _, b := range [][]byte{b1, b2} {
		got, err := s.Open(ctx, a, aad, b)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("Open = %q, %v", got, err)
		}
	}
	// A fresh Sealer (another instance, empty cache) opens it through Vault.
	other := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	if got, err := other.Open(ctx, a, aad, b1); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open on another instance = %q, %v", got, err)
	}
}

func TestSealedValueOpensOnlyWhereItWasSealed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	s := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	a, b := newKeyedTenant(t, v), newKeyedTenant(t, v)
	aad := secrets.AAD("mfa_totp", "seed", "row-1")
	sealed, err := s.Seal(ctx, a, aad, []byte("JBSWY3DPEHPK3PXP"))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	cases := map[string]struct {
		tenant tenancy.ID
		aad    []byte
		blob   []byte
	}{
		"another row":      {a, secrets.AAD("mfa_totp", "seed", "row-2"), sealed},
		"another column":   {a, secrets.AAD("mfa_totp", "backup", "row-1"), sealed},
		"another table":    {a, secrets.AAD("signing_keys", "seed", "row-1"), sealed},
		"another tenant":   {b, aad, sealed},
		"tampered":         {a, aad, flipped},
		"truncated":        {a, aad, sealed[:20]},
		"unknown format":   {a, aad, append([]byte{9}, sealed[1:]...)},
		"ambiguous fields": {a, secrets.AAD("mfa_totps", "eed", "row-1"), sealed},
	}
	for name, c := range cases {
		got, err := s.Open(ctx, c.tenant, c.aad, c.blob)
		if err == nil || got != nil {
			t.Errorf("%s: opened (%q)", name, got)
			continue
		}
		if code := problem.CodeOf(err); code != problem.Invalid {
			t.Errorf("%s: %v (%s), want Invalid", name, err, code)
		}
	}
}

func TestDataKeysAreCachedBoundedAndZeroed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	s := secrets.NewSealerAt(v, firstGeneration, secrets.SealerOptions{
		SealKeyTTL: time.Minute, SealKeyUses: 3, OpenKeyTTL: time.Minute,
	}, clock)
	a := newKeyedTenant(t, v)
	aad := secrets.AAD("t", "c", "r")
	var blobs [][]byte
	for range 4 {
		b, err := s.Seal(ctx, a, aad, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, b)
	}
	// Three uses per data key: the first three share one, the fourth
	// has a new one.
	if wrappedKey(blobs[0]) != wrappedKey(blobs[2]) || wrappedKey(blobs[2]) == wrappedKey(blobs[3]) {
		t.Fatal("data key not reused within its use limit, or reused beyond it")
	}
	if _, err := s.Open(ctx, a, aad, blobs[0]); err != nil {
		t.Fatal(err)
	}
	cached := s.CachedKeys()
	if len(cached) != 2 {
		t.Fatalf("%d cached keys, want 2 (one sealing, one opening)", len(cached))
	}
	advance(2 * time.Minute)
	s.Expire() // the janitor's pass
	for i, k := range cached {
		if !bytes.Equal(k, make([]byte, 32)) {
			t.Fatalf("expired key %d not zeroed", i)
		}
	}
	if n := len(s.CachedKeys()); n != 0 {
		t.Fatalf("%d keys cached after expiry", n)
	}
	b, err := s.Seal(ctx, a, aad, []byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	if wrappedKey(b) == wrappedKey(blobs[3]) {
		t.Fatal("expired data key still sealing")
	}
	if _, err := s.Open(ctx, a, aad, blobs[0]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, k := range s.CachedKeys() {
		t.Fatalf("key %x left after Close", k)
	}
}

func TestSealerIsSafeForConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	v := vaulttest.Shared(t).Connect(t)
	s := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{SealKeyUses: 5})
	tenants := []tenancy.ID{newKeyedTenant(t, v), newKeyedTenant(t, v)}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			tn := tenants[i%2]
			for j := range 10 {
				aad := secrets.AAD("t", "c", string(rune('a'+j)))
				b, err := s.Seal(ctx, tn, aad, []byte{byte(i), byte(j)})
				if err == nil {
					var got []byte
					got, err = s.Open(ctx, tn, aad, b)
					if err == nil && !bytes.Equal(got, []byte{byte(i), byte(j)}) {
						err = problem.Errorf(problem.Internal, "opened %v", got)
					}
				}
				if err != nil && problem.CodeOf(err) != problem.Unavailable { // evicted mid-use: retryable
					errs <- err
					return
				}
				if j%3 == 0 {
					s.Forget(tn)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestShredMakesSealedDataUnopenable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.Shared(t)
	v := srv.Connect(t)
	a, b := newKeyedTenant(t, v), newKeyedTenant(t, v)
	s := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	aad := secrets.AAD("signing_keys", "private_key", "k1")
	backupA, err := s.Seal(ctx, a, aad, []byte("tenant a private key"))
	if err != nil {
		t.Fatal(err)
	}
	backupB, _ := s.Seal(ctx, b, aad, []byte("tenant b private key"))
	ref, err := v.Put(ctx, a, "smtp#password", "a-smtp-password")
	if err != nil {
		t.Fatal(err)
	}

	for range 2 { // shredding twice is harmless
		if err := v.Shred(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of the sealed value taken before (a backup) opens nowhere,
	// not even on an instance that never cached its key.
	fresh := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	if got, err := fresh.Open(ctx, a, aad, backupA); err == nil || problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("Open after shred = %q, %v; want NotFound", got, err)
	}
	if _, err := v.Get(ctx, a, ref); problem.CodeOf(err) != problem.NotFound {
		t.Fatalf("KV secret after shred: %v, want NotFound", err)
	}
	keys, err := srv.API().Logical().List("transit/keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.Data["keys"].([]any) {
		if k == secrets.KeyName(a, 1) {
			t.Fatal("transit key survived the shred")
		}
	}
	// The other tenant is untouched.
	if got, err := fresh.Open(ctx, b, aad, backupB); err != nil || string(got) != "tenant b private key" {
		t.Fatalf("other tenant after shred: %q, %v", got, err)
	}
}

func TestTenantKeysAreNotDeletableOutsideShred(t *testing.T) {
	t.Parallel()
	srv := vaulttest.Shared(t)
	v := srv.Connect(t)
	a := newKeyedTenant(t, v)
	if _, err := srv.API().Logical().Delete("transit/keys/" + secrets.KeyName(a, 1)); err == nil {
		t.Fatal("deleting a tenant key without the offboarding path succeeded")
	}
	k, err := srv.API().Logical().Read("transit/keys/" + secrets.KeyName(a, 1))
	if err != nil {
		t.Fatal(err)
	}
	if k.Data["type"] != "aes256-gcm96" || k.Data["exportable"] != false || k.Data["allow_plaintext_backup"] != false {
		t.Fatalf("key settings: %v", k.Data)
	}
}

func TestVaultOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.Start(t) // this test breaks its Vault
	v := srv.Connect(t)
	a := newKeyedTenant(t, v)
	aad := secrets.AAD("t", "c", "r")
	writer := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{})
	cachedBlob, err := writer.Seal(ctx, a, aad, []byte("cached"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Open(ctx, a, aad, cachedBlob); err != nil { // caches the key
		t.Fatal(err)
	}
	// Sealed by another instance: this Sealer has never seen its key.
	uncachedBlob, err := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{}).Seal(ctx, a, aad, []byte("uncached"))
	if err != nil {
		t.Fatal(err)
	}

	outages := map[string]struct{ start, end func(testing.TB) }{
		"stopped": {srv.Stop, srv.Restart},
		"sealed":  {srv.Seal, srv.Unseal},
	}
	for _, name := range []string{"stopped", "sealed"} {
		o := outages[name]
		o.start(t)
		if err := v.Check(ctx); problem.CodeOf(err) != problem.Unavailable {
			t.Fatalf("%s: Check = %v, want Unavailable", name, err)
		}
		if got, err := writer.Open(ctx, a, aad, cachedBlob); err != nil || string(got) != "cached" {
			t.Fatalf("%s: open with a cached key = %q, %v", name, got, err)
		}
		if _, err := writer.Seal(ctx, a, aad, []byte("new")); problem.Status(problem.CodeOf(err)) != 503 {
			t.Fatalf("%s: Seal = %v, want 503", name, err)
		}
		if _, err := writer.Open(ctx, a, aad, uncachedBlob); problem.Status(problem.CodeOf(err)) != 503 {
			t.Fatalf("%s: uncached Open = %v, want 503", name, err)
		}
		if _, err := v.Put(ctx, a, "x", "y"); problem.Status(problem.CodeOf(err)) != 503 {
			t.Fatalf("%s: Put = %v, want 503", name, err)
		}

		o.end(t)
		if err := v.Check(ctx); err != nil {
			t.Fatalf("%s: Check after recovery = %v", name, err)
		}
		if got, err := writer.Open(ctx, a, aad, uncachedBlob); err != nil || string(got) != "uncached" {
			t.Fatalf("%s: open after recovery = %q, %v", name, got, err)
		}
		writer.Forget(a) // the next round needs an uncached blob again
		if _, err := writer.Seal(ctx, a, aad, []byte("new")); err != nil {
			t.Fatalf("%s: Seal after recovery: %v", name, err)
		}
		if _, err := writer.Open(ctx, a, aad, cachedBlob); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVaultRefusingTheServerIsUnavailable: when Vault refuses the
// server's own token (a policy without decrypt, an expired or revoked
// token), opening a value is the dependency's failure, a 503, not the
// caller's bad input.
func TestVaultRefusingTheServerIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := vaulttest.Shared(t)
	v := srv.Connect(t)
	a := newKeyedTenant(t, v)
	aad := secrets.AAD("signing_keys", "private_key", "kid-refused")
	sealed, err := secrets.NewSealer(v, firstGeneration, secrets.SealerOptions{}).Seal(ctx, a, aad, []byte("value"))
	if err != nil {
		t.Fatal(err)
	}
	// A token that may encrypt but not decrypt.
	if err := srv.API().Sys().PutPolicy("seal-only", `path "transit/datakey/*" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	tok, err := srv.API().Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"seal-only"}, NoDefaultPolicy: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := srv.Config()
	cfg.Token = tok.Auth.ClientToken
	refused, err := secrets.Connect(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(refused.Close)
	_, err = secrets.NewSealer(refused, firstGeneration, secrets.SealerOptions{}).Open(ctx, a, aad, sealed)
	if problem.CodeOf(err) != problem.Unavailable {
		t.Fatalf("Open with a token Vault refuses: %v (%s), want Unavailable", err, problem.CodeOf(err))
	}
}
