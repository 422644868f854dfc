package secrets

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tink-crypto/tink-go/v2/kwp/subtle"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// ParseKeyMaterial reads a tenant-supplied AES-256 key: 32 raw bytes, or
// their base64 or hex text (as openssl rand -base64 32 or -hex 32 print
// them). Returns Invalid otherwise; the message never quotes the input.
// The result is a copy: the caller may wipe b.
func ParseKeyMaterial(b []byte) ([]byte, error) {
	var k []byte
	text := strings.TrimSpace(string(b))
	if d, err := base64.StdEncoding.DecodeString(text); err == nil && len(d) == 32 {
		k = d
	} else if d, err := hex.DecodeString(text); err == nil && len(d) == 32 {
		k = d
	} else if len(b) == 32 {
		k = bytes.Clone(b)
	} else {
		return nil, problem.Errorf(problem.Invalid, "the key must be 32 bytes (AES-256): raw, base64 or hex")
	}
	if !hasEntropy(k) {
		clear(k)
		return nil, problem.Errorf(problem.Invalid, "the key is not random (all its bytes are equal)")
	}
	return k, nil
}

// hasEntropy refuses the obvious non-keys: every byte the same (all
// zeroes, say). It is no randomness test, only a guard against mistakes.
func hasEntropy(k []byte) bool {
	for _, c := range k[1:] {
		if c != k[0] {
			return true
		}
	}
	return false
}

// ImportKey makes key (32 bytes, the tenant's own AES-256 key) tenant t's
// next key generation, through Vault's BYOK flow: key is wrapped with an
// ephemeral AES key (KWP, RFC 5649), which is wrapped with Transit's RSA
// wrapping key (OAEP, SHA-256), so it crosses the wire only encrypted for
// Vault. The control plane (control, as an administrator) then records the
// new generation, new seals use it, and every stored data key moves to it
// as in Rotate; the replaced generation's key is destroyed at the end.
// Returns Invalid for bad key material, Conflict if the tenant's key
// changed meanwhile.
func (r *Rotator) ImportKey(ctx context.Context, t *tenancy.Tenant, control queries.DBTX, key []byte, progress func(Progress)) error {
	if progress == nil {
		progress = func(Progress) {}
	}
	if len(key) != 32 {
		return problem.Errorf(problem.Invalid, "the key must be 32 bytes (AES-256)")
	}
	if !hasEntropy(key) {
		return problem.Errorf(problem.Invalid, "the key is not random (all its bytes are equal)")
	}
	gen, err := r.gens.KeyGeneration(ctx, t.ID)
	if err != nil {
		return err
	}
	next := gen + 1
	name := KeyName(t.ID, next)
	// A key of the next generation that the control plane does not record
	// is left from an import that failed half-way: nothing was ever sealed
	// under it, so it goes.
	if _, err := r.v.keyInfo(ctx, name); err == nil {
		if err := r.v.deleteKey(ctx, name); err != nil {
			return err
		}
	} else if problem.CodeOf(err) != problem.NotFound {
		return err
	}
	if err := r.v.importKey(ctx, name, key); err != nil {
		return err
	}
	n, err := queries.New(control).SetTenantKeyGeneration(ctx, queries.SetTenantKeyGenerationParams{
		ID: t.ID.UUID(), KeyGeneration: int16(next), Previous: int16(gen),
	})
	if err == nil && n == 0 {
		err = problem.Errorf(problem.Conflict, "tenant %s changed keys meanwhile; run the import again", t.Slug)
	}
	if err != nil {
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = r.v.deleteKey(cleanup, name)
		return fmt.Errorf("record key generation: %w", err)
	}
	// Servers may have fetched a data key of the old generation until
	// now, not only until the import.
	progress(Progress{Tenant: t.ID, Phase: "imported"})
	return r.finish(ctx, t, next, 1, r.now(), progress)
}

// importKey imports key as a new Transit key called name.
func (v *Vault) importKey(ctx context.Context, name string, key []byte) error {
	s, err := v.c.Logical().ReadWithContext(ctx, v.transit+"/wrapping_key")
	if err != nil {
		return v.fail("read wrapping key", err)
	}
	if s == nil {
		return errors.New("read wrapping key: empty answer")
	}
	pemText, _ := s.Data["public_key"].(string)
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return errors.New("wrapping key is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("wrapping key: %w", err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return errors.New("wrapping key is not RSA")
	}
	ephemeral := make([]byte, 32)
	defer clear(ephemeral)
	if _, err := rand.Read(ephemeral); err != nil {
		return err
	}
	wrappedEphemeral, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, rsaPub, ephemeral, nil)
	if err != nil {
		return fmt.Errorf("wrap ephemeral key: %w", err)
	}
	kwp, err := subtle.NewKWP(ephemeral)
	if err != nil {
		return fmt.Errorf("wrap key: %w", err)
	}
	wrappedKey, err := kwp.Wrap(key)
	if err != nil {
		return fmt.Errorf("wrap key: %w", err)
	}
	_, err = v.c.Logical().WriteWithContext(ctx, v.transit+"/keys/"+name+"/import", map[string]any{
		"ciphertext":    base64.StdEncoding.EncodeToString(append(wrappedEphemeral, wrappedKey...)),
		"hash_function": "SHA256",
		"type":          "aes256-gcm96",
		"exportable":    false,
		// Later rotations make Vault-generated versions on top of the
		// tenant's key, like for any other tenant.
		"allow_rotation": true,
	})
	if err != nil {
		return v.fail("import key "+name, err)
	}
	return nil
}
