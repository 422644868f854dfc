package tenancy

import (
	"net"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/problem"
)

// reservedSlugs are refused as tenant slugs: they name the platform's own
// hosts, or would confuse users and mail systems.
var reservedSlugs = map[string]bool{
	"www": true, "api": true, "admin": true, "app": true, "mail": true,
	"smtp": true, "imap": true, "pop": true, "ftp": true, "auth": true,
	"login": true, "logout": true, "signup": true, "sso": true, "oauth": true,
	"oidc": true, "id": true, "account": true, "accounts": true, "console": true,
	"dashboard": true, "status": true, "help": true, "support": true,
	"docs": true, "blog": true, "static": true, "assets": true, "cdn": true,
	"operator": true, "root": true, "system": true, "internal": true,
	"localhost": true, "gatehouse": true, "test": true, "demo": true,
	"staging": true, "dev": true, "ns1": true, "ns2": true, "mx": true,
}

// ValidateSlug checks that s can name a tenant: a DNS label of 3 to 63
// lowercase letters, digits and hyphens, not starting or ending with a
// hyphen, and not reserved. Returns an Invalid *problem.Error saying which
// rule failed.
func ValidateSlug(s string) error {
	bad := func(reason string) error { return problem.InvalidField("slug", reason) }
	switch {
	case len(s) < 3:
		return bad("must be at least 3 characters")
	case len(s) > 63:
		return bad("must be at most 63 characters")
	case s[0] == '-' || s[len(s)-1] == '-':
		return bad("must not start or end with a hyphen")
	case strings.Contains(s, "--"):
		// Labels with "--" in positions 3-4 are IDNA A-labels (xn--);
		// refusing all double hyphens keeps slugs unambiguous.
		return bad("must not contain two hyphens in a row")
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return bad("may contain only lowercase letters a-z, digits and hyphens")
		}
	}
	if reservedSlugs[s] {
		return bad("is reserved")
	}
	return nil
}

// ValidateName checks a tenant's display name.
func ValidateName(s string) error {
	n := len([]rune(strings.TrimSpace(s)))
	switch {
	case n == 0:
		return problem.InvalidField("name", "must not be empty")
	case n > 200:
		return problem.InvalidField("name", "must be at most 200 characters")
	case !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl):
		// The name is shown in mail headers and pages.
		return problem.InvalidField("name", "must be one line of text, without control characters")
	}
	return nil
}

// NormalizeHost turns a Host header value into a lowercase domain name
// without port or trailing dot, or returns an Invalid error. It accepts only
// what can be a DNS name: an IP address or anything with odd characters is
// refused, never passed on to a lookup.
func NormalizeHost(h string) (string, error) {
	h = strings.TrimSpace(h)
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" {
		return "", problem.InvalidField("host", "missing")
	}
	if len(h) > 253 {
		return "", problem.InvalidField("host", "too long")
	}
	if net.ParseIP(h) != nil {
		return "", problem.InvalidField("host", "must be a domain name, not an IP address")
	}
	for label := range strings.SplitSeq(h, ".") {
		if !validLabel(label) {
			return "", problem.InvalidField("host", "is not a valid domain name")
		}
	}
	return h, nil
}

// ValidateDomain checks a custom domain before it is registered: a valid
// name of at least two labels.
func ValidateDomain(d string) (string, error) {
	h, err := NormalizeHost(d)
	if err != nil || strings.ContainsAny(d, ":/ ") {
		return "", problem.InvalidField("domain", "must be a domain name such as login.example.com, without port")
	}
	if !strings.Contains(h, ".") {
		return "", problem.InvalidField("domain", "must have at least two labels")
	}
	return h, nil
}

func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
