package identity_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/identity/mail/mailtest"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestSignupMailsAConfirmationLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "ada@confirm.test", goodPassword)

	m := e.mails("ada@confirm.test", 1)[0]
	if m.From.Name != "acme" || m.From.Address != "no-reply@gatehouse.test" || !strings.Contains(m.Subject, "Confirm") {
		t.Fatalf("mail from %+v, subject %q", m.From, m.Subject)
	}
	link := m.Link(t, "/account/verify-email")
	if !strings.HasPrefix(link, "https://acme.gatehouse.test/account/verify-email?token=") || !strings.Contains(m.HTML, link) {
		t.Fatalf("link %q (html has it: %v)", link, strings.Contains(m.HTML, link))
	}
	token := m.Token(t, "verify-email")

	// Postgres keeps the token's hash only, and nothing of the mail once
	// it is sent.
	var hashed, inClear int
	if err := e.admin.QueryRow(context.Background(), `select count(*) filter (where token_hash = sha256(convert_to($1, 'UTF8'))),
		count(*) filter (where strpos(t::text, $1) > 0) from app.email_tokens t`, token).Scan(&hashed, &inClear); err != nil {
		t.Fatal(err)
	}
	if hashed != 1 || inClear != 0 {
		t.Fatalf("tokens stored by hash: %d (want 1); rows holding the token: %d (want 0)", hashed, inClear)
	}
	eventuallyTrue(t, "the sent mail is wiped", func() bool {
		var left int
		e.admin.QueryRow(context.Background(), `select count(*) from app.mail_outbox where status <> 'sent' or payload_sealed is not null`).Scan(&left)
		return left == 0
	})

	tok := e.login("acme", "ada@confirm.test", goodPassword)
	var me identity.User
	e.must(200, "GET", "acme", "/v1/me", tok.AccessToken, nil).json(t, &me)
	if me.EmailVerified {
		t.Fatal("verified before the link was opened")
	}
	e.must(204, "POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": token})
	e.must(200, "GET", "acme", "/v1/me", tok.AccessToken, nil).json(t, &me)
	if !me.EmailVerified {
		t.Fatal("not verified after the link was opened")
	}
	// Single use.
	d := e.problemOf(e.do("POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": token}), 400)
	if len(d.Errors) != 1 || d.Errors[0].Field != "token" {
		t.Fatalf("second use: %+v", d)
	}
}

func TestSignupDoesNotRevealExistingAccounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	first := e.must(202, "POST", "acme", "/v1/auth/signup", "", map[string]string{"email": "bob@exists.test", "password": goodPassword})
	again := e.must(202, "POST", "acme", "/v1/auth/signup", "", map[string]string{"email": "Bob@Exists.test", "password": "someone-Else-tries-this-1"})
	if string(first.body) != string(again.body) {
		t.Fatalf("answers differ: %s / %s", first.body, again.body)
	}
	ms := e.mails("bob@exists.test", 2)
	if !strings.Contains(ms[1].Subject, "Your acme account") || !strings.Contains(ms[1].Text, "already has") {
		t.Fatalf("second mail %q:\n%s", ms[1].Subject, ms[1].Text)
	}
	// The owner's password stands; the second password does nothing.
	e.login("acme", "bob@exists.test", goodPassword)
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "bob@exists.test", "password": "someone-Else-tries-this-1"}), 401)
	// The mail's link resets the password: it is the owner's way in.
	e.must(204, "POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": ms[1].Token(t, "reset-password"), "new_password": "fresh-Start-for-bob-7"})
	e.login("acme", "bob@exists.test", "fresh-Start-for-bob-7")
}

func TestTenantRequiringVerifiedEmail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("strict", tenancy.Shared, "")
	yes := true
	if _, err := e.reg.UpdateSettings(context.Background(), tn.Slug, tenancy.Settings{RequireVerifiedEmail: &yes}); err != nil {
		t.Fatal(err)
	}
	waitForSetting(t, e, "strict", func(t *tenancy.Tenant) bool { return t.RequireVerifiedEmail })
	e.signup("strict", "cy@strict.test", goodPassword)
	e.mails("cy@strict.test", 1)

	// Unconfirmed, even the right password answers like a wrong one:
	// whoever signed the address up chose that password.
	right := e.problemOf(e.do("POST", "strict", "/v1/auth/login", "", map[string]string{"email": "cy@strict.test", "password": goodPassword}), 401)
	wrong := e.problemOf(e.do("POST", "strict", "/v1/auth/login", "", map[string]string{"email": "cy@strict.test", "password": "wrong-password-here"}), 401)
	if right.Detail != wrong.Detail {
		t.Fatalf("answers differ: %q / %q", right.Detail, wrong.Detail)
	}

	// A new link; both work until one is used.
	resend := e.must(202, "POST", "strict", "/v1/auth/email/resend", "", map[string]string{"email": "cy@strict.test"})
	unknown := e.must(202, "POST", "strict", "/v1/auth/email/resend", "", map[string]string{"email": "nobody@strict.test"})
	if string(resend.body) != string(unknown.body) {
		t.Fatalf("resend answers differ: %s / %s", resend.body, unknown.body)
	}
	ms := e.mails("cy@strict.test", 2)
	if ms[0].Token(t, "verify-email") == ms[1].Token(t, "verify-email") {
		t.Fatal("the new link is the old one")
	}
	e.must(204, "POST", "strict", "/v1/auth/email/verify", "", map[string]string{"token": ms[1].Token(t, "verify-email")})
	e.login("strict", "cy@strict.test", goodPassword)
	// Confirmed: no more links.
	e.must(202, "POST", "strict", "/v1/auth/email/resend", "", map[string]string{"email": "cy@strict.test"})
	time.Sleep(500 * time.Millisecond)
	if n := len(e.mail.Messages(t, "cy@strict.test")); n != 2 {
		t.Fatalf("%d mails after resending for a confirmed address, want 2", n)
	}
}

// waitForSetting waits until the server's resolver sees a change of a
// tenant's settings (announced by the control plane).
func waitForSetting(t *testing.T, e *env, slug string, ok func(*tenancy.Tenant) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		tn, err := e.reg.Get(context.Background(), slug)
		if err != nil {
			t.Fatal(err)
		}
		if ok(tn) {
			// The resolver's copy follows the announcement within
			// milliseconds; allow it a moment.
			time.Sleep(200 * time.Millisecond)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("setting not seen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPasswordReset(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "dee@reset.test", goodPassword)
	e.mails("dee@reset.test", 1)
	before := e.login("acme", "dee@reset.test", goodPassword)

	known := e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "dee@reset.test"})
	unknown := e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "nobody@reset.test"})
	if string(known.body) != string(unknown.body) {
		t.Fatalf("forgot answers differ: %s / %s", known.body, unknown.body)
	}
	e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "dee@reset.test"})
	ms := e.mails("dee@reset.test", 3)
	older, newer := ms[1].Token(t, "reset-password"), ms[2].Token(t, "reset-password")
	if !strings.Contains(ms[2].Text, "30 minutes") {
		t.Fatalf("reset mail does not say how long it works:\n%s", ms[2].Text)
	}

	// The policy applies, naming the field; a refused password spends
	// nothing.
	d := e.problemOf(e.do("POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": newer, "new_password": "short"}), 400)
	if len(d.Errors) != 1 || d.Errors[0].Field != "new_password" {
		t.Fatalf("weak password: %+v", d)
	}
	e.must(204, "POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": newer, "new_password": "brand-New-password-42"})

	// Every session ended; the old password is gone; every other link
	// is spent.
	e.problemOf(e.do("POST", "acme", "/v1/auth/token/refresh", "", map[string]string{"refresh_token": before.RefreshToken}), 401)
	e.problemOf(e.do("GET", "acme", "/v1/me", before.AccessToken, nil), 401)
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "dee@reset.test", "password": goodPassword}), 401)
	after := e.login("acme", "dee@reset.test", "brand-New-password-42")
	for _, tok := range []string{newer, older} {
		e.problemOf(e.do("POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": tok, "new_password": "yet-Another-password-9"}), 400)
	}
	var me identity.User
	e.must(200, "GET", "acme", "/v1/me", after.AccessToken, nil).json(t, &me)
	if !me.EmailVerified {
		t.Fatal("a used reset link did not confirm the address")
	}
	var audited int
	e.admin.QueryRow(context.Background(), "select count(*) from app.audit_events where action = 'password.reset' and outcome = 'success'").Scan(&audited)
	if audited != 1 {
		t.Fatalf("%d password.reset events, want 1", audited)
	}
}

func TestMailedLinksExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "eve@expire.test", goodPassword)
	token := e.mails("eve@expire.test", 1)[0].Token(t, "verify-email")
	if _, err := e.admin.Exec(context.Background(), "update app.email_tokens set expires_at = now() - interval '1 second'"); err != nil {
		t.Fatal(err)
	}
	e.problemOf(e.do("POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": token}), 400)
}

func TestMailedTokensStayInTheirTenant(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Silo, "")
	e.signup("acme", "fay@tenants.test", goodPassword)
	e.signup("globex", "fay@tenants.test", goodPassword)
	ms := e.mails("fay@tenants.test", 2)
	for _, m := range ms {
		u, _ := url.Parse(m.Link(t, "verify-email"))
		mine, other := "acme", "globex"
		if strings.HasPrefix(u.Host, "globex.") {
			mine, other = other, mine
		}
		token := u.Query().Get("token")
		e.problemOf(e.do("POST", other, "/v1/auth/email/verify", "", map[string]string{"token": token}), 400)
		e.must(204, "POST", mine, "/v1/auth/email/verify", "", map[string]string{"token": token})
	}
}

func TestEmailChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "gil@old.test", goodPassword)
	e.signup("acme", "taken@old.test", goodPassword)
	tok := e.login("acme", "gil@old.test", goodPassword)

	e.problemOf(e.do("POST", "acme", "/v1/me/email", tok.AccessToken, map[string]string{"email": "gil@new.test", "current_password": "not-my-password"}), 401)
	// A taken address answers the same, and gets no link.
	e.must(202, "POST", "acme", "/v1/me/email", tok.AccessToken, map[string]string{"email": "taken@old.test", "current_password": goodPassword})
	var linksToTaken int
	if err := e.admin.QueryRow(context.Background(), "select count(*) from app.email_tokens where email = 'taken@old.test' and purpose = 'verify_email' and user_id <> (select id from app.users where email = 'taken@old.test')").Scan(&linksToTaken); err != nil || linksToTaken != 0 {
		t.Fatalf("links to a taken address: %d, %v", linksToTaken, err)
	}
	e.problemOf(e.do("POST", "acme", "/v1/me/email", tok.AccessToken, map[string]string{"email": "gil@old.test", "current_password": goodPassword}), 400)
	e.must(202, "POST", "acme", "/v1/me/email", tok.AccessToken, map[string]string{"email": "Gil@New.test", "current_password": goodPassword})

	// Nothing changes until the new address confirms.
	var me identity.User
	e.must(200, "GET", "acme", "/v1/me", tok.AccessToken, nil).json(t, &me)
	if me.Email != "gil@old.test" {
		t.Fatalf("email %q before confirming", me.Email)
	}
	link := e.mails("gil@new.test", 1)[0].Token(t, "verify-email")
	e.must(204, "POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": link})
	e.must(200, "GET", "acme", "/v1/me", tok.AccessToken, nil).json(t, &me)
	if me.Email != "gil@new.test" || !me.EmailVerified {
		t.Fatalf("after confirming: %+v", me)
	}
	// The old address is told (after its sign-up mail).
	notice := e.mails("gil@old.test", 2)[1]
	if !strings.Contains(notice.Text, "gil@new.test") {
		t.Fatalf("notice to the old address:\n%s", notice.Text)
	}
	e.login("acme", "gil@new.test", goodPassword)
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "gil@old.test", "password": goodPassword}), 401)
}

func TestAdminInvitesAndResets(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tn := e.tenant("acme", tenancy.Shared, tenancy.SignupInvite)
	boss, err := e.svc.InviteAdmin(context.Background(), tn, "boss@invite.test", "Boss")
	if err != nil {
		t.Fatal(err)
	}
	if boss.Role != identity.RoleAdmin {
		t.Fatalf("first admin %+v", boss)
	}
	invite := e.mails("boss@invite.test", 1)[0]
	if !strings.Contains(invite.Subject, "invited") {
		t.Fatalf("invitation subject %q", invite.Subject)
	}
	acceptInvite(t, e, "acme", invite, "Chooses-a-Good-password-1")
	admin := e.login("acme", "boss@invite.test", "Chooses-a-Good-password-1")

	var u identity.User
	e.must(201, "POST", "acme", "/v1/admin/users", admin.AccessToken, map[string]string{"email": "new@invite.test"}).json(t, &u)
	// Not signed in before choosing a password.
	e.problemOf(e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "new@invite.test", "password": "member-Picks-this-one-2"}), 401)
	// An admin's reset of an account without a password invites again.
	e.must(202, "POST", "acme", "/v1/admin/users/"+u.ID.String()+"/reset-password", admin.AccessToken, nil)
	ms := e.mails("new@invite.test", 2)
	if !strings.Contains(ms[1].Subject, "invited") {
		t.Fatalf("second mail %q", ms[1].Subject)
	}
	acceptInvite(t, e, "acme", ms[1], "member-Picks-this-one-2")
	member := e.login("acme", "new@invite.test", "member-Picks-this-one-2")
	var me identity.User
	e.must(200, "GET", "acme", "/v1/me", member.AccessToken, nil).json(t, &me)
	if !me.EmailVerified || me.ID != u.ID {
		t.Fatalf("invited account %+v", me)
	}
	// The first invitation was spent with the second.
	r := e.send("GET", "acme", "/account/accept-invite?token="+url.QueryEscape(ms[0].Token(t, "accept-invite")), nil, "")
	if r.status != 400 || !strings.Contains(string(r.body), "invalid, expired or already used") {
		t.Fatalf("spent invitation page: %d %s", r.status, r.body)
	}
	// Now with a password, a reset sends a reset mail.
	e.must(202, "POST", "acme", "/v1/admin/users/"+u.ID.String()+"/reset-password", admin.AccessToken, nil)
	if m := e.mails("new@invite.test", 3)[2]; !strings.Contains(m.Subject, "Reset") {
		t.Fatalf("third mail %q", m.Subject)
	}
	// Members may not.
	e.problemOf(e.do("POST", "acme", "/v1/admin/users/"+u.ID.String()+"/reset-password", member.AccessToken, nil), 403)
}

// acceptInvite follows an invitation's link to the hosted page and
// chooses a password there, as a browser would.
func acceptInvite(t *testing.T, e *env, slug string, m mailtest.Message, password string) {
	t.Helper()
	link, _ := url.Parse(m.Link(t, "accept-invite"))
	page := e.send("GET", slug, link.RequestURI(), nil, "")
	if page.status != 200 || !strings.Contains(page.header["Content-Type"], "text/html") ||
		!strings.Contains(page.header["Content-Security-Policy"], "form-action 'self'") || !strings.Contains(string(page.body), `method="post"`) {
		t.Fatalf("invitation page: %d %v\n%s", page.status, page.header, page.body)
	}
	form := url.Values{"token": {link.Query().Get("token")}, "password": {password}, "confirm": {password + "x"}}
	form2 := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	r := e.send("POST", slug, "/account/accept-invite", form2, form.Encode())
	if r.status != 400 || !strings.Contains(string(r.body), "differ") || !strings.Contains(string(r.body), `name="token"`) {
		t.Fatalf("mismatched passwords: %d %s", r.status, r.body)
	}
	form.Set("confirm", password)
	r = e.send("POST", slug, "/account/accept-invite", form2, form.Encode())
	if r.status != 200 || !strings.Contains(string(r.body), "Your password is set") {
		t.Fatalf("accepting: %d %s", r.status, r.body)
	}
}

func TestMailSurvivesAnSMTPOutage(t *testing.T) {
	t.Parallel()
	srv := mailtest.Start(t)
	e := newEnv(t, withMail(srv))
	e.tenant("acme", tenancy.Shared, "")

	// The server refuses for a while: the request still succeeds, and the
	// mail waits in the outbox, retried with backoff.
	srv.Refuse(t, 451)
	e.signup("acme", "hal@outage.test", goodPassword)
	deadline := time.Now().Add(10 * time.Second)
	var attempts int
	var lastError string
	for attempts < 2 && time.Now().Before(deadline) {
		e.admin.QueryRow(context.Background(), "select attempts, coalesce(last_error, '') from app.mail_outbox").Scan(&attempts, &lastError)
		time.Sleep(50 * time.Millisecond)
	}
	if attempts < 2 || !strings.Contains(lastError, "451") {
		t.Fatalf("after refusals: %d attempts, last error %q", attempts, lastError)
	}
	if n := len(srv.Messages(t, "hal@outage.test")); n != 0 {
		t.Fatalf("%d mails delivered while refused", n)
	}
	srv.Refuse(t, 0)
	m := e.mail.Wait(t, "hal@outage.test", 1, 20*time.Second)[0]
	if !strings.Contains(m.Subject, "Confirm") {
		t.Fatalf("delivered %q", m.Subject)
	}

	// A permanent refusal gives up at once and keeps no payload.
	srv.Refuse(t, 550)
	e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "hal@outage.test"})
	var status string
	var wiped bool
	deadline = time.Now().Add(10 * time.Second)
	for status != "failed" && time.Now().Before(deadline) {
		e.admin.QueryRow(context.Background(), "select status, payload_sealed is null from app.mail_outbox where kind = 'reset_password'").Scan(&status, &wiped)
		time.Sleep(50 * time.Millisecond)
	}
	if status != "failed" || !wiped {
		t.Fatalf("after a permanent refusal: status %q, payload wiped %v", status, wiped)
	}
}

func TestDeletingAnAccountDeletesItsPendingMail(t *testing.T) {
	t.Parallel()
	srv := mailtest.Start(t)
	e := newEnv(t, withMail(srv))
	tn := e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "ivy@delete.test", goodPassword)
	e.mail.Wait(t, "ivy@delete.test", 1, 20*time.Second)
	e.confirmed("ivy@delete.test")
	if _, err := e.svc.SetRole(context.Background(), tn, "ivy@delete.test", identity.RoleAdmin); err != nil {
		t.Fatal(err)
	}
	admin := e.login("acme", "ivy@delete.test", goodPassword)

	srv.Refuse(t, 451) // the invitation stays pending
	var u identity.User
	e.must(201, "POST", "acme", "/v1/admin/users", admin.AccessToken, map[string]string{"email": "jo@delete.test"}).json(t, &u)
	var pending int
	e.admin.QueryRow(context.Background(), "select count(*) from app.mail_outbox where user_id = $1 and status = 'pending'", u.ID).Scan(&pending)
	if pending != 1 {
		t.Fatalf("%d pending mails for the new account, want 1", pending)
	}
	e.must(204, "DELETE", "acme", "/v1/admin/users/"+u.ID.String(), admin.AccessToken, nil)
	var left int
	e.admin.QueryRow(context.Background(), "select count(*) from app.mail_outbox where user_id = $1 or (kind = 'invite' and status = 'pending')", u.ID).Scan(&left)
	if left != 0 {
		t.Fatalf("%d mails of the deleted account left", left)
	}
	srv.Refuse(t, 0)
	time.Sleep(time.Second)
	if n := len(srv.Messages(t, "jo@delete.test")); n != 0 {
		t.Fatalf("%d mails reached the deleted account", n)
	}
}

func TestPasswordResetCancelsAPendingEmailChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "kim@takeover.test", goodPassword)
	e.mails("kim@takeover.test", 1)
	// Whoever holds the session asks to move the account to their address …
	thief := e.login("acme", "kim@takeover.test", goodPassword)
	e.must(202, "POST", "acme", "/v1/me/email", thief.AccessToken, map[string]string{"email": "thief@takeover.test", "current_password": goodPassword})
	link := e.mails("thief@takeover.test", 1)[0].Token(t, "verify-email")
	// … the owner resets the password …
	e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "kim@takeover.test"})
	reset := e.mails("kim@takeover.test", 2)[1].Token(t, "reset-password")
	e.must(204, "POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": reset, "new_password": "owner-Takes-it-back-5"})
	// … and the change can no longer complete.
	e.problemOf(e.do("POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": link}), 400)
	owner := e.login("acme", "kim@takeover.test", "owner-Takes-it-back-5")
	if me := e.me("acme", owner.AccessToken); me.Email != "kim@takeover.test" {
		t.Fatalf("the account moved to %s", me.Email)
	}
}

func TestMailedTokensServeTheirPurposeOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "lee@purpose.test", goodPassword)
	verify := e.mails("lee@purpose.test", 1)[0].Token(t, "verify-email")
	e.problemOf(e.do("POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": verify, "new_password": "sneaky-New-password-3"}), 400)
	e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "lee@purpose.test"})
	reset := e.mails("lee@purpose.test", 2)[1].Token(t, "reset-password")
	e.problemOf(e.do("POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": reset}), 400)
	// Both still work for what they are.
	e.must(204, "POST", "acme", "/v1/auth/email/verify", "", map[string]string{"token": verify})
	e.must(204, "POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": reset, "new_password": "honest-New-password-4"})
}

func TestConcurrentSpendsOfOneAccountsLinks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "max@race.test", goodPassword)
	e.mails("max@race.test", 1)
	for range 2 {
		e.must(202, "POST", "acme", "/v1/auth/password/forgot", "", map[string]string{"email": "max@race.test"})
	}
	ms := e.mails("max@race.test", 3)
	codes := make(chan int, 2)
	for _, m := range ms[1:] {
		go func() {
			codes <- e.do("POST", "acme", "/v1/auth/password/reset", "", map[string]string{"token": m.Token(t, "reset-password"), "new_password": "racing-New-password-6"}).status
		}()
	}
	got := map[int]int{}
	for range 2 {
		got[<-codes]++
	}
	// One wins; the other finds its link spent (never a 500).
	if got[204] != 1 || got[400] != 1 {
		t.Fatalf("concurrent resets answered %v; want one 204 and one 400", got)
	}
}

// eventuallyTrue polls cond for up to 10 seconds.
func eventuallyTrue(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
