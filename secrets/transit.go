package secrets

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// KeyName is the name of tenant t's Transit key of generation gen. A tenant
// starts at generation 1 (tenant-<id>); bringing its own key (BYOK) starts
// a new generation, because Vault imports key material only into keys that
// were imported from the start.
func KeyName(t tenancy.ID, gen uint16) string {
	if gen <= 1 {
		return "tenant-" + t.String()
	}
	return "tenant-" + t.String() + "-g" + strconv.Itoa(int(gen))
}

// CreateTenantKey creates tenant t's first Transit key: AES-256-GCM, not
// exportable, no plaintext backup, and not deletable except through
// Shred. Creating a key that exists changes nothing.
func (v *Vault) CreateTenantKey(ctx context.Context, t tenancy.ID) error {
	_, err := v.c.Logical().WriteWithContext(ctx, v.transit+"/keys/"+KeyName(t, 1), map[string]any{
		"type": "aes256-gcm96", "exportable": false, "allow_plaintext_backup": false,
	})
	if err != nil {
		return v.fail("create tenant key", err)
	}
	return nil
}

// Shred destroys every secret of tenant t: each generation of its Transit
// key, then its KV folder. Data sealed under those keys, including any
// backup of it, can never be opened again. Shredding twice is harmless.
func (v *Vault) Shred(ctx context.Context, t tenancy.ID) error {
	keys, err := v.tenantKeys(ctx, t)
	if err != nil {
		return err
	}
	// Keys are created undeletable; offboarding (and retiring a replaced
	// generation) are the only paths that lift that guard.
	for _, name := range keys {
		if err := v.deleteKey(ctx, name); err != nil {
			return err
		}
	}
	return v.deleteTenantTree(ctx, t)
}

// tenantKeys lists the names of tenant t's Transit keys (every generation).
func (v *Vault) tenantKeys(ctx context.Context, t tenancy.ID) ([]string, error) {
	s, err := v.c.Logical().ListWithContext(ctx, v.transit+"/keys")
	if err != nil {
		return nil, v.fail("list transit keys", err)
	}
	if s == nil {
		return nil, nil
	}
	base := KeyName(t, 1)
	var names []string
	for _, k := range s.Data["keys"].([]any) {
		name, _ := k.(string)
		if name == base || strings.HasPrefix(name, base+"-g") {
			names = append(names, name)
		}
	}
	return names, nil
}

// KeyInfo is what Transit says of a key's versions.
type KeyInfo struct {
	Latest        int // newest version: what new data keys are wrapped with
	MinDecryption int // oldest version Vault still decrypts with
}

// keyInfo reads key name's versions. Returns NotFound if it does not exist.
func (v *Vault) keyInfo(ctx context.Context, name string) (KeyInfo, error) {
	s, err := v.c.Logical().ReadWithContext(ctx, v.transit+"/keys/"+name)
	if err != nil {
		return KeyInfo{}, v.fail("read key "+name, err)
	}
	if s == nil {
		return KeyInfo{}, problem.Errorf(problem.NotFound, "key %s does not exist", name)
	}
	latest, err1 := s.Data["latest_version"].(json.Number).Int64()
	minDec, err2 := s.Data["min_decryption_version"].(json.Number).Int64()
	if err := errors.Join(err1, err2); err != nil {
		return KeyInfo{}, fmt.Errorf("read key %s: %w", name, err)
	}
	return KeyInfo{Latest: int(latest), MinDecryption: int(minDec)}, nil
}

// newDataKey asks Transit for a fresh 256-bit data key under key name,
// returning it in plaintext and wrapped, with the wrapping key's version.
func (v *Vault) newDataKey(ctx context.Context, name string) (plain []byte, wrapped string, version int, err error) {
	s, err := v.c.Logical().WriteWithContext(ctx, v.transit+"/datakey/plaintext/"+name, map[string]any{"bits": 256})
	if err != nil {
		return nil, "", 0, v.fail("new data key", err)
	}
	if s == nil {
		return nil, "", 0, errors.New("new data key: empty answer")
	}
	wrapped, _ = s.Data["ciphertext"].(string)
	p64, _ := s.Data["plaintext"].(string)
	plain, err = base64.StdEncoding.DecodeString(p64)
	if err != nil || len(plain) != 32 {
		clear(plain)
		return nil, "", 0, errors.New("new data key: malformed answer")
	}
	n, _ := s.Data["key_version"].(json.Number).Int64()
	return plain, wrapped, int(n), nil
}

// unwrap asks Transit to decrypt a wrapped data key under key name.
func (v *Vault) unwrap(ctx context.Context, name, wrapped string) ([]byte, error) {
	s, err := v.c.Logical().WriteWithContext(ctx, v.transit+"/decrypt/"+name, map[string]any{"ciphertext": wrapped})
	if err != nil {
		return nil, v.fail("unwrap data key", err)
	}
	if s == nil {
		return nil, errors.New("unwrap data key: empty answer")
	}
	p64, _ := s.Data["plaintext"].(string)
	plain, err := base64.StdEncoding.DecodeString(p64)
	if err != nil || len(plain) != 32 {
		clear(plain)
		return nil, errors.New("unwrap data key: malformed answer")
	}
	return plain, nil
}
