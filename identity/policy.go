package identity

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/binary"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/gatehouse/gatehouse/problem"
)

// Password length limits, in characters (runes) after normalisation.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 128
)

// commonPasswords is the offline filter of known passwords built by
// tools/common-passwords.sh (see tools/commonpw for the format).
//
//go:embed common_passwords.bin
var commonPasswords []byte

// NormalizePassword returns password in Unicode NFKC form, so that the
// same password typed on two keyboards (composed or decomposed accents,
// full-width digits) hashes the same.
func NormalizePassword(password string) string { return norm.NFKC.String(password) }

// CheckPassword applies the password policy to a new password for the
// account with the given email, and returns it normalised (see
// NormalizePassword): 12 to 128 characters, not a known common or
// breached password, and not containing the email's name. Returns Invalid
// naming the rule that failed.
func CheckPassword(password, email string) (string, error) {
	if !utf8.ValidString(password) {
		return "", problem.InvalidField("password", "is not valid UTF-8 text")
	}
	pw := NormalizePassword(password)
	n := utf8.RuneCountInString(pw)
	switch {
	case strings.ContainsFunc(pw, unicode.IsControl):
		return "", problem.InvalidField("password", "must not contain control characters")
	case strings.TrimFunc(pw, unicode.IsSpace) == "":
		return "", problem.InvalidField("password", "must not be only spaces")
	case n < MinPasswordLen:
		return "", problem.InvalidField("password", "must be at least 12 characters")
	case n > MaxPasswordLen:
		return "", problem.InvalidField("password", "must be at most 128 characters")
	case IsCommonPassword(pw):
		return "", problem.InvalidField("password", "is too common: it appears in lists of breached passwords")
	}
	if name, _, _ := strings.Cut(strings.ToLower(email), "@"); len(name) >= 4 && strings.Contains(strings.ToLower(pw), name) {
		return "", problem.InvalidField("password", "must not contain your email address")
	}
	return pw, nil
}

// IsCommonPassword reports whether the (normalised) password is in the
// filter of known passwords, case-insensitively.
func IsCommonPassword(pw string) bool {
	const head, width = 9, 6 // "GHPW1" + uint32 count; 6-byte entries
	if len(commonPasswords) < head || string(commonPasswords[:5]) != "GHPW1" {
		panic("identity: common password filter missing or malformed") // a build defect, caught by tests
	}
	count := int(binary.BigEndian.Uint32(commonPasswords[5:head]))
	sum := sha256.Sum256([]byte(strings.ToLower(pw)))
	i := sort.Search(count, func(i int) bool {
		return bytes.Compare(commonPasswords[head+i*width:head+(i+1)*width], sum[:width]) >= 0
	})
	return i < count && bytes.Equal(commonPasswords[head+i*width:head+(i+1)*width], sum[:width])
}
