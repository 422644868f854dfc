package identity_test

import (
	"context"
	"sync"
	"testing"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

func (e *env) refresh(slug, token string) (identity.Tokens, int) {
	e.t.Helper()
	r := e.do("POST", slug, "/v1/auth/token/refresh", "", map[string]string{"refresh_token": token})
	var tok identity.Tokens
	if r.status == 200 {
		r.json(e.t, &tok)
	}
	return tok, r.status
}

func TestRefreshRotatesAndReuseEndsTheFamily(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "rt@example.com", goodPassword)
	first := e.login("acme", "rt@example.com", goodPassword)
	other := e.login("acme", "rt@example.com", goodPassword) // another family

	second, status := e.refresh("acme", first.RefreshToken)
	if status != 200 || second.RefreshToken == first.RefreshToken || second.AccessToken == "" || second.TokenType != "Bearer" {
		t.Fatalf("refresh: %d %+v", status, second)
	}
	e.must(200, "GET", "acme", "/v1/me", second.AccessToken, nil)
	third, status := e.refresh("acme", second.RefreshToken)
	if status != 200 {
		t.Fatalf("second refresh: %d", status)
	}

	// The spent first token comes back: a thief's copy. The whole family
	// ends, including the legitimate newest token and its access token.
	if _, status := e.refresh("acme", first.RefreshToken); status != 401 {
		t.Fatalf("reuse answered %d, want 401", status)
	}
	if _, status := e.refresh("acme", third.RefreshToken); status != 401 {
		t.Fatalf("the family's newest token after reuse: %d, want 401", status)
	}
	e.problemOf(e.do("GET", "acme", "/v1/me", third.AccessToken, nil), 401)
	// Another family of the same user is untouched.
	if _, status := e.refresh("acme", other.RefreshToken); status != 200 {
		t.Fatalf("another family after reuse: %d, want 200", status)
	}
	var reuse int
	e.admin.QueryRow(context.Background(), "select count(*) from app.audit_events where action = 'session.revoke' and details->>'reason' = 'refresh token reuse'").Scan(&reuse)
	if reuse != 1 {
		t.Fatalf("%d reuse events audited, want 1", reuse)
	}
	for _, bad := range []string{"", "not-a-token", first.AccessToken} {
		if _, status := e.refresh("acme", bad); status != 401 && !(bad == "" && status == 400) {
			t.Errorf("refresh with %.10q: %d", bad, status)
		}
	}
}

func TestConcurrentRefreshHasOneWinner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "race@example.com", goodPassword)
	tok := e.login("acme", "race@example.com", goodPassword)
	const n = 8
	statuses := make([]int, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, statuses[i] = e.refresh("acme", tok.RefreshToken)
		})
	}
	close(start)
	wg.Wait()
	wins := 0
	for _, s := range statuses {
		switch s {
		case 200:
			wins++
		case 401:
		default:
			t.Errorf("status %d", s)
		}
	}
	if wins != 1 {
		t.Fatalf("%d refreshes won (%v), want exactly 1", wins, statuses)
	}
}

func TestRefreshTokenLifetimes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.signup("acme", "old@example.com", goodPassword)
	idle := e.login("acme", "old@example.com", goodPassword)
	absolute := e.login("acme", "old@example.com", goodPassword)
	// Age the tokens in the database: one family idle too long, the other
	// past its absolute lifetime.
	if _, err := e.admin.Exec(ctx, "update app.refresh_tokens set idle_expires_at = now() - interval '1 second' where token_hash = sha256($1::bytea)", []byte(idle.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Exec(ctx, `update app.sessions s set expires_at = now() - interval '1 second'
		from app.refresh_tokens r where r.session_id = s.id and r.token_hash = sha256($1::bytea)`, []byte(absolute.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"idle": idle.RefreshToken, "absolute": absolute.RefreshToken} {
		if _, status := e.refresh("acme", tok); status != 401 {
			t.Errorf("%s-expired family: %d, want 401", name, status)
		}
	}
}

func TestRevokeAndSessionList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	e.tenant("globex", tenancy.Shared, "")
	e.signup("acme", "s@example.com", goodPassword)
	e.signup("acme", "other@example.com", goodPassword)
	a := e.login("acme", "s@example.com", goodPassword)
	b := e.login("acme", "s@example.com", goodPassword)
	c := e.login("acme", "s@example.com", goodPassword)
	stranger := e.login("acme", "other@example.com", goodPassword)

	var list struct{ Sessions []identity.Session }
	e.must(200, "GET", "acme", "/v1/me/sessions", a.AccessToken, nil).json(t, &list)
	if len(list.Sessions) != 3 {
		t.Fatalf("%d sessions, want 3", len(list.Sessions))
	}
	current := 0
	var bID string
	for _, s := range list.Sessions {
		if s.Current {
			current++
		}
	}
	if current != 1 {
		t.Fatalf("%d sessions marked current", current)
	}
	// Find b's session through b itself.
	var fromB struct{ Sessions []identity.Session }
	e.must(200, "GET", "acme", "/v1/me/sessions", b.AccessToken, nil).json(t, &fromB)
	for _, s := range fromB.Sessions {
		if s.Current {
			bID = s.ID.String()
		}
	}
	// Another user cannot end it, nor learn it exists; a's can.
	e.problemOf(e.do("DELETE", "acme", "/v1/me/sessions/"+bID, stranger.AccessToken, nil), 404)
	e.problemOf(e.do("DELETE", "acme", "/v1/me/sessions/not-a-uuid", a.AccessToken, nil), 404)
	e.must(204, "DELETE", "acme", "/v1/me/sessions/"+bID, a.AccessToken, nil)
	if _, status := e.refresh("acme", b.RefreshToken); status != 401 {
		t.Fatalf("refresh of an ended session: %d", status)
	}
	e.problemOf(e.do("GET", "acme", "/v1/me", b.AccessToken, nil), 401)

	// RFC 7009 revocation: 200 whatever the token, and c's family ends.
	e.must(200, "POST", "acme", "/v1/auth/token/revoke", "", map[string]string{"token": "unknown-token"})
	e.must(200, "POST", "globex", "/v1/auth/token/revoke", "", map[string]string{"token": c.RefreshToken}) // wrong tenant: no effect
	fresh, status := e.refresh("acme", c.RefreshToken)
	if status != 200 {
		t.Fatalf("another tenant's revoke ended acme's session: %d", status)
	}
	e.must(200, "POST", "acme", "/v1/auth/token/revoke", "", map[string]string{"token": fresh.RefreshToken})
	if _, status := e.refresh("acme", fresh.RefreshToken); status != 401 {
		t.Fatalf("refresh after revocation: %d, want 401", status)
	}
}
