package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/gatehouse/gatehouse/queries"
)

// oidcServer is the provider's protocol: op's LegacyServer over the
// storage, with client authentication of its own for private_key_jwt.
// op verifies client assertions signed RS256 alone; apps register RSA, EC
// and Ed25519 keys, and each key signs with its own algorithm.
type oidcServer struct {
	*op.LegacyServer
	svc      *Service
	provider *op.Provider
}

// newOIDCHandler returns the HTTP handler of the provider's endpoints.
func newOIDCHandler(svc *Service, p *op.Provider, cors op.ServerOption) http.Handler {
	endpoint := func(path string) *op.Endpoint { return op.NewEndpoint(path[1:]) }
	s := oidcServer{LegacyServer: op.NewLegacyServer(p, op.Endpoints{
		Authorization: endpoint(oauthAuthorize), Token: endpoint(oauthToken), Introspection: endpoint(oauthIntrospect),
		Userinfo: endpoint(oauthUserinfo), Revocation: endpoint(oauthRevoke), EndSession: endpoint(oauthEndSession),
	}), svc: svc, provider: p}
	return op.RegisterLegacyServer(s, op.AuthorizeCallbackHandler(p), cors)
}

// VerifyClient authenticates the client of a token or revocation request.
func (s oidcServer) VerifyClient(ctx context.Context, r *op.Request[op.ClientCredentials]) (op.Client, error) {
	if r.Data.ClientAssertionType == oidc.ClientAssertionTypeJWTAssertion {
		return s.assertedClient(ctx, r.Data.ClientAssertion)
	}
	return s.LegacyServer.VerifyClient(ctx, r)
}

// Introspect answers an authenticated app about a token (RFC 7662): only
// about its own (opStorage.SetIntrospectionFromToken); public apps, which
// cannot authenticate, learn nothing.
func (s oidcServer) Introspect(ctx context.Context, r *op.Request[op.IntrospectionRequest]) (*op.Response, error) {
	if r.Data.ClientCredentials == nil {
		return nil, oidc.ErrInvalidClient()
	}
	client, err := s.VerifyClient(ctx, &op.Request[op.ClientCredentials]{Method: r.Method, URL: r.URL, Header: r.Header, Form: r.Form, Data: r.Data.ClientCredentials})
	if err != nil {
		return nil, err
	}
	if client.AuthMethod() == oidc.AuthMethodNone {
		return nil, oidc.ErrInvalidClient().WithDescription("introspection needs an app that authenticates")
	}
	resp := new(oidc.IntrospectionResponse)
	claims, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, r.Data.Token, s.provider.AccessTokenVerifier(ctx))
	if err == nil && s.provider.Storage().SetIntrospectionFromToken(ctx, resp, claims.JWTID, claims.Subject, client.GetID()) == nil {
		resp.Active = true
	} else {
		*resp = oidc.IntrospectionResponse{}
	}
	return op.NewResponse(resp), nil
}

// A client assertion is made for one request: issued (iat, required) at
// most assertionMaxAge ago, valid for at most assertionMaxLife, its id
// (jti, required) used once.
const (
	assertionMaxAge  = 5 * time.Minute
	assertionMaxLife = 10 * time.Minute
)

// assertedClient authenticates an app by its client assertion (RFC 7523):
// a JWT it signed with one of the keys it registered, naming itself as
// issuer and subject, the tenant's issuer (or its token endpoint) as
// audience, and not expired.
func (s oidcServer) assertedClient(ctx context.Context, assertion string) (op.Client, error) {
	bad := oidc.ErrInvalidClient().WithDescription("invalid client assertion")
	r := reqOf(ctx)
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(assertion, &c); err != nil || c.Issuer == "" || c.Subject != c.Issuer {
		return nil, bad
	}
	keys, err := s.svc.ClientKeys(ctx, r.t, c.Issuer)
	if err != nil {
		if errors.Is(err, errBadClient) {
			return nil, bad
		}
		return nil, r.fail(err)
	}
	iss := s.svc.cfg.Issuer(r.t)
	var checked jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(assertion, &checked, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		for _, k := range keys {
			if (k.Kid == kid || (kid == "" && len(keys) == 1)) && algFits(k, tok.Method.Alg()) {
				return k.Key, nil
			}
		}
		return nil, errors.New("no registered key signs this assertion")
	}, jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(Leeway), jwt.WithIssuer(c.Issuer), jwt.WithSubject(c.Issuer),
		jwt.WithValidMethods([]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}))
	if err != nil || !slices.ContainsFunc(checked.Audience, func(a string) bool { return a == iss || a == iss+oauthToken }) ||
		checked.IssuedAt == nil || time.Since(checked.IssuedAt.Time) > assertionMaxAge ||
		checked.ExpiresAt.Sub(checked.IssuedAt.Time) > assertionMaxLife || checked.ID == "" || len(checked.ID) > 256 {
		return nil, bad
	}
	// Once: a copy from a log or a proxy authenticates nothing.
	var fresh int64
	err = s.svc.db.Tx(ctx, r.t, func(q *queries.Queries) (err error) {
		fresh, err = q.SpendClientAssertion(ctx, queries.SpendClientAssertionParams{TenantID: r.t.ID.UUID(), ClientID: c.Issuer,
			Jti: checked.ID, ExpiresAt: checked.ExpiresAt.Time.Add(Leeway)})
		if err == nil && rand.IntN(100) == 0 {
			err = q.PruneClientAssertions(ctx, r.t.ID.UUID())
		}
		return err
	})
	if err != nil {
		return nil, r.fail(fmt.Errorf("client assertion: %w", err))
	}
	if fresh == 0 {
		return nil, oidc.ErrInvalidClient().WithDescription("this client assertion was used before")
	}
	return opStorage{s.svc}.GetClientByClientID(ctx, c.Issuer)
}

// algFits reports whether key k may verify a signature of algorithm alg:
// the key's own algorithm if it names one, else any of its type's.
func algFits(k ClientKey, alg string) bool {
	if k.Alg != "" {
		return k.Alg == alg
	}
	switch key := k.Key.(type) {
	case *rsa.PublicKey:
		return alg[:2] == "RS" || alg[:2] == "PS"
	case *ecdsa.PublicKey:
		return alg == map[int]string{256: "ES256", 384: "ES384", 521: "ES512"}[key.Curve.Params().BitSize]
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// CodeExchange redeems the code (opStorage.redeem: every check and the
// session in one transaction, the signing key at hand first, so that
// nothing fails after the code is spent), then makes the tokens.
func (s oidcServer) CodeExchange(ctx context.Context, r *op.ClientRequest[oidc.AccessTokenRequest]) (*op.Response, error) {
	st := opStorage{s.svc}
	if _, err := st.SigningKey(ctx); err != nil {
		return nil, err
	}
	authReq, err := st.redeem(ctx, r.Data.Code, r.Client.GetID(), r.Data.RedirectURI, r.Data.CodeVerifier)
	if err != nil {
		return nil, err
	}
	resp, err := op.CreateTokenResponse(ctx, authReq, r.Client, s.provider, true, r.Data.Code, "")
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

// Revocation is RFC 7009's: a refresh token of the asking app's, or an
// access token verified as the tenant's, ends its session. op hands a
// token that is neither to the storage as it is, which would let a
// session's id, read off any old token, stand for the token itself.
func (s oidcServer) Revocation(ctx context.Context, r *op.ClientRequest[oidc.RevocationRequest]) (*op.Response, error) {
	st := opStorage{s.svc}
	client := r.Client.GetID()
	if r.Data.TokenTypeHint != "access_token" {
		user, id, err := st.GetRefreshTokenInfo(ctx, client, r.Data.Token)
		if err == nil {
			if err := st.RevokeToken(ctx, id, user, client); err != nil {
				return nil, op.RevocationError(err)
			}
			return op.NewResponse(nil), nil
		}
		if !errors.Is(err, op.ErrInvalidRefreshToken) {
			return nil, err
		}
	}
	claims, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, r.Data.Token, s.provider.AccessTokenVerifier(ctx))
	if err == nil {
		if err := st.RevokeToken(ctx, claims.JWTID, claims.Subject, client); err != nil {
			return nil, op.RevocationError(err)
		}
	}
	return op.NewResponse(nil), nil // an unknown token is no error (RFC 7009, section 2.2)
}
