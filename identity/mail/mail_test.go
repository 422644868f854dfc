package mail_test

import (
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/identity/mail"
)

func TestParseSMTPURL(t *testing.T) {
	for _, c := range []struct {
		url, password string
		want          mail.SMTPConfig
		err           string
	}{
		{url: "smtp://relay@mail.example.com", password: "pw", want: mail.SMTPConfig{Host: "mail.example.com", Port: 587, Username: "relay", Password: "pw", TLS: "starttls"}},
		{url: "smtps://mail.example.com", want: mail.SMTPConfig{Host: "mail.example.com", Port: 465, TLS: "tls"}},
		{url: "smtp://127.0.0.1:1025?tls=none", want: mail.SMTPConfig{Host: "127.0.0.1", Port: 1025, TLS: "none"}},
		{url: "smtp://localhost?tls=none", want: mail.SMTPConfig{Host: "localhost", Port: 25, TLS: "none"}},
		{url: "smtp://mail.example.com?tls=none", err: "allowed only to a loopback host"},
		{url: "smtp://user:secret@mail.example.com", err: "must not carry a password"},
		{url: "smtp://mail.example.com?tls=maybe", err: `tls="maybe"`},
		{url: "smtp://mail.example.com:99999", err: "not a port number"},
		{url: "http://mail.example.com", err: "must look like smtp://"},
		{url: "mail.example.com", err: "must look like smtp://"},
	} {
		got, err := mail.ParseSMTPURL(c.url, c.password)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one saying %q", c.url, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error shows the password: %v", c.url, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %+v, %v; want %+v", c.url, got, err, c.want)
		}
	}
}

func TestRenderEveryKind(t *testing.T) {
	from := mail.Address{Name: "Acme", Email: "no-reply@acme.test"}
	for _, kind := range []string{mail.VerifyEmail, mail.ResetPassword, mail.Invite, mail.EmailChanged, mail.AccountExists, mail.SignInsFailing} {
		m, err := mail.Render(kind, from, "help@acme.test", "ada@acme.test", mail.Data{
			Tenant: `Acme <script>alert(1)</script>`, Email: "ada@acme.test",
			Link: "https://acme.test/account/x?token=abc&y=1", Expires: "30 minutes", NewAddr: "new@acme.test",
		})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if m.Subject == "" || strings.Contains(m.Subject, "\n") || strings.HasPrefix(m.Text, "Subject:") || m.To != "ada@acme.test" || m.ReplyTo != "help@acme.test" {
			t.Errorf("%s: %+v", kind, m)
		}
		// The HTML part escapes what it is given.
		if strings.Contains(m.HTML, "<script>") || !strings.Contains(m.HTML, "&lt;script&gt;") {
			t.Errorf("%s: HTML does not escape the tenant's name:\n%s", kind, m.HTML)
		}
		hasLink := kind != mail.EmailChanged
		if hasLink != strings.Contains(m.Text, "https://acme.test/account/x?token=abc&y=1") {
			t.Errorf("%s: text link present %v, want %v:\n%s", kind, !hasLink, hasLink, m.Text)
		}
		if hasLink && !strings.Contains(m.HTML, `href="https://acme.test/account/x?token=abc&amp;y=1"`) {
			t.Errorf("%s: HTML lacks the link:\n%s", kind, m.HTML)
		}
	}
}
