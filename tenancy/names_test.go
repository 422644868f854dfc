package tenancy_test

import (
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestValidateSlug(t *testing.T) {
	t.Parallel()
	tests := []struct {
		slug   string
		reason string // "" means valid
	}{
		{"acme", ""},
		{"a1b", ""},
		{"big-corp-2", ""},
		{strings.Repeat("a", 63), ""},
		{"ab", "at least 3"},
		{strings.Repeat("a", 64), "at most 63"},
		{"-acme", "start or end with a hyphen"},
		{"acme-", "start or end with a hyphen"},
		{"xn--acme", "two hyphens"},
		{"Acme", "lowercase"},
		{"ac_me", "lowercase"},
		{"acmé", "lowercase"},
		{"ac.me", "lowercase"},
		{"www", "reserved"},
		{"admin", "reserved"},
		{"api", "reserved"},
		{"mail", "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.slug, func(t *testing.T) {
			err := tenancy.ValidateSlug(tt.slug)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("ValidateSlug(%q) = %v, want valid", tt.slug, err)
				}
				return
			}
			if problem.CodeOf(err) != problem.Invalid || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("ValidateSlug(%q) = %v, want Invalid mentioning %q", tt.slug, err, tt.reason)
			}
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"acme.localhost", "acme.localhost"},
		{"ACME.Localhost:8080", "acme.localhost"},
		{"login.acme.com.", "login.acme.com"},
		{"", ""},
		{"127.0.0.1", ""},
		{"[::1]:80", ""},
		{"acme..localhost", ""},
		{"ac me.localhost", ""},
		{"acme.localhost/path", ""},
		{"-acme.localhost", ""},
		{"acme%00.localhost", ""},
		{strings.Repeat("a.", 130) + "com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := tenancy.NormalizeHost(tt.in)
			if tt.want == "" {
				if err == nil || problem.CodeOf(err) != problem.Invalid {
					t.Fatalf("NormalizeHost(%q) = %q, %v; want an Invalid error", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestValidateDomain(t *testing.T) {
	t.Parallel()
	for in, ok := range map[string]bool{
		"login.acme.com":      true,
		"Login.Acme.COM":      true,
		"acme":                false,
		"login.acme.com:443":  false,
		"https://acme.com":    false,
		"10.0.0.1":            false,
		"login..acme.com":     false,
		"login.acme.com/path": false,
	} {
		_, err := tenancy.ValidateDomain(in)
		if (err == nil) != ok {
			t.Errorf("ValidateDomain(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}
