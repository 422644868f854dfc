package identity

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// opStorage is what the OpenID Connect provider (zitadel's op) keeps and
// looks up, in the tenant the request resolved to: every method finds its
// tenant in the context (oidcRequest), never in the request's parameters.
//
// Tokens: access tokens are JWTs signed with the tenant's key. Their jti
// says what stands behind them, so that userinfo, introspection and
// revocation find it: "<session id>.<expiry>.<random>" for a user's
// token (its session must still stand), "app.<expiry>.<random>" for an
// app's own (client_credentials; its app must still be enabled).
type opStorage struct {
	s *Service
}

var (
	_ op.Storage                        = opStorage{}
	_ op.ClientCredentialsStorage       = opStorage{}
	_ op.CanGetPrivateClaimsFromRequest = opStorage{}
	_ op.CanTerminateSessionFromRequest = opStorage{}
)

// Lifetimes of the flow.
const (
	authRequestTTL = 10 * time.Minute // from the app's redirect to the sign-in's end
	idTokenTTL     = time.Hour
)

// oidcRequest is what the provider's storage needs of the HTTP request
// beyond its tenant: who sent it and the browser's session cookie. Put in
// the context by the fiber bridge.
type oidcRequest struct {
	t      *tenancy.Tenant
	meta   Meta
	cookie string
	// signFor is the app whose tokens this request signs: the last one op
	// looked up as the request's client (ID tokens in its
	// id_token_signed_response_alg).
	signFor *App
	// redeemed is what this request's code exchange opened (redeem).
	redeemed *redeemed
	// user is the account whose tokens this request issues, once read.
	user *queries.AppUser
	// err is the first failure that says nothing of the request (the
	// database or Vault unavailable): the bridge answers 503 for it
	// rather than the provider's server_error.
	err error
}

type oidcRequestKey struct{}

func reqOf(ctx context.Context) *oidcRequest {
	r, _ := ctx.Value(oidcRequestKey{}).(*oidcRequest)
	if r == nil {
		panic("identity: provider storage called outside the fiber bridge")
	}
	return r
}

// fail records err if it means a dependency is away and returns it.
func (r *oidcRequest) fail(err error) error {
	if err != nil && r.err == nil && problem.CodeOf(err) == problem.Unavailable {
		r.err = err
	}
	return err
}

// app returns the request tenant's app clientID (kept in memory for a
// few seconds: clients).
func (st opStorage) app(ctx context.Context, clientID string) (*App, error) {
	r := reqOf(ctx)
	a, err := st.s.AppByClientID(ctx, r.t, clientID)
	if err != nil {
		return nil, r.fail(err)
	}
	return a, nil
}

// GetClientByClientID returns an enabled app of the tenant.
func (st opStorage) GetClientByClientID(ctx context.Context, clientID string) (op.Client, error) {
	a, err := st.app(ctx, clientID)
	if err != nil {
		if problem.CodeOf(err) == problem.NotFound {
			return nil, oidc.ErrInvalidClient().WithDescription("unknown client")
		}
		return nil, err
	}
	if a.Disabled {
		return nil, oidc.ErrInvalidClient().WithDescription("the app is disabled")
	}
	reqOf(ctx).signFor = a
	return opClient{a}, nil
}

func (st opStorage) AuthorizeClientIDSecret(ctx context.Context, clientID, secret string) error {
	r := reqOf(ctx)
	if err := st.s.VerifyClientSecret(ctx, r.t, clientID, secret); err != nil {
		if problem.CodeOf(err) == problem.Unauthorized {
			return oidc.ErrInvalidClient().WithDescription("invalid client credentials")
		}
		return r.fail(err)
	}
	return nil
}

// CreateAuthRequest keeps an authorization request op checked, after the
// rules op does not know: redirect URIs matched exactly (loopback ports
// only for native apps), PKCE S256 only and required of public apps, the
// app's own scopes, openid always, query responses only.
func (st opStorage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	r := reqOf(ctx)
	a, err := st.app(ctx, req.ClientID)
	if err != nil {
		return nil, err
	}
	if !a.RedirectURIAllowed(req.RedirectURI) {
		return nil, oidc.ErrInvalidRequestRedirectURI().WithDescription("the redirect_uri is not registered for this app")
	}
	if !interactive(a.Kind) {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("this app signs in as itself (client_credentials), not users")
	}
	if req.ResponseType != oidc.ResponseTypeCode {
		return nil, &oidc.Error{ErrorType: "unsupported_response_type", Description: "only response_type=code is supported"}
	}
	if req.ResponseMode != "" && req.ResponseMode != oidc.ResponseModeQuery {
		return nil, oidc.ErrInvalidRequest().WithDescription("only response_mode=query is supported")
	}
	switch {
	case req.CodeChallenge == "" && a.PKCERequired:
		return nil, oidc.ErrInvalidRequest().WithDescription("this app must send a PKCE code_challenge (S256)")
	case req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256:
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256; plain is refused")
	case req.CodeChallenge != "" && !validChallenge(req.CodeChallenge):
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge must be a base64url SHA-256 (43 characters)")
	}
	if !slices.Contains(req.Scopes, oidc.ScopeOpenID) {
		return nil, oidc.ErrInvalidScope().WithDescription("the openid scope is required")
	}
	scopes := slices.DeleteFunc(slices.Clone([]string(req.Scopes)), func(s string) bool { return !slices.Contains(a.Scopes, s) })
	if !slices.Contains(scopes, oidc.ScopeOpenID) {
		return nil, oidc.ErrInvalidScope().WithDescription("this app may not ask for the openid scope")
	}
	if len(req.State) > 2048 || len(req.Nonce) > 512 || len(req.LoginHint) > 320 || len(req.UILocales) > 10 || len(req.ACRValues) > 10 {
		return nil, oidc.ErrInvalidRequest().WithDescription("a parameter is too long")
	}
	p := queries.CreateAuthRequestParams{
		TenantID: r.t.ID.UUID(), ClientID: a.ClientID, RedirectUri: req.RedirectURI, Scopes: scopes,
		State: optional(req.State), Nonce: optional(req.Nonce), ResponseMode: optional(string(req.ResponseMode)),
		CodeChallenge: optional(req.CodeChallenge), Prompt: nonNil([]string(req.Prompt)), LoginHint: optional(req.LoginHint),
		UiLocales: localeTags(req.UILocales), AcrValues: nonNil([]string(req.ACRValues)),
		ExpiresAt: st.s.now().Add(authRequestTTL),
	}
	if req.MaxAge != nil {
		n := int32(min(*req.MaxAge, 1<<31-1))
		p.MaxAge = &n
	}
	var row queries.AppOidcAuthRequest
	err = st.s.db.Tx(ctx, r.t, func(q *queries.Queries) (err error) {
		if row, err = q.CreateAuthRequest(ctx, p); err != nil {
			return err
		}
		// Expired requests are garbage; sweep them now and then.
		if rand.IntN(100) == 0 {
			return q.PruneAuthRequests(ctx, r.t.ID.UUID())
		}
		return nil
	})
	if err != nil {
		return nil, r.fail(fmt.Errorf("create auth request: %w", err))
	}
	return &authRequest{row}, nil
}

func localeTags(l oidc.Locales) []string {
	out := make([]string, 0, len(l))
	for _, t := range l {
		out = append(out, t.String())
	}
	return out
}

// challengeForm is a base64url SHA-256, as the database checks it too.
var challengeForm = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func validChallenge(c string) bool { return challengeForm.MatchString(c) }

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// AuthRequestByID returns a signed-in request for its callback, which
// only the browser that signed in may call: the request's code is in the
// callback's answer.
func (st opStorage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	r := reqOf(ctx)
	row, err := st.s.authRequest(ctx, r.t, id)
	if err != nil {
		return nil, r.fail(err)
	}
	if row.UserID == nil {
		return &authRequest{row}, nil // not Done: op answers interaction_required
	}
	p, _, err := st.s.AuthenticateCookie(ctx, r.t, r.cookie)
	if err != nil && problem.CodeOf(err) != problem.Unauthorized {
		return nil, r.fail(err)
	}
	if err != nil || p.User != *row.UserID {
		return nil, oidc.ErrInvalidRequest().WithDescription("this sign-in belongs to another browser")
	}
	return &authRequest{row}, nil
}

// AuthRequestByCode is not reached: codes are exchanged by
// oidcServer.CodeExchange, which redeems them (redeem).
func (opStorage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, oidc.ErrInvalidGrant().WithDescription("invalid code")
}

func (st opStorage) SaveAuthCode(ctx context.Context, id, code string) error {
	r := reqOf(ctx)
	rid, err := uuid.Parse(id)
	if err != nil {
		return oidc.ErrInvalidRequest().WithDescription("no such authorization request")
	}
	var n int64
	err = st.s.db.Tx(ctx, r.t, func(q *queries.Queries) (err error) {
		n, err = q.SaveAuthCode(ctx, queries.SaveAuthCodeParams{TenantID: r.t.ID.UUID(), ID: rid, CodeHash: hashToken(code)})
		return err
	})
	if err != nil {
		return r.fail(fmt.Errorf("save auth code: %w", err))
	}
	if n == 0 {
		return oidc.ErrInvalidRequest().WithDescription("this sign-in was completed already; start again from the app")
	}
	return nil
}

func (st opStorage) DeleteAuthRequest(ctx context.Context, id string) error {
	r := reqOf(ctx)
	rid, err := uuid.Parse(id)
	if err != nil || r.redeemed != nil { // an exchanged request stays, to catch a replay
		return nil
	}
	return r.fail(st.s.db.Tx(ctx, r.t, func(q *queries.Queries) error {
		return q.DeleteAuthRequest(ctx, queries.DeleteAuthRequestParams{TenantID: r.t.ID.UUID(), ID: rid})
	}))
}

// CreateAccessToken issues the access token of an exchanged code without
// offline_access (a session without refresh tokens), or of a
// client_credentials grant.
func (st opStorage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	switch req := req.(type) {
	case *authRequest:
		done := reqOf(ctx).redeemed
		if done == nil {
			return "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the code was not exchanged")
		}
		return tokenID(done.session.String(), done.exp), done.exp, nil
	case *appTokenRequest:
		exp := st.s.now().Add(req.ttl)
		return tokenID("app", exp), exp, nil
	}
	return "", time.Time{}, oidc.ErrUnsupportedGrantType()
}

// CreateAccessAndRefreshTokens issues the tokens of an exchanged code with
// offline_access (a session and the first refresh token of its family),
// or of a refresh: the presented token is spent and the family's next one
// issued, as Service.Refresh does.
func (st opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	switch req := req.(type) {
	case *authRequest:
		done := reqOf(ctx).redeemed
		if done == nil || done.refresh == "" {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("the code was not exchanged")
		}
		return tokenID(done.session.String(), done.exp), done.refresh, done.exp, nil
	case *opRefresh:
		// The key that signs is at hand before the token is spent:
		// after that, nothing may fail that the app's retry would take
		// for reuse.
		if _, err := st.SigningKey(ctx); err != nil {
			return "", "", time.Time{}, err
		}
		r := reqOf(ctx)
		_, _, next, err := st.s.rotate(ctx, r.t, current, req.session.ClientID, r.meta)
		if err != nil {
			if problem.CodeOf(err) == problem.Unauthorized {
				return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("invalid or expired refresh token")
			}
			return "", "", time.Time{}, r.fail(err)
		}
		exp := st.s.now().Add(req.ttl)
		return tokenID(req.session.ID.String(), exp), next, exp, nil
	}
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType()
}

// redeemed is what a code's exchange opened: the session, its first
// refresh token (if any) and the access token's expiry.
type redeemed struct {
	session uuid.UUID
	refresh string
	exp     time.Time
}

// redeem exchanges a code of clientID's, in one transaction: it finds the
// code's request (locked), checks it is unspent and unexpired, bound to
// clientID, redirectURI and verifier (PKCE), and opens the user's session
// with the app, with a refresh token if the app asked for offline_access
// and may refresh. A code presented again is a replay: the session its
// first exchange opened ends, because only a copy of a stolen code is
// ever presented twice. The outcome waits in the request for the tokens'
// creation (CreateAccessToken).
func (st opStorage) redeem(ctx context.Context, code, clientID, redirectURI, verifier string) (*authRequest, error) {
	r := reqOf(ctx)
	if code == "" || len(code) > 128 {
		return nil, oidc.ErrInvalidGrant().WithDescription("invalid code")
	}
	a, err := st.app(ctx, clientID)
	if err != nil {
		return nil, err
	}
	now := st.s.now()
	var row queries.AppOidcAuthRequest
	var refusal error
	var out redeemed
	// Three round trips: the request with its user (with BEGIN), the
	// writes, the audit record (then COMMIT).
	err = st.s.db.Tx(ctx, r.t, func(q *queries.Queries) error {
		locked, err := q.LockAuthRequestByCode(ctx, queries.LockAuthRequestByCodeParams{TenantID: r.t.ID.UUID(), CodeHash: hashToken(code)})
		row = locked.AppOidcAuthRequest
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			refusal = oidc.ErrInvalidGrant().WithDescription("invalid code")
			return nil
		case err != nil:
			return err
		case row.ExchangedAt != nil:
			refusal = oidc.ErrInvalidGrant().WithDescription("the code was used already; what it issued is revoked")
			if row.SessionID == nil {
				return nil
			}
			return st.s.endFamily(ctx, q, r.t, *row.SessionID, "authorization code replayed", r.meta)
		case !now.Before(row.ExpiresAt):
			refusal = oidc.ErrInvalidGrant().WithDescription("the code has expired")
			return nil
		case row.ClientID != clientID:
			refusal = oidc.ErrInvalidGrant().WithDescription("the code is another app's")
			return nil
		case row.RedirectUri != redirectURI:
			refusal = oidc.ErrInvalidGrant().WithDescription("redirect_uri does not correspond")
			return nil
		}
		// PKCE: a challenge needs its verifier, whatever the app.
		if refusal = op.AuthorizeCodeChallenge(verifier, (&authRequest{row}).GetCodeChallenge()); refusal != nil {
			return nil
		}
		// The ID token's claims are read with the request: after the
		// commit nothing may need the database.
		r.user = &locked.AppUser
		p := queries.OpenCodeSessionParams{
			TenantID: r.t.ID.UUID(), UserID: *row.UserID, ExpiresAt: now.Add(st.s.cfg.RefreshLifetime),
			ClientID: a.ClientID, Scopes: row.Scopes, AuthTime: row.AuthTime, Amr: nonNil(row.Amr), RequestID: row.ID,
			IdleUntil: now.Add(st.s.cfg.RefreshIdle),
		}
		if r.meta.IP.IsValid() {
			p.Ip = &r.meta.IP
		}
		if r.meta.UserAgent != "" {
			ua := truncate(r.meta.UserAgent, 512)
			p.UserAgent = &ua
		}
		if slices.Contains(row.Scopes, oidc.ScopeOfflineAccess) && slices.Contains(a.GrantTypes, GrantRefreshToken) {
			out.refresh, p.RefreshHash = newRefreshToken()
		}
		sess, err := q.OpenCodeSession(ctx, p)
		if err != nil {
			return err
		}
		out.session, out.exp = sess.ID, now.Add(a.tokenTTL(r.t))
		return appendAudit(ctx, q, r.t.ID.UUID(), now, Event{
			Actor: *row.UserID, Action: "oidc.code", Target: "app:" + a.ClientID, Outcome: Success,
			Details: map[string]string{"session": sess.ID.String(), "scope": strings.Join(row.Scopes, " ")}, Meta: r.meta,
		})
	})
	if err != nil {
		return nil, r.fail(fmt.Errorf("exchange code: %w", err))
	}
	if refusal != nil {
		return nil, refusal
	}
	r.redeemed = &out
	return &authRequest{row}, nil
}

// tokenTTL is the lifetime of a's access tokens.
func (a *App) tokenTTL(t *tenancy.Tenant) time.Duration {
	if a.AccessTokenTTL > 0 {
		return time.Duration(a.AccessTokenTTL) * time.Second
	}
	return t.AccessTokenTTL
}

// tokenID makes an access token's jti: what stands behind it, its expiry,
// and 128 random bits.
func tokenID(behind string, exp time.Time) string {
	b := make([]byte, 16)
	crand.Read(b)
	return behind + "." + strconv.FormatInt(exp.Unix(), 10) + "." + base64.RawURLEncoding.EncodeToString(b)
}

// parseTokenID splits a jti made by tokenID: a session id (or uuid.Nil
// for an app's own token) and the expiry.
func parseTokenID(id string) (sess uuid.UUID, app bool, exp time.Time, ok bool) {
	behind, rest, ok1 := strings.Cut(id, ".")
	secs, _, ok2 := strings.Cut(rest, ".")
	n, err := strconv.ParseInt(secs, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return uuid.Nil, false, time.Time{}, false
	}
	if behind == "app" {
		return uuid.Nil, true, time.Unix(n, 0), true
	}
	sess, err = uuid.Parse(behind)
	return sess, false, time.Unix(n, 0), err == nil
}

// TokenRequestByRefreshToken finds the session of an app's refresh token.
// A token spent before is reuse: its family ends (Service.Refresh).
func (st opStorage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	r := reqOf(ctx)
	bad := oidc.ErrInvalidGrant().WithDescription("invalid or expired refresh token")
	if token == "" || len(token) > 128 {
		return nil, bad
	}
	var row queries.GetRefreshSessionRow
	err := st.s.db.Tx(ctx, r.t, func(q *queries.Queries) (err error) {
		row, err = q.GetRefreshSession(ctx, queries.GetRefreshSessionParams{TenantID: r.t.ID.UUID(), TokenHash: hashToken(token)})
		if err != nil || row.TokenUsedAt == nil || row.RevokedAt != nil {
			return err
		}
		return st.s.endFamily(ctx, q, r.t, row.ID, "refresh token reuse", r.meta)
	})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, bad
	case err != nil:
		return nil, r.fail(fmt.Errorf("refresh token: %w", err))
	case row.ClientID == nil || row.TokenUsedAt != nil || row.RevokedAt != nil ||
		!st.s.now().Before(row.ExpiresAt) || !st.s.now().Before(row.TokenIdleExpiresAt):
		return nil, bad
	}
	a, err := st.app(ctx, *row.ClientID)
	if err != nil {
		return nil, err
	}
	return &opRefresh{session: row, ttl: a.tokenTTL(r.t)}, nil
}

// GetRefreshTokenInfo names the session of clientID's refresh token, for
// revocation.
func (st opStorage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	r := reqOf(ctx)
	if token == "" || len(token) > 128 {
		return "", "", op.ErrInvalidRefreshToken
	}
	var row queries.GetRefreshSessionRow
	err := st.s.db.Tx(ctx, r.t, func(q *queries.Queries) (err error) {
		row, err = q.GetRefreshSession(ctx, queries.GetRefreshSessionParams{TenantID: r.t.ID.UUID(), TokenHash: hashToken(token)})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (row.ClientID == nil || *row.ClientID != clientID)) {
		return "", "", op.ErrInvalidRefreshToken
	}
	if err != nil {
		return "", "", r.fail(err)
	}
	return row.UserID.String(), row.ID.String() + ".0.refresh", nil
}

// RevokeToken ends the session behind a token of clientID's (RFC 7009:
// an unknown token, or another app's, is no error and changes nothing).
func (st opStorage) RevokeToken(ctx context.Context, id, _, clientID string) *oidc.Error {
	r := reqOf(ctx)
	sess, app, _, ok := parseTokenID(id)
	if !ok {
		return nil
	}
	if app {
		return &oidc.Error{ErrorType: "unsupported_token_type", Description: "an app's own access tokens expire; they cannot be revoked"}
	}
	err := st.s.db.Tx(ctx, r.t, func(q *queries.Queries) error {
		row, err := q.GetSession(ctx, queries.GetSessionParams{TenantID: r.t.ID.UUID(), ID: sess})
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (row.ClientID == nil || *row.ClientID != clientID || row.RevokedAt != nil)) {
			return nil
		}
		if err != nil {
			return err
		}
		reason := "token revoked"
		if _, err := q.RevokeSessionByID(ctx, queries.RevokeSessionByIDParams{TenantID: r.t.ID.UUID(), ID: sess, RevokedReason: &reason}); err != nil {
			return err
		}
		return appendAudit(ctx, q, r.t.ID.UUID(), st.s.now(), Event{
			Actor: row.UserID, Action: "session.revoke", Target: "session:" + sess.String(), Outcome: Success,
			Details: map[string]string{"reason": reason, "app": clientID}, Meta: r.meta,
		})
	})
	if err != nil {
		r.fail(err)
		return oidc.ErrServerError().WithParent(err)
	}
	return nil
}

// TerminateSession is not reached: TerminateSessionFromRequest is.
func (st opStorage) TerminateSession(ctx context.Context, userID, clientID string) error {
	return st.endSessions(ctx, userID, clientID)
}

// TerminateSessionFromRequest is RP-initiated logout: it ends the
// browser's session and the user's sessions with the app.
func (st opStorage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	if err := st.endSessions(ctx, req.UserID, req.ClientID); err != nil {
		return "", err
	}
	return req.RedirectURI, nil
}

func (st opStorage) endSessions(ctx context.Context, userID, clientID string) error {
	r := reqOf(ctx)
	p, _, err := st.s.AuthenticateCookie(ctx, r.t, r.cookie)
	switch {
	case err != nil && problem.CodeOf(err) != problem.Unauthorized:
		return r.fail(err)
	// The browser's session ends for its own user's hint, or a logout
	// the user confirmed (no hint): another user's token, however it was
	// had, signs no one out.
	case err == nil && (userID == "" || userID == p.User.String()):
		if err := st.s.Logout(ctx, r.t, p, r.meta); err != nil && problem.CodeOf(err) != problem.Unauthorized {
			return r.fail(err)
		}
		userID = p.User.String()
	}
	user, err := uuid.Parse(userID)
	if err != nil || clientID == "" {
		return nil
	}
	return r.fail(st.s.db.Tx(ctx, r.t, func(q *queries.Queries) error {
		reason := "logout"
		n, err := q.RevokeAppSessions(ctx, queries.RevokeAppSessionsParams{TenantID: r.t.ID.UUID(), UserID: user, ClientID: &clientID, RevokedReason: &reason})
		if err != nil || n == 0 {
			return err
		}
		return appendAudit(ctx, q, r.t.ID.UUID(), st.s.now(), Event{
			Actor: user, Action: "logout", Target: "app:" + clientID, Outcome: Success, Meta: r.meta,
		})
	}))
}

// SigningKey is the tenant's current Ed25519 key, or its RSA key for an
// app that asks for RS256.
func (st opStorage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	r := reqOf(ctx)
	if r.signFor != nil && r.signFor.IDTokenAlg == AlgRS256 {
		s, err := st.s.keys.rsaSigner(ctx, r.t)
		if err != nil {
			return nil, r.fail(err)
		}
		return opKey{s.kid, jose.RS256, s.private}, nil
	}
	s, err := st.s.keys.signer(ctx, r.t)
	if err != nil {
		return nil, r.fail(err)
	}
	return opKey{s.kid, jose.EdDSA, s.private}, nil
}

func (opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.EdDSA, jose.RS256}, nil
}

// KeySet is the tenant's published keys (the JWKS endpoint serves them
// itself; op verifies through tenantKeySet).
func (st opStorage) KeySet(ctx context.Context) ([]op.Key, error) {
	r := reqOf(ctx)
	keys, err := st.s.keys.Published(ctx, r.t)
	if err != nil {
		return nil, r.fail(err)
	}
	out := make([]op.Key, len(keys))
	for i, k := range keys {
		out[i] = opKey{k.Kid, jose.SignatureAlgorithm(k.Alg), k.Public}
	}
	return out, nil
}

// opKey is one of the tenant's keys, private (to sign) or public.
type opKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key any
}

func (k opKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k opKey) Algorithm() jose.SignatureAlgorithm          { return k.alg }
func (k opKey) Key() any                                    { return k.key }
func (k opKey) ID() string                                  { return k.kid }
func (k opKey) Use() string                                 { return "sig" }

// tenantKeySet verifies op's JWTs (access tokens, ID token hints) with
// the request tenant's published keys, as Keys keeps them in memory.
type tenantKeySet struct{ s *Service }

func (ks tenantKeySet) VerifySignature(ctx context.Context, jws *jose.JSONWebSignature) ([]byte, error) {
	if len(jws.Signatures) != 1 {
		return nil, errors.New("not a token of this tenant")
	}
	h := jws.Signatures[0].Header
	r := reqOf(ctx)
	key, err := ks.s.keys.key(ctx, r.t, h.KeyID)
	if err != nil {
		if !errors.Is(err, ErrUnknownKey) {
			r.fail(err)
		}
		return nil, err
	}
	// The header's algorithm must be the key's own.
	switch key.(type) {
	case ed25519.PublicKey:
		if h.Algorithm != string(jose.EdDSA) {
			return nil, errors.New("not a token of this tenant")
		}
	case *rsa.PublicKey:
		if h.Algorithm != string(jose.RS256) {
			return nil, errors.New("not a token of this tenant")
		}
	}
	return jws.Verify(key)
}

// SetUserinfoFromScopes fills an ID token's claims.
func (st opStorage) SetUserinfoFromScopes(ctx context.Context, ui *oidc.UserInfo, userID, _ string, scopes []string) error {
	r := reqOf(ctx)
	id, err := uuid.Parse(userID)
	if err != nil {
		return oidc.ErrInvalidRequest()
	}
	if r.user != nil && r.user.ID == id {
		setUserinfo(ui, *r.user, scopes)
		return nil
	}
	var u queries.AppUser
	err = st.s.db.Once(ctx, r.t, func(q *queries.Queries) (err error) {
		u, err = q.GetUser(ctx, queries.GetUserParams{TenantID: r.t.ID.UUID(), ID: id})
		return err
	})
	if err != nil {
		return r.fail(fmt.Errorf("userinfo: %w", err))
	}
	setUserinfo(ui, u, scopes)
	return nil
}

func setUserinfo(ui *oidc.UserInfo, u queries.AppUser, scopes []string) {
	ui.Subject = u.ID.String()
	if slices.Contains(scopes, oidc.ScopeEmail) {
		ui.Email = u.Email
		ui.EmailVerified = oidc.Bool(u.EmailVerifiedAt != nil)
	}
	if slices.Contains(scopes, oidc.ScopeProfile) {
		ui.Name = u.DisplayName
		ui.PreferredUsername = u.Email
		ui.UpdatedAt = oidc.FromTime(u.UpdatedAt)
	}
}

// SetUserinfoFromToken answers userinfo for a user's access token whose
// session still stands, with what its scopes allow.
func (st opStorage) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, id, subject, _ string) error {
	sess, app, _, ok := parseTokenID(id)
	if !ok || app {
		return errSessionEnded
	}
	row, err := st.liveSession(ctx, sess, subject)
	if err != nil {
		return err
	}
	setUserinfo(ui, row.AppUser, row.AppSession.Scopes)
	return nil
}

// liveSession returns the session behind a user's access token, if it
// still stands.
func (st opStorage) liveSession(ctx context.Context, sess uuid.UUID, subject string) (queries.GetLiveAppSessionRow, error) {
	r := reqOf(ctx)
	var row queries.GetLiveAppSessionRow
	err := st.s.db.Once(ctx, r.t, func(q *queries.Queries) (err error) {
		row, err = q.GetLiveAppSession(ctx, queries.GetLiveAppSessionParams{TenantID: r.t.ID.UUID(), ID: sess})
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (row.AppUser.ID.String() != subject || !st.s.now().Before(row.AppSession.ExpiresAt))) {
		return queries.GetLiveAppSessionRow{}, errSessionEnded
	}
	if err != nil {
		return queries.GetLiveAppSessionRow{}, r.fail(err)
	}
	return row, nil
}

// SetIntrospectionFromToken describes an active token to the app it was
// issued to; to any other app every token is inactive.
func (st opStorage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, id, subject, clientID string) error {
	r := reqOf(ctx)
	sess, app, exp, ok := parseTokenID(id)
	if !ok || (app && subject != clientID) {
		return errInactive
	}
	var row queries.GetLiveAppSessionRow
	if !app {
		var err error
		if row, err = st.liveSession(ctx, sess, subject); err != nil {
			return err
		}
		if row.AppSession.ClientID == nil || *row.AppSession.ClientID != clientID {
			return errInactive
		}
	}
	// Active, and the asking app's own: only now is anything told.
	resp.Issuer = st.s.cfg.Issuer(r.t)
	resp.JWTID = id
	resp.TokenType = oidc.BearerToken
	resp.Expiration = oidc.FromTime(exp)
	resp.Audience = oidc.Audience{clientID}
	resp.ClientID = clientID
	resp.Subject = subject
	if app {
		return nil // the app is enabled: it just authenticated
	}
	ui := new(oidc.UserInfo)
	setUserinfo(ui, row.AppUser, row.AppSession.Scopes)
	resp.SetUserInfo(ui)
	resp.Scope = row.AppSession.Scopes
	if row.AppSession.AuthTime != nil {
		resp.AuthTime = oidc.FromTime(*row.AppSession.AuthTime)
	}
	resp.AuthenticationMethodsReferences = row.AppSession.Amr
	return nil
}

var (
	errInactive     = errors.New("inactive token")
	errSessionEnded = oidc.ErrAccessDenied().WithDescription("the token's session has ended")
)

// GetPrivateClaimsFromScopes is not reached: GetPrivateClaimsFromRequest
// is.
func (st opStorage) GetPrivateClaimsFromScopes(ctx context.Context, _, _ string, _ []string) (map[string]any, error) {
	return map[string]any{"tid": reqOf(ctx).t.ID.String()}, nil
}

// GetPrivateClaimsFromRequest adds the tenant to access tokens.
func (st opStorage) GetPrivateClaimsFromRequest(ctx context.Context, _ op.TokenRequest, _ []string) (map[string]any, error) {
	return map[string]any{"tid": reqOf(ctx).t.ID.String()}, nil
}

// GetKeyByIDAndClientID returns a key clientID registered for
// private_key_jwt.
func (st opStorage) GetKeyByIDAndClientID(ctx context.Context, kid, clientID string) (*jose.JSONWebKey, error) {
	r := reqOf(ctx)
	keys, err := st.s.ClientKeys(ctx, r.t, clientID)
	if err != nil {
		if problem.CodeOf(err) == problem.Unauthorized {
			return nil, oidc.ErrInvalidClient()
		}
		return nil, r.fail(err)
	}
	for _, k := range keys {
		if k.Kid == kid || (kid == "" && len(keys) == 1) {
			return &jose.JSONWebKey{Key: k.Key, KeyID: k.Kid, Algorithm: k.Alg, Use: "sig"}, nil
		}
	}
	return nil, oidc.ErrInvalidClient().WithDescription("no registered key has this kid")
}

// ValidateJWTProfileScopes: the JWT bearer grant is not offered.
func (opStorage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, oidc.ErrUnsupportedGrantType()
}

// ClientCredentials authenticates a machine app by its secret.
func (st opStorage) ClientCredentials(ctx context.Context, clientID, secret string) (op.Client, error) {
	if err := st.AuthorizeClientIDSecret(ctx, clientID, secret); err != nil {
		return nil, err
	}
	return st.GetClientByClientID(ctx, clientID)
}

// ClientCredentialsTokenRequest is a machine app's grant for itself.
func (st opStorage) ClientCredentialsTokenRequest(ctx context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	a, err := st.app(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if a.Kind != AppMachine {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("only machine apps may use client_credentials")
	}
	granted := slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return !slices.Contains(a.Scopes, s) })
	return &appTokenRequest{clientID: a.ClientID, scopes: granted, ttl: a.tokenTTL(reqOf(ctx).t)}, nil
}

func (opStorage) Health(context.Context) error { return nil }

// authRequest is a stored authorization request as op sees it.
type authRequest struct{ row queries.AppOidcAuthRequest }

func (a *authRequest) GetID() string          { return a.row.ID.String() }
func (a *authRequest) GetACR() string         { return "" }
func (a *authRequest) GetAMR() []string       { return a.row.Amr }
func (a *authRequest) GetAudience() []string  { return []string{a.row.ClientID} }
func (a *authRequest) GetClientID() string    { return a.row.ClientID }
func (a *authRequest) GetRedirectURI() string { return a.row.RedirectUri }
func (a *authRequest) GetScopes() []string    { return a.row.Scopes }
func (a *authRequest) Done() bool             { return a.row.UserID != nil }
func (a *authRequest) GetNonce() string       { return deref(a.row.Nonce) }
func (a *authRequest) GetState() string       { return deref(a.row.State) }
func (a *authRequest) GetResponseType() oidc.ResponseType {
	return oidc.ResponseTypeCode
}
func (a *authRequest) GetResponseMode() oidc.ResponseMode {
	return oidc.ResponseMode(deref(a.row.ResponseMode))
}

func (a *authRequest) GetAuthTime() time.Time {
	if a.row.AuthTime == nil {
		return time.Time{}
	}
	return *a.row.AuthTime
}

func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.row.CodeChallenge == nil {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: *a.row.CodeChallenge, Method: oidc.CodeChallengeMethodS256}
}

func (a *authRequest) GetSubject() string {
	if a.row.UserID == nil {
		return ""
	}
	return a.row.UserID.String()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// opRefresh is an app's refresh token's session as op sees it.
type opRefresh struct {
	session queries.GetRefreshSessionRow
	ttl     time.Duration
	scopes  []string
}

func (r *opRefresh) GetAMR() []string      { return r.session.Amr }
func (r *opRefresh) GetAudience() []string { return []string{*r.session.ClientID} }
func (r *opRefresh) GetClientID() string   { return *r.session.ClientID }
func (r *opRefresh) GetSubject() string    { return r.session.UserID.String() }
func (r *opRefresh) GetAuthTime() time.Time {
	if r.session.AuthTime == nil {
		return r.session.CreatedAt
	}
	return *r.session.AuthTime
}

func (r *opRefresh) GetScopes() []string {
	if r.scopes != nil {
		return r.scopes
	}
	return r.session.Scopes
}

// SetCurrentScopes narrows this refresh's tokens; the session keeps its
// grant.
func (r *opRefresh) SetCurrentScopes(scopes []string) { r.scopes = scopes }

// appTokenRequest is a machine app's client_credentials grant.
type appTokenRequest struct {
	clientID string
	scopes   []string
	ttl      time.Duration
}

func (r *appTokenRequest) GetSubject() string    { return r.clientID }
func (r *appTokenRequest) GetAudience() []string { return []string{r.clientID} }
func (r *appTokenRequest) GetScopes() []string   { return r.scopes }

// opClient is an app as op sees it.
type opClient struct{ a *App }

func (c opClient) GetID() string                       { return c.a.ClientID }
func (c opClient) RedirectURIs() []string              { return c.a.RedirectURIs }
func (c opClient) PostLogoutRedirectURIs() []string    { return c.a.PostLogoutRedirectURIs }
func (c opClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethod(c.a.TokenEndpointAuthMethod) }
func (c opClient) LoginURL(id string) string           { return oauthLogin + "?id=" + id }
func (c opClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (c opClient) IDTokenLifetime() time.Duration      { return idTokenTTL }
func (c opClient) DevMode() bool                       { return false }
func (c opClient) ClockSkew() time.Duration            { return 0 }
func (c opClient) IsScopeAllowed(s string) bool        { return slices.Contains(c.a.Scopes, s) }

// IDTokenUserinfoClaimsAssertion: ID tokens carry the profile and email
// claims the scopes allow, as apps expect, not only userinfo.
func (c opClient) IDTokenUserinfoClaimsAssertion() bool { return true }

func (c opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (c opClient) ApplicationType() op.ApplicationType {
	switch c.a.Kind {
	case AppSPA:
		return op.ApplicationTypeUserAgent
	case AppNative:
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}

func (c opClient) ResponseTypes() []oidc.ResponseType {
	if !interactive(c.a.Kind) {
		return nil
	}
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (c opClient) GrantTypes() []oidc.GrantType {
	out := make([]oidc.GrantType, len(c.a.GrantTypes))
	for i, g := range c.a.GrantTypes {
		out[i] = oidc.GrantType(g)
	}
	return out
}

// appClaims are the claims of a machine app's own access token.
type appClaims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Tenant   string `json:"tid"`
}

// isAppToken reports whether token, unverified, reads as a machine app's
// own access token (its subject is its client), so that a caller can tell
// which verification it needs.
func isAppToken(token string) bool {
	var c appClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &c); err != nil {
		return false
	}
	return c.ClientID != "" && c.Subject == c.ClientID
}

// AuthenticateApp verifies a machine app's own access token
// (client_credentials) presented to tenant t, and that the app is still
// an enabled machine app of t, and returns its principal. Returns
// Unauthorized for any token that does not pass, Unavailable.
func (s *Service) AuthenticateApp(ctx context.Context, t *tenancy.Tenant, token string) (*Principal, error) {
	bad := problem.Errorf(problem.Unauthorized, "invalid or expired access token")
	var c appClaims
	_, err := jwt.ParseWithClaims(token, &c, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		return s.keys.key(ctx, t, kid) // a key verifies only with its own method
	}, jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg(), jwt.SigningMethodRS256.Alg()}), jwt.WithIssuer(s.cfg.Issuer(t)),
		jwt.WithExpirationRequired(), jwt.WithLeeway(Leeway))
	if err != nil {
		if errors.Is(err, jwt.ErrTokenUnverifiable) && !errors.Is(err, ErrUnknownKey) {
			return nil, problem.Wrap(problem.Unavailable, err, "signing keys unavailable, try again later")
		}
		return nil, bad
	}
	if c.Tenant != t.ID.String() || c.Subject != c.ClientID || !slices.Contains(c.Audience, c.ClientID) || !strings.HasPrefix(c.ID, "app.") {
		return nil, bad
	}
	a, err := s.AppByClientID(ctx, t, c.ClientID)
	if problem.CodeOf(err) == problem.NotFound || (err == nil && (a.Disabled || a.Kind != AppMachine)) {
		return nil, bad
	}
	if err != nil {
		return nil, err
	}
	return &Principal{App: a.ID}, nil
}
