package secrets_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/secrets"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// keyEnv is a Gatehouse with a sealed column: a primary database with a
// table app.probe (tenant-scoped like every app table) whose
// secret_sealed column holds sealed values.
type keyEnv struct {
	vault  *secrets.Vault
	admin  *pgxpool.Pool
	reg    *tenancy.Registry
	data   *tenancy.DB
	gens   secrets.Generations
	sealer *secrets.Sealer
}

func newKeyEnv(t *testing.T) *keyEnv {
	t.Helper()
	db := pgtest.NewPrimary(t)
	e := &keyEnv{vault: vaulttest.Shared(t).Connect(t), admin: pgtest.Pool(t, db.AdminURL, 4)}
	db.Cluster.Exec(t, db.Name, `
		create table app.probe (
			tenant_id     uuid not null,
			id            int  not null,
			secret_sealed bytea,
			primary key (tenant_id, id)
		);
		alter table app.probe enable row level security;
		alter table app.probe force row level security;
		create policy tenant_isolation on app.probe
			using (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid)
			with check (tenant_id = nullif(current_setting('gatehouse.tenant_id', true), '')::uuid);
		grant select, insert, update, delete on app.probe to gatehouse_app;`)
	e.reg = tenancy.NewRegistry(e.admin, db.AdminURL, "localhost", e.vault, &tenancy.Migrator{})
	silos := tenancy.NewSiloPools(e.vault, tenancy.SiloPoolOptions{})
	t.Cleanup(silos.Close)
	e.data = tenancy.NewDB(pgtest.Pool(t, db.AppURL, 4), silos)
	e.gens = secrets.ControlPlane(e.admin)
	e.sealer = secrets.NewSealer(e.vault, e.gens, secrets.SealerOptions{SealKeyTTL: 300 * time.Millisecond})
	return e
}

func (e *keyEnv) tenant(t *testing.T, slug string) *tenancy.Tenant {
	t.Helper()
	tn, err := e.reg.Create(context.Background(), tenancy.CreateParams{Slug: slug, Name: slug})
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

func probeAAD(id int) []byte { return secrets.AAD("probe", "secret_sealed", strconv.Itoa(id)) }

// fill seals n values for tn into app.probe.
func (e *keyEnv) fill(t *testing.T, tn *tenancy.Tenant, n int) {
	t.Helper()
	ctx := context.Background()
	err := e.data.RawTx(ctx, tn, func(tx queries.DBTX) error {
		for i := range n {
			b, err := e.sealer.Seal(ctx, tn.ID, probeAAD(i), []byte(fmt.Sprintf("%s secret %d", tn.Slug, i)))
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "insert into app.probe values ($1, $2, $3)", tn.ID.UUID(), i, b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// blobs returns tn's sealed values by id.
func (e *keyEnv) blobs(t *testing.T, tn *tenancy.Tenant) map[int][]byte {
	t.Helper()
	rows, err := e.admin.Query(context.Background(), "select id, secret_sealed from app.probe where tenant_id = $1", tn.ID.UUID())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int][]byte{}
	for rows.Next() {
		var id int
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		out[id] = b
	}
	return out
}

// stamp returns a blob's key generation and version.
func stamp(b []byte) (int, int) {
	return int(b[1])<<8 | int(b[2]), int(b[3])<<24 | int(b[4])<<16 | int(b[5])<<8 | int(b[6])
}

// payload is what rotation must never touch: nonce, ciphertext and tag.
func payload(b []byte) []byte { return b[9+len(wrappedKey(b)):] }

// checkAllOpen opens every value of tn with an instance that has no cached
// keys, so each goes through Vault.
func (e *keyEnv) checkAllOpen(t *testing.T, tn *tenancy.Tenant, blobs map[int][]byte) {
	t.Helper()
	fresh := secrets.NewSealer(e.vault, e.gens, secrets.SealerOptions{})
	for id, b := range blobs {
		got, err := fresh.Open(context.Background(), tn.ID, probeAAD(id), b)
		if err != nil || string(got) != fmt.Sprintf("%s secret %d", tn.Slug, id) {
			t.Fatalf("%s row %d: %q, %v", tn.Slug, id, got, err)
		}
	}
}

func (e *keyEnv) keyInfo(t *testing.T, name string) (latest, minDecryption string) {
	t.Helper()
	s, err := vaulttest.Shared(t).API().Logical().Read("transit/keys/" + name)
	if err != nil || s == nil {
		t.Fatalf("read key %s: %v", name, err)
	}
	return fmt.Sprint(s.Data["latest_version"]), fmt.Sprint(s.Data["min_decryption_version"])
}

func TestRotateRewrapsDataKeysWithoutTouchingData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newKeyEnv(t)
	a, b := e.tenant(t, "rot-a"), e.tenant(t, "rot-b")
	e.fill(t, a, 230)
	e.fill(t, b, 5)
	before, beforeB := e.blobs(t, a), e.blobs(t, b)

	rot := secrets.NewRotator(e.vault, e.data, e.gens, 300*time.Millisecond)
	rot.SetBatch(100)
	var phases []string
	err := rot.Rotate(ctx, a, func(p secrets.Progress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(phases, ","); got != "rotated,rewrap,waiting,final pass,done" && got != "rotated,rewrap,final pass,done" {
		t.Fatalf("phases %s", got)
	}
	after := e.blobs(t, a)
	for id, blob := range after {
		if g, v := stamp(blob); g != 1 || v != 2 {
			t.Fatalf("row %d stamped generation %d version %d, want 1/2", id, g, v)
		}
		if !bytes.Equal(payload(blob), payload(before[id])) {
			t.Fatalf("row %d: rotation touched the encrypted data", id)
		}
	}
	e.checkAllOpen(t, a, after)
	if latest, min := e.keyInfo(t, secrets.KeyName(a.ID, 1)); latest != "2" || min != "2" {
		t.Fatalf("key after rotation: latest %s, min decryption %s; want 2, 2", latest, min)
	}
	// Values as they were before the rotation (a backup) no longer open:
	// the old key version is retired.
	fresh := secrets.NewSealer(e.vault, e.gens, secrets.SealerOptions{})
	if _, err := fresh.Open(ctx, a.ID, probeAAD(0), before[0]); err == nil {
		t.Fatal("a value wrapped under the retired version still opens")
	}
	// The other tenant is untouched.
	for id, blob := range e.blobs(t, b) {
		if !bytes.Equal(blob, beforeB[id]) {
			t.Fatalf("tenant b's row %d changed", id)
		}
	}
	if latest, _ := e.keyInfo(t, secrets.KeyName(b.ID, 1)); latest != "1" {
		t.Fatalf("tenant b's key rotated too (latest %s)", latest)
	}
}

func TestInterruptedRotationResumes(t *testing.T) {
	t.Parallel()
	e := newKeyEnv(t)
	a := e.tenant(t, "resume-a")
	e.fill(t, a, 120)
	rot := secrets.NewRotator(e.vault, e.data, e.gens, 0)
	rot.SetBatch(50)
	ctx, cancel := context.WithCancel(context.Background())
	err := rot.Rotate(ctx, a, func(p secrets.Progress) {
		if p.Phase == "rewrap" {
			cancel() // the operator's Ctrl-C after the first batch
		}
	})
	if err == nil {
		t.Fatal("interrupted rotation reported success")
	}
	if latest, min := e.keyInfo(t, secrets.KeyName(a.ID, 1)); latest != "2" || min != "1" {
		t.Fatalf("after interruption: latest %s, min decryption %s; want 2, 1", latest, min)
	}
	e.checkAllOpen(t, a, e.blobs(t, a)) // half re-wrapped, all readable

	if err := rot.Rotate(context.Background(), a, nil); err != nil {
		t.Fatal(err)
	}
	// Resumed, not rotated again.
	if latest, min := e.keyInfo(t, secrets.KeyName(a.ID, 1)); latest != "2" || min != "2" {
		t.Fatalf("after resume: latest %s, min decryption %s; want 2, 2", latest, min)
	}
	for id, b := range e.blobs(t, a) {
		if _, v := stamp(b); v != 2 {
			t.Fatalf("row %d still at version %d", id, v)
		}
	}
}

func TestImportedKeySealsTheTenantsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newKeyEnv(t)
	a := e.tenant(t, "byok-a")
	e.fill(t, a, 40)
	own := make([]byte, 32)
	rand.Read(own)
	// Left over from an import that died before the control plane
	// recorded it: the next import replaces it.
	if _, err := vaulttest.Shared(t).API().Logical().Write("transit/keys/"+secrets.KeyName(a.ID, 2),
		map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}

	rot := secrets.NewRotator(e.vault, e.data, e.gens, 300*time.Millisecond)
	if err := rot.ImportKey(ctx, a, e.admin, own, nil); err != nil {
		t.Fatal(err)
	}
	if gen, err := e.gens.KeyGeneration(ctx, a.ID); err != nil || gen != 2 {
		t.Fatalf("key generation %d, %v; want 2", gen, err)
	}
	e.sealer.Forget(a.ID) // as the resolver's change notification does
	newBlob, err := e.sealer.Seal(ctx, a.ID, probeAAD(999), []byte("after import"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := e.blobs(t, a)
	blobs[999] = newBlob
	for id, b := range blobs {
		if g, _ := stamp(b); g != 2 {
			t.Fatalf("row %d still under generation %d", id, g)
		}
		// Proof that the tenant's own key is what protects the data: with
		// it, and nothing from Vault, the data key unwraps and the value
		// opens.
		want := fmt.Sprintf("%s secret %d", a.Slug, id)
		if id == 999 {
			want = "after import"
		}
		if got := openWithOwnKey(t, own, a.ID, probeAAD(id), b); got != want {
			t.Fatalf("row %d opened with the tenant's key: %q, want %q", id, got, want)
		}
	}
	e.checkAllOpen(t, a, e.blobs(t, a))
	keys, err := vaulttest.Shared(t).API().Logical().List("transit/keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.Data["keys"].([]any) {
		if k == secrets.KeyName(a.ID, 1) {
			t.Fatal("the replaced generation's key was not destroyed")
		}
	}
	// Rotation works on top of an imported key.
	if err := rot.Rotate(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	e.checkAllOpen(t, a, e.blobs(t, a))
}

func TestImportKeyRefusesBadMaterial(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "short", strings.Repeat("a", 31), base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		if _, err := secrets.ParseKeyMaterial([]byte(in)); problem.CodeOf(err) != problem.Invalid {
			t.Errorf("ParseKeyMaterial(%q) = %v, want Invalid", in, err)
		}
	}
	for _, same := range [][]byte{make([]byte, 32), bytes.Repeat([]byte{0xAB}, 32)} {
		if _, err := secrets.ParseKeyMaterial(same); problem.CodeOf(err) != problem.Invalid {
			t.Errorf("ParseKeyMaterial(%x) = %v, want Invalid", same, err)
		}
	}
	k := make([]byte, 32)
	k[0] = 7
	for _, in := range [][]byte{bytes.Clone(k), []byte(base64.StdEncoding.EncodeToString(k) + "\n"), []byte(fmt.Sprintf("%x\n", k))} {
		got, err := secrets.ParseKeyMaterial(in)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("ParseKeyMaterial(%q) = %x, %v", in, got, err)
		}
		clear(in) // the caller wipes its input; the key must survive
		if !bytes.Equal(got, k) {
			t.Errorf("ParseKeyMaterial(%q) returned its input, not a copy", in)
		}
	}
}

// openWithOwnKey opens a sealed blob locally with the tenant's imported
// key: Transit's ciphertext of the data key is vault:v1:base64(nonce ||
// AES-GCM ciphertext and tag).
func openWithOwnKey(t *testing.T, key []byte, tenant tenancy.ID, aad, b []byte) string {
	t.Helper()
	wrapped := wrappedKey(b)
	raw, err := base64.StdEncoding.DecodeString(wrapped[strings.LastIndex(wrapped, ":")+1:])
	if err != nil {
		t.Fatal(err)
	}
	gcm := func(k []byte) cipher.AEAD {
		block, err := aes.NewCipher(k)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := cipher.NewGCM(block)
		return g
	}
	dataKey, err := gcm(key).Open(nil, raw[:12], raw[12:], nil)
	if err != nil {
		t.Fatalf("the tenant's key does not unwrap the data key: %v", err)
	}
	n := 9 + len(wrapped)
	u := tenant.UUID()
	full := append(append([]byte{1}, u[:]...), aad...)
	plain, err := gcm(dataKey).Open(nil, b[n:n+12], b[n+12:], full)
	if err != nil {
		t.Fatalf("the data key does not open the value: %v", err)
	}
	return string(plain)
}
