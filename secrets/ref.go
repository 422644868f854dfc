package secrets

import (
	"strings"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Ref points at one value in Vault's KV store, such as
// vault:kv/tenants/<tenant id>/smtp#password. Postgres stores refs where a
// secret would otherwise sit.
type Ref struct {
	Mount string // the KV v2 mount, e.g. kv
	Path  string // the secret's path under the mount, e.g. tenants/<id>/smtp
	Key   string // the field of the secret, e.g. password
}

const refScheme = "vault:"

// ParseRef parses and validates a reference in its text form. Returns
// Invalid if s is not a well-formed reference.
func ParseRef(s string) (Ref, error) {
	rest, ok := strings.CutPrefix(s, refScheme)
	if !ok {
		return Ref{}, problem.Errorf(problem.Invalid, "secret reference must start with %q", refScheme)
	}
	loc, key, ok := strings.Cut(rest, "#")
	if !ok {
		return Ref{}, problem.Errorf(problem.Invalid, "secret reference needs a #key")
	}
	mount, path, ok := strings.Cut(loc, "/")
	if !ok {
		return Ref{}, problem.Errorf(problem.Invalid, "secret reference needs a mount and a path")
	}
	r := Ref{Mount: mount, Path: path, Key: key}
	return r, r.Validate()
}

// String formats r as vault:<mount>/<path>#<key>.
func (r Ref) String() string { return refScheme + r.Mount + "/" + r.Path + "#" + r.Key }

// Validate checks that every part of r is made of safe name characters, so
// that a reference can never climb out of its path ("..") or smuggle in
// another Vault endpoint. Returns Invalid otherwise.
func (r Ref) Validate() error {
	if !validName(r.Mount) {
		return problem.Errorf(problem.Invalid, "secret reference has a bad mount")
	}
	segs := strings.Split(r.Path, "/")
	for _, seg := range segs {
		if !validName(seg) {
			return problem.Errorf(problem.Invalid, "secret reference has a bad path")
		}
	}
	if !validName(r.Key) {
		return problem.Errorf(problem.Invalid, "secret reference has a bad key")
	}
	return nil
}

// Tenant returns the tenant whose path r lies under (tenants/<id>/...), if
// any.
func (r Ref) Tenant() (tenancy.ID, bool) {
	rest, ok := strings.CutPrefix(r.Path, tenantsPrefix)
	if !ok {
		return tenancy.ID{}, false
	}
	idText, _, ok := strings.Cut(rest, "/")
	if !ok {
		return tenancy.ID{}, false
	}
	id, err := tenancy.ParseID(idText)
	if err != nil || id.String() != idText {
		return tenancy.ID{}, false
	}
	return id, true
}

const tenantsPrefix = "tenants/"

// tenantPath is the KV folder holding every secret of tenant t.
func tenantPath(t tenancy.ID) string { return tenantsPrefix + t.String() }

// refFor builds the reference of secret name of tenant t in mount. name is
// "<path>#<key>" (e.g. smtp#password) or just "<path>", whose key is then
// "value".
func refFor(mount string, t tenancy.ID, name string) (Ref, error) {
	path, key, ok := strings.Cut(name, "#")
	if !ok {
		key = "value"
	}
	r := Ref{Mount: mount, Path: tenantPath(t) + "/" + path, Key: key}
	if err := r.Validate(); err != nil {
		return Ref{}, problem.Errorf(problem.Invalid, "secret name %q: %s", name, problem.MessageOf(err))
	}
	return r, nil
}

// validName admits 1-128 characters of [A-Za-z0-9._-], and neither "." nor
// "..".
func validName(s string) bool {
	if s == "" || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// owned checks that r lies under tenant t's own path in mount. A reference
// to another tenant's secret is refused even when it was found in t's own
// rows: rows are data, and data may have been tampered with.
func owned(mount string, t tenancy.ID, r Ref) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if owner, ok := r.Tenant(); !ok || owner != t || r.Mount != mount {
		return problem.Errorf(problem.Forbidden, "secret reference %s is outside the tenant's secrets", r)
	}
	return nil
}
