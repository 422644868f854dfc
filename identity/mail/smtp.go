package mail

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// SMTPConfig says how to reach the SMTP server that takes Gatehouse's mail.
type SMTPConfig struct {
	Host     string
	Port     int
	Username string
	Password string
	// TLS is "starttls" (the default: the server must offer STARTTLS),
	// "tls" (implicit TLS, usually port 465) or "none" (plain text, for a
	// mail catcher on the loopback interface only).
	TLS     string
	Timeout time.Duration // per connection; default 15s
}

// ParseSMTPURL reads smtp://[user@]host[:port][?tls=starttls|tls|none]
// (smtps:// means tls=tls). The password comes separately, never in the
// URL: URLs end up in process lists and logs.
func ParseSMTPURL(raw, password string) (SMTPConfig, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "smtp" && u.Scheme != "smtps") {
		return SMTPConfig{}, errors.New("the SMTP URL must look like smtp://user@host:587?tls=starttls")
	}
	if _, has := u.User.Password(); has {
		return SMTPConfig{}, errors.New("the SMTP URL must not carry a password: give it in GATEHOUSE_SMTP_PASSWORD")
	}
	c := SMTPConfig{Host: u.Hostname(), Username: u.User.Username(), Password: password, TLS: u.Query().Get("tls")}
	if u.Scheme == "smtps" {
		c.TLS = "tls"
	}
	if c.TLS == "" {
		c.TLS = "starttls"
	}
	switch c.TLS {
	case "starttls":
		c.Port = 587
	case "tls":
		c.Port = 465
	case "none":
		c.Port = 25
		if !isLoopback(c.Host) {
			return SMTPConfig{}, fmt.Errorf("tls=none sends mail, tokens included, in plain text: allowed only to a loopback host, not %s", c.Host)
		}
	default:
		return SMTPConfig{}, fmt.Errorf("tls=%q: want starttls, tls or none", c.TLS)
	}
	if p := u.Port(); p != "" {
		if c.Port, err = strconv.Atoi(p); err != nil || c.Port < 1 || c.Port > 65535 {
			return SMTPConfig{}, fmt.Errorf("SMTP port %q is not a port number", p)
		}
	}
	return c, nil
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// SMTP sends mail to one SMTP server.
type SMTP struct {
	cfg SMTPConfig
}

// NewSMTP returns a sender for cfg.
func NewSMTP(cfg SMTPConfig) *SMTP {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	return &SMTP{cfg: cfg}
}

// PermanentError is a refusal that retrying cannot fix: the server
// rejected the recipient or the message (a 5xx reply).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Send delivers m, with id as the stem of its Message-ID (so that a mail
// sent twice, after a relay died between sending and recording it, is
// recognisably the same mail). Returns a *PermanentError when the server
// refused for good; any other error is worth retrying.
func (s *SMTP) Send(ctx context.Context, id string, m Message) error {
	msg := gomail.NewMsg()
	if err := msg.FromFormat(m.From.Name, m.From.Email); err != nil {
		return &PermanentError{fmt.Errorf("from address: %w", err)}
	}
	if err := msg.To(m.To); err != nil {
		return &PermanentError{fmt.Errorf("recipient: %w", err)}
	}
	if m.ReplyTo != "" {
		if err := msg.ReplyTo(m.ReplyTo); err != nil {
			return &PermanentError{fmt.Errorf("reply-to address: %w", err)}
		}
	}
	msg.Subject(m.Subject)
	msg.SetMessageIDWithValue(id + "@gatehouse")
	msg.SetDate()
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetUserAgent("Gatehouse")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}

	opts := []gomail.Option{gomail.WithPort(s.cfg.Port), gomail.WithTimeout(s.cfg.Timeout)}
	switch s.cfg.TLS {
	case "tls":
		opts = append(opts, gomail.WithSSL())
	case "none":
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if s.cfg.Username != "" {
		// Over TLS the client picks the strongest mechanism the server
		// offers; in plain text (loopback only, see ParseSMTPURL) it must
		// be told that PLAIN without encryption is meant.
		auth := gomail.SMTPAuthAutoDiscover
		if s.cfg.TLS == "none" {
			auth = gomail.SMTPAuthPlainNoEnc
		}
		opts = append(opts, gomail.WithSMTPAuth(auth),
			gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
	}
	client, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err = client.DialAndSendWithContext(ctx, msg)
	if se, ok := errors.AsType[*gomail.SendError](err); ok && !se.IsTemp() && se.ErrorCode() >= 500 {
		return &PermanentError{err}
	}
	return err
}
