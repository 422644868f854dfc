package rebac

import (
	"regexp"
	"strings"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Separator joins a tenant's id and an object's local id into the id
// SpiceDB stores: "<tenant id>|<local id>". Local ids may not contain it.
const Separator = "|"

// localIDPattern is what a local id may be: SpiceDB's object id alphabet
// without the separator, at most 200 characters (the stored id adds the
// tenant's 37).
var localIDPattern = regexp.MustCompile(`^[a-zA-Z0-9/_\-=+]{1,200}$`)

// ObjectID returns the SpiceDB id of tenant t's object local. field names
// the input the id came from, for the error. Returns Invalid for an empty
// id, one with the separator, or characters SpiceDB does not take.
func ObjectID(t tenancy.ID, field, local string) (string, error) {
	if strings.Contains(local, Separator) {
		return "", problem.InvalidField(field, "must not contain "+Separator)
	}
	if !localIDPattern.MatchString(local) {
		return "", problem.InvalidField(field, "must be 1 to 200 of the characters a-z A-Z 0-9 / _ - = +")
	}
	return t.String() + Separator + local, nil
}

// LocalID returns the local part of a SpiceDB id of tenant t's object,
// and false for an id of another tenant (or none).
func LocalID(t tenancy.ID, id string) (string, bool) {
	local, ok := strings.CutPrefix(id, t.String()+Separator)
	return local, ok && local != ""
}
