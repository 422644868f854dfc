// Package mail sends identity's mails: it renders them, keeps them sealed
// in the tenant's outbox (written in the same transaction as the change
// they tell of), and relays them to an SMTP server with retries.
//
// Its invariant: a mail exists if and only if the change it tells of
// committed, and its content (links carry tokens) is in Postgres only
// sealed under the tenant's key, bound to its row. A relay sends a mail
// at least once: claims are leased, so no two relays send one at once,
// and a mail sent but not recorded as sent goes again when its lease
// ends.
package mail

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
)

// Address is a mailbox with an optional display name.
type Address struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email"`
}

// Message is one rendered mail.
type Message struct {
	From    Address `json:"from"`
	ReplyTo string  `json:"reply_to,omitempty"`
	To      string  `json:"to"`
	Subject string  `json:"subject"`
	Text    string  `json:"text"`
	HTML    string  `json:"html"`
}

// Kinds of mail, one template each.
const (
	VerifyEmail   = "verify_email"   // confirm an address (sign-up, email change)
	ResetPassword = "reset_password" // a link to choose a new password
	Invite        = "invite"         // an account an admin created: choose a password
	EmailChanged  = "email_changed"  // to the old address, after a change
	AccountExists = "account_exists" // someone signed up with an address that has an account
	// SignInsFailing: sign-ins to the account fail so often that they are
	// slowed down; a link to reset the password.
	SignInsFailing = "sign_ins_failing"
)

// Data is what a template may use.
type Data struct {
	Tenant  string // the tenant's display name
	Email   string // the recipient's address
	Link    string // the action's link, for kinds that have one
	Expires string // how long the link works, in words ("30 minutes")
	NewAddr string // EmailChanged: the new address
}

//go:embed templates
var templateFS embed.FS

var (
	textTemplates = texttemplate.Must(texttemplate.ParseFS(templateFS, "templates/*.txt"))
	htmlTemplates = htmltemplate.Must(htmltemplate.ParseFS(templateFS, "templates/*.html"))
)

// Render renders a mail of kind for d: its subject from the text
// template's first line ("Subject: ..."), a plain-text body and an HTML
// alternative with the same content.
func Render(kind string, from Address, replyTo, to string, d Data) (Message, error) {
	var text, html bytes.Buffer
	if err := textTemplates.ExecuteTemplate(&text, kind+".txt", d); err != nil {
		return Message{}, fmt.Errorf("render %s: %w", kind, err)
	}
	if err := htmlTemplates.ExecuteTemplate(&html, "layout.html", struct {
		Kind string
		Data
	}{kind, d}); err != nil {
		return Message{}, fmt.Errorf("render %s: %w", kind, err)
	}
	subject, body, ok := strings.Cut(text.String(), "\n")
	subject, found := strings.CutPrefix(subject, "Subject: ")
	if !ok || !found {
		return Message{}, fmt.Errorf("render %s: the text template must start with a Subject line", kind)
	}
	return Message{
		From: from, ReplyTo: replyTo, To: to, Subject: strings.TrimSpace(subject),
		Text: strings.TrimLeft(body, "\n"), HTML: html.String(),
	}, nil
}
