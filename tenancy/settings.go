package tenancy

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
)

// Settings changes a tenant's settings: nil fields stay as they are; an
// empty string clears a mail setting back to the server's default.
type Settings struct {
	Signup               *Signup
	RequireVerifiedEmail *bool
	AccessTokenTTL       *time.Duration
	MailFromAddress      *string
	MailFromName         *string
	MailReplyTo          *string
	LinkBaseURL          *string
}

// UpdateSettings changes tenant slug's settings and returns the tenant as
// it now is. Every instance sees the change at once (the control plane
// announces it). Returns NotFound for an unknown slug, Invalid naming the
// first bad setting.
func (r *Registry) UpdateSettings(ctx context.Context, slug string, s Settings) (*Tenant, error) {
	t, err := r.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	p := queries.UpdateTenantSettingsParams{ID: t.ID.UUID(), RequireVerifiedEmail: s.RequireVerifiedEmail}
	if s.Signup != nil {
		if *s.Signup != SignupOpen && *s.Signup != SignupInvite {
			return nil, problem.InvalidField("signup", "must be open or invite")
		}
		p.Signup = (*string)(s.Signup)
	}
	if s.AccessTokenTTL != nil {
		ttl := *s.AccessTokenTTL
		if ttl < time.Minute || ttl > 24*time.Hour || ttl%time.Second != 0 {
			return nil, problem.InvalidField("access_token_ttl", "must be whole seconds between 1m and 24h")
		}
		secs := int32(ttl / time.Second)
		p.AccessTokenTtl = &secs
	}
	checks := []struct {
		field string
		v     *string
		dst   **string
		check func(string) error
	}{
		{"mail_from_address", s.MailFromAddress, &p.MailFromAddress, checkMailAddress},
		{"mail_reply_to", s.MailReplyTo, &p.MailReplyTo, checkMailAddress},
		{"mail_from_name", s.MailFromName, &p.MailFromName, checkMailName},
		{"link_base_url", s.LinkBaseURL, &p.LinkBaseUrl, checkLinkBase},
	}
	for _, c := range checks {
		if c.v == nil {
			continue
		}
		if *c.v != "" {
			if err := c.check(*c.v); err != nil {
				return nil, problem.InvalidField(c.field, err.Error())
			}
		}
		*c.dst = c.v
	}
	row, err := queries.New(r.admin).UpdateTenantSettings(ctx, p)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, problem.Errorf(problem.NotFound, "no tenant %q", slug)
	}
	if err != nil {
		return nil, fmt.Errorf("update tenant %s: %w", slug, err)
	}
	return tenantFromRow(row), nil
}

func checkMailAddress(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || len(s) > 254 || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
		return errors.New("must be a plain email address such as no-reply@example.com")
	}
	return nil
}

func checkMailName(s string) error {
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > 100 || strings.ContainsAny(s, "\r\n") {
		return errors.New("must be one line of at most 100 characters")
	}
	return nil
}

func checkLinkBase(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || len(s) > 500 || strings.ContainsAny(s, " \t\r\n") {
		return errors.New("must be an http(s) URL without credentials, query or fragment")
	}
	// Links carry tokens: plain http only to this machine.
	if h := u.Hostname(); u.Scheme == "http" && h != "localhost" && !strings.HasSuffix(h, ".localhost") && h != "127.0.0.1" && h != "::1" {
		return errors.New("must be https (http only for localhost)")
	}
	return nil
}
