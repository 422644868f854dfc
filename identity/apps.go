package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/queries"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Kinds of app. The kind decides how an app proves itself: a web or
// machine app is confidential (a client secret or private_key_jwt), a spa
// or native app is public (no secret it could keep; PKCE instead). It
// cannot change: register a new app.
const (
	AppWeb     = "web"     // a server-side web app: authorization code, confidential
	AppSPA     = "spa"     // a browser app: authorization code with PKCE, public
	AppNative  = "native"  // a desktop or mobile app: authorization code with PKCE, public
	AppMachine = "machine" // a service acting as itself: client_credentials only
)

// Grant types an app may be allowed.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"
)

// Token endpoint authentication methods (RFC 7591's names).
const (
	AuthSecretBasic   = "client_secret_basic"
	AuthSecretPost    = "client_secret_post"
	AuthPrivateKeyJWT = "private_key_jwt"
	AuthNone          = "none"
)

// ID token signing algorithms an app may ask for.
const (
	AlgEdDSA = "EdDSA"
	AlgRS256 = "RS256"
)

// Client secret rotation: the replaced secret stays valid for an overlap
// (DefaultSecretOverlap unless the rotation says otherwise, at most
// MaxSecretOverlap; 0 ends it at once, for a leaked secret).
const (
	DefaultSecretOverlap = 24 * time.Hour
	MaxSecretOverlap     = 7 * 24 * time.Hour
)

// Limits of a registration.
const (
	maxAppsPerTenant   = 200
	maxAppURIs         = 10
	maxAppURILen       = 2000
	minAppTokenTTL     = time.Minute
	maxAppTokenTTL     = 24 * time.Hour
	maxClientSecretLen = 128
)

// manageApps is the tenant permission the app API needs (admins hold it).
const manageApps = "manage_apps"

var appScopes = []string{"openid", "profile", "email", "offline_access"}

// App is an OpenID Connect app (a relying party) of a tenant as admins see
// it. It never holds a secret: Secrets says which are valid and until
// when, nothing more.
type App struct {
	ID                      uuid.UUID `json:"id"`
	ClientID                string    `json:"client_id"`
	Name                    string    `json:"name"`
	Kind                    string    `json:"kind"`
	TokenEndpointAuthMethod string    `json:"token_endpoint_auth_method"`
	// PKCERequired: the authorization endpoint will refuse the app's
	// requests without a code challenge (S256).
	PKCERequired           bool     `json:"pkce_required"`
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris"`
	GrantTypes             []string `json:"grant_types"`
	Scopes                 []string `json:"scopes"`
	// AccessTokenTTL is the lifetime of the app's access tokens in
	// seconds; 0: the tenant's.
	AccessTokenTTL int `json:"access_token_ttl_seconds"`
	// FirstParty apps are the tenant's own: users are not asked to
	// consent. Only admins register and change them.
	FirstParty bool            `json:"first_party"`
	IDTokenAlg string          `json:"id_token_signed_response_alg"`
	JWKS       json.RawMessage `json:"jwks,omitempty"`
	Disabled   bool            `json:"disabled"`
	Secrets    []AppSecret     `json:"secrets"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

// AppSecret describes one valid client secret of an app: when it was
// made and, once a rotation replaced it, when it stops working.
type AppSecret struct {
	ID        uuid.UUID  `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// CreatedApp is a new app with its client secret, which is shown here
// once and never again ("" for apps without one).
type CreatedApp struct {
	*App
	ClientSecret string `json:"client_secret,omitempty"`
}

// RotatedSecret is an app's new client secret, shown once, and until
// when the one it replaced stays valid (nil: not at all).
type RotatedSecret struct {
	ClientSecret            string     `json:"client_secret"`
	PreviousSecretExpiresAt *time.Time `json:"previous_secret_expires_at,omitempty"`
}

// AppInput is what an app is registered with. Empty fields take the
// kind's defaults: token endpoint authentication client_secret_basic
// (web, machine) or none (spa, native); grant types authorization_code
// (client_credentials for machine apps); scopes openid, profile and email
// (none for machine apps); the tenant's access-token lifetime; EdDSA ID
// tokens.
type AppInput struct {
	Name                    string
	Kind                    string
	TokenEndpointAuthMethod string
	RedirectURIs            []string
	PostLogoutRedirectURIs  []string
	GrantTypes              []string
	Scopes                  []string
	AccessTokenTTL          time.Duration // 0: the tenant's; else 1m to 24h, whole seconds
	FirstParty              bool
	IDTokenAlg              string
	JWKS                    json.RawMessage // the public keys of a private_key_jwt app
	Disabled                bool
}

// AppChange is a change of an app's settings: nil fields stay as they
// are. An app's kind, client id and authentication method do not change.
type AppChange struct {
	Name                   *string
	RedirectURIs           *[]string
	PostLogoutRedirectURIs *[]string
	GrantTypes             *[]string
	Scopes                 *[]string
	AccessTokenTTL         *time.Duration // 0: back to the tenant's
	FirstParty             *bool
	IDTokenAlg             *string
	JWKS                   json.RawMessage
	Disabled               *bool
}

// fields names the fields ch changes, sorted.
func (ch AppChange) fields() []string {
	var f []string
	add := func(set bool, name string) {
		if set {
			f = append(f, name)
		}
	}
	add(ch.AccessTokenTTL != nil, "access_token_ttl_seconds")
	add(ch.Disabled != nil, "disabled")
	add(ch.FirstParty != nil, "first_party")
	add(ch.GrantTypes != nil, "grant_types")
	add(ch.IDTokenAlg != nil, "id_token_signed_response_alg")
	add(ch.JWKS != nil, "jwks")
	add(ch.Name != nil, "name")
	add(ch.PostLogoutRedirectURIs != nil, "post_logout_redirect_uris")
	add(ch.RedirectURIs != nil, "redirect_uris")
	add(ch.Scopes != nil, "scopes")
	return f
}

// errFirstParty refuses a change of a first-party app to whoever is not
// an admin: such an app signs users in without asking them, so pointing
// it elsewhere, or taking its secret, would give its author what users
// never agreed to.
var errFirstParty = problem.Errorf(problem.Forbidden,
	"first-party apps sign users in without asking for consent: only admins register, change, rotate or delete them")

// errNeedsAdmin tells appTx that a change touches a first-party app.
var errNeedsAdmin = errors.New("first-party app: admins only")

// errBadClient answers every failed client authentication alike: unknown
// client, disabled app, wrong or expired secret, an app without secrets.
var errBadClient = problem.Errorf(problem.Unauthorized, "invalid client credentials")

// appTx runs fn in one transaction of tenant t for an app action by p: a
// holder of manage_apps, or nil for a platform operator (the CLI), who
// needs no permission. fn learns whether the caller is an admin; it
// returns errNeedsAdmin when the action touches a first-party app and it
// does not know yet, and then runs again under the administer
// permission (the denial audited like any other).
func (s *Service) appTx(ctx context.Context, t *tenancy.Tenant, p *Principal, action string, meta Meta, fn func(q *queries.Queries, admin bool) error) (err error) {
	// Whatever committed, the protocol endpoints of every server stop
	// using what they kept of the tenant's apps.
	defer func() {
		if err == nil {
			s.appsChanged(ctx, t.ID)
		}
	}()
	if p == nil {
		return s.db.Tx(ctx, t, func(q *queries.Queries) error { return fn(q, true) })
	}
	err = s.GuardedTx(ctx, t, p, action, "", "", manageApps, meta, func(q *queries.Queries) error { return fn(q, false) })
	if !errors.Is(err, errNeedsAdmin) {
		return err
	}
	err = s.GuardedTx(ctx, t, p, action, "", "", adminPermission, meta, func(q *queries.Queries) error { return fn(q, true) })
	if problem.CodeOf(err) == problem.Forbidden {
		return errFirstParty
	}
	return err
}

// appRead runs fn in a transaction of t for a reading action by p (nil:
// an operator).
func (s *Service) appRead(ctx context.Context, t *tenancy.Tenant, p *Principal, action string, meta Meta, fn func(q *queries.Queries) error) error {
	if p == nil {
		return s.db.Tx(ctx, t, fn)
	}
	return s.GuardedTx(ctx, t, p, action, "", "", manageApps, meta, fn)
}

// appEvent is the audit event of an app action by p (nil: an operator).
func appEvent(p *Principal, action string, id uuid.UUID, meta Meta, details map[string]string) Event {
	e := Event{Action: action, Target: "app:" + id.String(), Outcome: Success, Meta: meta, Details: details}
	if p == nil {
		details["by"] = "operator"
	} else {
		e.Actor = p.User
	}
	return e
}

// CreateApp registers an app in tenant t and, for an app that
// authenticates with a client secret, makes its first secret, which the
// answer alone carries. p is the signed-in caller (manage_apps; a
// first-party app needs an admin), or nil for a platform operator.
// Returns Invalid naming the field for bad input, Conflict when the
// tenant has the most apps it may, Forbidden, Unauthorized if p's session
// ended, Unavailable.
func (s *Service) CreateApp(ctx context.Context, t *tenancy.Tenant, p *Principal, in AppInput, meta Meta) (*CreatedApp, error) {
	st, err := newAppSettings(in)
	if err != nil {
		return nil, err
	}
	clientID := newClientID()
	id := uuid.New()
	var secret string
	var secretHash []byte
	if st.hasSecret() {
		secret, secretHash = newRefreshToken() // 256 random bits and their SHA-256
	}
	var created *App
	err = s.appTx(ctx, t, p, "app.create", meta, func(q *queries.Queries, admin bool) error {
		if st.firstParty && !admin {
			return errNeedsAdmin
		}
		n, err := q.CountApps(ctx, t.ID.UUID())
		if err != nil {
			return err
		}
		if n >= maxAppsPerTenant {
			return problem.Errorf(problem.Conflict, "the tenant has %d apps, the most it may have: delete one first", maxAppsPerTenant)
		}
		now := s.now()
		row, err := q.CreateApp(ctx, queries.CreateAppParams{
			TenantID: t.ID.UUID(), ID: id, ClientID: clientID, Name: st.name, Kind: st.kind,
			TokenEndpointAuthMethod: st.authMethod, RedirectUris: st.redirectURIs, PostLogoutRedirectUris: st.postLogoutURIs,
			GrantTypes: st.grantTypes, Scopes: st.scopes, AccessTokenTtl: st.ttl(), FirstParty: st.firstParty,
			IDTokenAlg: st.idTokenAlg, Jwks: st.jwks, Disabled: st.disabled, At: now,
		})
		if err != nil {
			return err
		}
		created = appFromRow(row)
		if secretHash != nil {
			if err := q.AddAppSecret(ctx, queries.AddAppSecretParams{TenantID: t.ID.UUID(), AppID: id, SecretHash: secretHash, CreatedAt: now}); err != nil {
				return err
			}
			if err := created.withSecrets(ctx, q, t, now); err != nil {
				return err
			}
		}
		return appendAudit(ctx, q, t.ID.UUID(), now, appEvent(p, "app.create", id, meta, map[string]string{
			"client_id": clientID, "name": st.name, "kind": st.kind,
			"first_party": strconv.FormatBool(st.firstParty), "token_endpoint_auth_method": st.authMethod,
		}))
	})
	if err != nil {
		return nil, err
	}
	return &CreatedApp{App: created, ClientSecret: secret}, nil
}

// ListApps returns tenant t's apps by name. p needs manage_apps (nil: an
// operator).
func (s *Service) ListApps(ctx context.Context, t *tenancy.Tenant, p *Principal, meta Meta) ([]*App, error) {
	apps := []*App{}
	err := s.appRead(ctx, t, p, "app.list", meta, func(q *queries.Queries) error {
		rows, err := q.ListApps(ctx, t.ID.UUID())
		if err != nil {
			return err
		}
		secrets, err := appSecrets(ctx, q, t, nil, s.now())
		if err != nil {
			return err
		}
		byApp := map[uuid.UUID][]AppSecret{}
		for _, sc := range secrets {
			byApp[sc.appID] = append(byApp[sc.appID], sc.AppSecret)
		}
		for _, r := range rows {
			a := appFromRow(r)
			if len(byApp[a.ID]) > 0 {
				a.Secrets = byApp[a.ID]
			}
			apps = append(apps, a)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return apps, nil
}

// GetApp returns one of tenant t's apps. p needs manage_apps (nil: an
// operator). Returns NotFound if t has no such app (another tenant's
// apps included).
func (s *Service) GetApp(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) (*App, error) {
	var a *App
	err := s.appRead(ctx, t, p, "app.get", meta, func(q *queries.Queries) error {
		row, err := q.GetApp(ctx, queries.GetAppParams{TenantID: t.ID.UUID(), ID: id})
		if err = queries.NotFound(err, "no such app"); err != nil {
			return err
		}
		a = appFromRow(row)
		return a.withSecrets(ctx, q, t, s.now())
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// UpdateApp changes one of tenant t's apps; the whole app must keep the
// rules CreateApp checks. p needs manage_apps, and an admin for a
// first-party app or to make one (nil: an operator). Returns NotFound,
// Invalid naming the field, Forbidden, Unauthorized, Unavailable.
func (s *Service) UpdateApp(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, ch AppChange, meta Meta) (*App, error) {
	changed := ch.fields()
	if len(changed) == 0 {
		return nil, problem.Errorf(problem.Invalid, "nothing to change: give at least one of the app's settings")
	}
	var a *App
	err := s.appTx(ctx, t, p, "app.update", meta, func(q *queries.Queries, admin bool) error {
		row, err := q.LockApp(ctx, queries.LockAppParams{TenantID: t.ID.UUID(), ID: id})
		if err = queries.NotFound(err, "no such app"); err != nil {
			return err
		}
		if !admin && (row.FirstParty || (ch.FirstParty != nil && *ch.FirstParty)) {
			return errNeedsAdmin
		}
		st, err := changedAppSettings(row, ch)
		if err != nil {
			return err
		}
		now := s.now()
		row, err = q.UpdateApp(ctx, queries.UpdateAppParams{
			TenantID: t.ID.UUID(), ID: id, Name: st.name, RedirectUris: st.redirectURIs, PostLogoutRedirectUris: st.postLogoutURIs,
			GrantTypes: st.grantTypes, Scopes: st.scopes, AccessTokenTtl: st.ttl(), FirstParty: st.firstParty,
			IDTokenAlg: st.idTokenAlg, Jwks: st.jwks, Disabled: st.disabled, At: now,
		})
		if err != nil {
			return err
		}
		a = appFromRow(row)
		if err := a.withSecrets(ctx, q, t, now); err != nil {
			return err
		}
		details := map[string]string{"client_id": row.ClientID, "changed": strings.Join(changed, ",")}
		if ch.Disabled != nil {
			details["disabled"] = strconv.FormatBool(*ch.Disabled)
		}
		if ch.FirstParty != nil {
			details["first_party"] = strconv.FormatBool(*ch.FirstParty)
		}
		return appendAudit(ctx, q, t.ID.UUID(), now, appEvent(p, "app.update", id, meta, details))
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// DeleteApp deletes one of tenant t's apps with its secrets. p needs
// manage_apps, and an admin for a first-party app (nil: an operator).
// Returns NotFound, Forbidden, Unauthorized, Unavailable.
func (s *Service) DeleteApp(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, meta Meta) error {
	err := s.appTx(ctx, t, p, "app.delete", meta, func(q *queries.Queries, admin bool) error {
		row, err := q.LockApp(ctx, queries.LockAppParams{TenantID: t.ID.UUID(), ID: id})
		if err = queries.NotFound(err, "no such app"); err != nil {
			return err
		}
		if row.FirstParty && !admin {
			return errNeedsAdmin
		}
		if row.Kind == AppMachine {
			if err := s.cfg.Authorizer.ForgetApp(ctx, q, t, id); err != nil {
				return err
			}
		}
		if _, err := q.DeleteApp(ctx, queries.DeleteAppParams{TenantID: t.ID.UUID(), ID: id}); err != nil {
			return err
		}
		return appendAudit(ctx, q, t.ID.UUID(), s.now(), appEvent(p, "app.delete", id, meta, map[string]string{
			"client_id": row.ClientID, "name": row.Name,
		}))
	})
	if err != nil {
		return err
	}
	s.cfg.Authorizer.Flush(ctx, t)
	return nil
}

// RotateAppSecret gives one of tenant t's apps a new client secret,
// returned here once. The secret it replaces stays valid for overlap
// (0 to MaxSecretOverlap; 0 ends it at once) so the app's servers can
// change over; any older one ends now, so at most two are ever valid.
// p needs manage_apps, and an admin for a first-party app (nil: an
// operator). Returns NotFound, Invalid for a bad overlap, Conflict for an
// app without secrets, Forbidden, Unauthorized, Unavailable.
func (s *Service) RotateAppSecret(ctx context.Context, t *tenancy.Tenant, p *Principal, id uuid.UUID, overlap time.Duration, meta Meta) (*RotatedSecret, error) {
	if overlap < 0 || overlap > MaxSecretOverlap || overlap%time.Second != 0 {
		return nil, problem.InvalidField("overlap_seconds", fmt.Sprintf("must be whole seconds from 0 to %d (7 days)", int(MaxSecretOverlap/time.Second)))
	}
	secret, hash := newRefreshToken()
	var out *RotatedSecret
	err := s.appTx(ctx, t, p, "app.secret.rotate", meta, func(q *queries.Queries, admin bool) error {
		row, err := q.LockApp(ctx, queries.LockAppParams{TenantID: t.ID.UUID(), ID: id})
		if err = queries.NotFound(err, "no such app"); err != nil {
			return err
		}
		if row.FirstParty && !admin {
			return errNeedsAdmin
		}
		switch row.TokenEndpointAuthMethod {
		case AuthNone:
			return problem.Errorf(problem.Conflict, "a %s app is public: it has no client secret", row.Kind)
		case AuthPrivateKeyJWT:
			return problem.Errorf(problem.Conflict, "this app authenticates with private_key_jwt, not a secret: change its jwks instead")
		}
		tenant := t.ID.UUID()
		now := s.now()
		out = &RotatedSecret{ClientSecret: secret}
		if err := q.DropReplacedAppSecrets(ctx, queries.DropReplacedAppSecretsParams{TenantID: tenant, AppID: id}); err != nil {
			return err
		}
		ends := "now"
		if overlap == 0 {
			err = q.DropAppSecrets(ctx, queries.DropAppSecretsParams{TenantID: tenant, AppID: id})
		} else {
			until := now.Add(overlap).UTC().Truncate(time.Microsecond)
			var n int64
			n, err = q.ExpireCurrentAppSecret(ctx, queries.ExpireCurrentAppSecretParams{TenantID: tenant, AppID: id, ExpiresAt: &until})
			if n > 0 {
				out.PreviousSecretExpiresAt = &until
				ends = until.Format(time.RFC3339)
			}
		}
		if err != nil {
			return err
		}
		if err := q.AddAppSecret(ctx, queries.AddAppSecretParams{TenantID: tenant, AppID: id, SecretHash: hash, CreatedAt: now}); err != nil {
			return err
		}
		return appendAudit(ctx, q, tenant, now, appEvent(p, "app.secret.rotate", id, meta, map[string]string{
			"client_id": row.ClientID, "previous_secret_ends": ends,
		}))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// VerifyClientSecret checks a client secret of tenant t's app clientID,
// for the token endpoint: the SHA-256 of secret against the app's valid
// secrets, in constant time, each of them. Returns Unauthorized, always
// the same, for an unknown client, a disabled app, an app without
// secrets, and a wrong or expired secret; Unavailable.
func (s *Service) VerifyClientSecret(ctx context.Context, t *tenancy.Tenant, clientID, secret string) error {
	if !validClientID(clientID) || secret == "" || len(secret) > maxClientSecretLen {
		return errBadClient
	}
	c, err := s.clients.get(ctx, t, clientID)
	if err != nil && problem.CodeOf(err) != problem.NotFound {
		return fmt.Errorf("verify client secret: %w", err)
	}
	var hashes [][]byte
	if err == nil && !c.app.Disabled {
		now := s.now()
		for _, sec := range c.secrets {
			if sec.ExpiresAt == nil || now.Before(*sec.ExpiresAt) {
				hashes = append(hashes, sec.SecretHash)
			}
		}
	}
	got := sha256.Sum256([]byte(secret))
	if len(hashes) == 0 {
		// The same work as a client with one secret; no SHA-256 is
		// known to be all zeros.
		hashes = [][]byte{make([]byte, sha256.Size)}
	}
	ok := 0
	for _, h := range hashes {
		ok |= subtle.ConstantTimeCompare(got[:], h)
	}
	if ok != 1 {
		return errBadClient
	}
	return nil
}

// AppByClientID returns tenant t's app clientID, disabled or not, for the
// protocol endpoints (which check Disabled and the redirect URIs), as
// kept in memory for a few seconds at most (clients). Callers must not
// change it. Returns NotFound for an unknown client, Unavailable.
func (s *Service) AppByClientID(ctx context.Context, t *tenancy.Tenant, clientID string) (*App, error) {
	if !validClientID(clientID) {
		return nil, problem.Errorf(problem.NotFound, "no such app")
	}
	c, err := s.clients.get(ctx, t, clientID)
	if err != nil {
		return nil, err
	}
	return c.app, nil
}

// ClientKeys returns the public keys tenant t's app clientID registered
// for private_key_jwt, to verify its client assertions with. Returns
// Unauthorized, always the same, for an unknown client, a disabled app
// and an app that authenticates otherwise; Unavailable.
func (s *Service) ClientKeys(ctx context.Context, t *tenancy.Tenant, clientID string) ([]ClientKey, error) {
	a, err := s.AppByClientID(ctx, t, clientID)
	if problem.CodeOf(err) == problem.NotFound {
		return nil, errBadClient
	}
	if err != nil {
		return nil, err
	}
	if a.Disabled || a.TokenEndpointAuthMethod != AuthPrivateKeyJWT {
		return nil, errBadClient
	}
	keys, _, err := parseJWKS(a.JWKS)
	if err != nil {
		return nil, fmt.Errorf("client keys of %s: %w", clientID, err) // stored keys were checked
	}
	return keys, nil
}

// RedirectURIAllowed reports whether uri may receive a's authorization
// responses: it must be one of a's redirect URIs, character for
// character; only a native app's loopback URI (http://127.0.0.1/… or
// http://[::1]/…, registered without a port) matches whatever port uri
// names, as RFC 8252 (section 7.3) asks: the app listens on a port the
// system gives it.
func (a *App) RedirectURIAllowed(uri string) bool {
	return a.uriAllowed(a.RedirectURIs, uri)
}

// PostLogoutRedirectURIAllowed is RedirectURIAllowed for where an app may
// send users after they sign out.
func (a *App) PostLogoutRedirectURIAllowed(uri string) bool {
	return a.uriAllowed(a.PostLogoutRedirectURIs, uri)
}

func (a *App) uriAllowed(registered []string, uri string) bool {
	if slices.Contains(registered, uri) {
		return true
	}
	if a.Kind != AppNative {
		return false
	}
	for _, prefix := range []string{"http://127.0.0.1:", "http://[::1]:"} {
		rest, ok := strings.CutPrefix(uri, prefix)
		if !ok {
			continue
		}
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		port := rest[:end]
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || len(port) > 5 || strings.TrimLeft(port, "0123456789") != "" {
			return false
		}
		// What is left starts http://127.0.0.1 or http://[::1]: a
		// registered URI equal to it is a loopback one.
		return slices.Contains(registered, strings.TrimSuffix(prefix, ":")+rest[end:])
	}
	return false
}

// appSettings is an app's settings, checked and with defaults filled.
type appSettings struct {
	name, kind, authMethod       string
	redirectURIs, postLogoutURIs []string
	grantTypes, scopes           []string
	tokenTTL                     time.Duration
	firstParty                   bool
	idTokenAlg                   string
	jwks                         []byte
	disabled                     bool
}

func (st *appSettings) hasSecret() bool {
	return st.authMethod == AuthSecretBasic || st.authMethod == AuthSecretPost
}

func (st *appSettings) ttl() *int32 {
	if st.tokenTTL == 0 {
		return nil
	}
	n := int32(st.tokenTTL / time.Second)
	return &n
}

func interactive(kind string) bool { return kind == AppWeb || kind == AppSPA || kind == AppNative }

// newAppSettings checks a new app's input and fills in the kind's
// defaults.
func newAppSettings(in AppInput) (*appSettings, error) {
	st := &appSettings{
		name: in.Name, kind: in.Kind, authMethod: in.TokenEndpointAuthMethod,
		redirectURIs: in.RedirectURIs, postLogoutURIs: in.PostLogoutRedirectURIs,
		grantTypes: in.GrantTypes, scopes: in.Scopes, tokenTTL: in.AccessTokenTTL,
		firstParty: in.FirstParty, idTokenAlg: in.IDTokenAlg, disabled: in.Disabled,
	}
	switch st.kind {
	case AppWeb, AppSPA, AppNative, AppMachine:
	case "":
		return nil, problem.InvalidField("kind", "is required: web, spa, native or machine")
	default:
		return nil, problem.InvalidField("kind", "must be web, spa, native or machine")
	}
	if st.authMethod == "" {
		st.authMethod = AuthSecretBasic
		if st.kind == AppSPA || st.kind == AppNative {
			st.authMethod = AuthNone
		}
	}
	if st.grantTypes == nil {
		st.grantTypes = []string{GrantAuthorizationCode}
		if st.kind == AppMachine {
			st.grantTypes = []string{GrantClientCredentials}
		}
	}
	if st.scopes == nil && interactive(st.kind) {
		st.scopes = []string{"openid", "profile", "email"}
	}
	if st.idTokenAlg == "" {
		st.idTokenAlg = AlgEdDSA
	}
	if err := st.check(in.JWKS); err != nil {
		return nil, err
	}
	return st, nil
}

// changedAppSettings applies ch to the stored app and checks the result.
func changedAppSettings(row queries.AppOidcApp, ch AppChange) (*appSettings, error) {
	st := &appSettings{
		name: row.Name, kind: row.Kind, authMethod: row.TokenEndpointAuthMethod,
		redirectURIs: row.RedirectUris, postLogoutURIs: row.PostLogoutRedirectUris,
		grantTypes: row.GrantTypes, scopes: row.Scopes,
		firstParty: row.FirstParty, idTokenAlg: row.IDTokenAlg, disabled: row.Disabled,
	}
	if row.AccessTokenTtl != nil {
		st.tokenTTL = time.Duration(*row.AccessTokenTtl) * time.Second
	}
	set := func(dst *[]string, v *[]string) {
		if v != nil {
			*dst = *v
			if *dst == nil {
				*dst = []string{}
			}
		}
	}
	if ch.Name != nil {
		st.name = *ch.Name
	}
	set(&st.redirectURIs, ch.RedirectURIs)
	set(&st.postLogoutURIs, ch.PostLogoutRedirectURIs)
	set(&st.grantTypes, ch.GrantTypes)
	set(&st.scopes, ch.Scopes)
	if ch.AccessTokenTTL != nil {
		st.tokenTTL = *ch.AccessTokenTTL
	}
	if ch.FirstParty != nil {
		st.firstParty = *ch.FirstParty
	}
	if ch.IDTokenAlg != nil {
		st.idTokenAlg = *ch.IDTokenAlg
	}
	if ch.Disabled != nil {
		st.disabled = *ch.Disabled
	}
	jwks := ch.JWKS
	if jwks == nil {
		jwks = row.Jwks
	}
	if err := st.check(jwks); err != nil {
		return nil, err
	}
	return st, nil
}

// check checks the whole of an app's settings, each against its kind,
// and sets the app's JWKS (normalized) from jwks.
func (st *appSettings) check(jwks json.RawMessage) error {
	name := strings.TrimSpace(st.name)
	switch {
	case name == "":
		return problem.InvalidField("name", "is required")
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > 100:
		return problem.InvalidField("name", "must be at most 100 characters")
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }):
		return problem.InvalidField("name", "must not contain control or invisible characters")
	}
	st.name = name

	confidential := st.kind == AppWeb || st.kind == AppMachine
	switch {
	case confidential && !slices.Contains([]string{AuthSecretBasic, AuthSecretPost, AuthPrivateKeyJWT}, st.authMethod):
		return problem.InvalidField("token_endpoint_auth_method",
			fmt.Sprintf("must be client_secret_basic, client_secret_post or private_key_jwt: a %s app is confidential", st.kind))
	case !confidential && st.authMethod != AuthNone:
		return problem.InvalidField("token_endpoint_auth_method",
			fmt.Sprintf("must be none: a %s app is public (it cannot keep a secret, and proves itself with PKCE)", st.kind))
	}

	if err := st.checkGrants(); err != nil {
		return err
	}
	if err := st.checkScopes(); err != nil {
		return err
	}
	st.scopes = nonNil(st.scopes)
	var err error
	if st.redirectURIs, err = checkAppURIs("redirect_uris", st.kind, st.redirectURIs); err != nil {
		return err
	}
	if st.postLogoutURIs, err = checkAppURIs("post_logout_redirect_uris", st.kind, st.postLogoutURIs); err != nil {
		return err
	}
	if interactive(st.kind) && len(st.redirectURIs) == 0 {
		return problem.InvalidField("redirect_uris", fmt.Sprintf("at least one is required: a %s app receives its authorization codes there", st.kind))
	}

	if st.tokenTTL != 0 && (st.tokenTTL < minAppTokenTTL || st.tokenTTL > maxAppTokenTTL || st.tokenTTL%time.Second != 0) {
		return problem.InvalidField("access_token_ttl_seconds", "must be whole seconds from 60 to 86400 (0: the tenant's lifetime)")
	}
	if st.firstParty && st.kind == AppMachine {
		return problem.InvalidField("first_party", "machine apps act as themselves: they have no users to ask for consent")
	}
	if st.idTokenAlg != AlgEdDSA && st.idTokenAlg != AlgRS256 {
		return problem.InvalidField("id_token_signed_response_alg", "must be EdDSA or RS256")
	}

	if len(jwks) == 0 || string(jwks) == "null" {
		jwks = nil
	}
	switch {
	case st.authMethod == AuthPrivateKeyJWT && jwks == nil:
		return problem.InvalidField("jwks", "is required with private_key_jwt: the public keys the app signs its client assertions with")
	case st.authMethod != AuthPrivateKeyJWT && jwks != nil:
		return problem.InvalidField("jwks", "is only for apps that authenticate with private_key_jwt")
	case jwks != nil:
		_, normalized, err := parseJWKS(jwks)
		if err != nil {
			return err
		}
		st.jwks = normalized
	default:
		st.jwks = nil
	}
	return nil
}

func (st *appSettings) checkGrants() error {
	const field = "grant_types"
	if err := checkList(field, st.grantTypes, []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials}); err != nil {
		return err
	}
	if st.kind == AppMachine {
		if !slices.Equal(st.grantTypes, []string{GrantClientCredentials}) {
			return problem.InvalidField(field, "a machine app has client_credentials alone")
		}
		return nil
	}
	if slices.Contains(st.grantTypes, GrantClientCredentials) {
		return problem.InvalidField(field, "client_credentials is for machine apps (which act as themselves, not for a user)")
	}
	if !slices.Contains(st.grantTypes, GrantAuthorizationCode) {
		return problem.InvalidField(field, fmt.Sprintf("a %s app needs authorization_code", st.kind))
	}
	return nil
}

func (st *appSettings) checkScopes() error {
	const field = "scopes"
	if err := checkList(field, st.scopes, appScopes); err != nil {
		return err
	}
	if st.kind == AppMachine && len(st.scopes) > 0 {
		return problem.InvalidField(field, "must be empty: a machine app acts as itself and gets no user's claims")
	}
	if slices.Contains(st.scopes, "offline_access") && !slices.Contains(st.grantTypes, GrantRefreshToken) {
		return problem.InvalidField(field, "offline_access needs the refresh_token grant")
	}
	return nil
}

// checkList refuses a list with a value outside known or given twice.
func checkList(field string, list, known []string) error {
	for i, v := range list {
		name := fmt.Sprintf("%s[%d]", field, i)
		if !slices.Contains(known, v) {
			return problem.InvalidField(name, "must be one of "+strings.Join(known, ", "))
		}
		if slices.Index(list, v) < i {
			return problem.InvalidField(name, "is given twice")
		}
	}
	return nil
}

// checkAppURIs checks a kind of app's redirect URIs (or post-logout ones)
// and returns them (never nil). They are kept as given: matching is
// exact.
func checkAppURIs(field, kind string, uris []string) ([]string, error) {
	if kind == AppMachine && len(uris) > 0 {
		return nil, problem.InvalidField(field, "must be empty: a machine app signs no user in")
	}
	if len(uris) > maxAppURIs {
		return nil, problem.InvalidField(field, fmt.Sprintf("at most %d", maxAppURIs))
	}
	for i, u := range uris {
		name := fmt.Sprintf("%s[%d]", field, i)
		if reason := appURIProblem(kind, u); reason != "" {
			return nil, problem.InvalidField(name, reason)
		}
		if slices.Index(uris, u) < i {
			return nil, problem.InvalidField(name, "is given twice")
		}
	}
	if uris == nil {
		uris = []string{}
	}
	return uris, nil
}

// appURIProblem says what is wrong with raw as a redirect URI of a kind
// of app, "" if nothing.
func appURIProblem(kind, raw string) string {
	switch {
	case raw == "":
		return "must not be empty"
	case len(raw) > maxAppURILen:
		return fmt.Sprintf("must be at most %d characters", maxAppURILen)
	case strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r > '~' }):
		return "must be printable ASCII without spaces (percent-encode the rest)"
	case strings.Contains(raw, "#"):
		return "must not have a fragment"
	case strings.Contains(raw, "*"):
		return "must not contain wildcards: redirect URIs are matched exactly"
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "must be an absolute URI"
	}
	if u.User != nil {
		return "must not carry a user name or password"
	}
	if strings.ToLower(raw[:len(u.Scheme)]) != raw[:len(u.Scheme)] {
		return "must have its scheme in lower case (matching is exact)"
	}
	host := u.Hostname()
	switch u.Scheme {
	case "https":
		if host == "" {
			return "must name a host"
		}
		return ""
	case "http":
		if host == "" {
			return "must name a host"
		}
		if kind == AppNative {
			if host == "localhost" {
				return "use http://127.0.0.1 (or http://[::1]) rather than localhost (RFC 8252, section 8.3)"
			}
			if !isLoopbackHost(host) {
				return "must use https, or be a loopback URI http://127.0.0.1/… or http://[::1]/… (RFC 8252)"
			}
			if u.Port() != "" {
				return "a loopback redirect URI is registered without a port: any port will match (RFC 8252, section 7.3)"
			}
			return ""
		}
		if host != "localhost" && !isLoopbackHost(host) {
			return "must use https (http only for localhost, 127.0.0.1 and [::1], for development)"
		}
		return ""
	}
	if kind != AppNative {
		return "must use https (http only for localhost, 127.0.0.1 and [::1], for development)"
	}
	// A native app's own scheme: a reverse domain name it controls.
	if !strings.Contains(u.Scheme, ".") {
		return "a native app's own scheme must be a reverse domain name it controls, e.g. com.example.app:/callback (RFC 8252, section 7.1)"
	}
	return ""
}

func isLoopbackHost(host string) bool { return host == "127.0.0.1" || host == "::1" }

func appFromRow(r queries.AppOidcApp) *App {
	a := &App{
		ID: r.ID, ClientID: r.ClientID, Name: r.Name, Kind: r.Kind, TokenEndpointAuthMethod: r.TokenEndpointAuthMethod,
		PKCERequired: r.Kind == AppSPA || r.Kind == AppNative,
		RedirectURIs: nonNil(r.RedirectUris), PostLogoutRedirectURIs: nonNil(r.PostLogoutRedirectUris),
		GrantTypes: nonNil(r.GrantTypes), Scopes: nonNil(r.Scopes), FirstParty: r.FirstParty,
		IDTokenAlg: r.IDTokenAlg, Disabled: r.Disabled, Secrets: []AppSecret{},
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
	if r.AccessTokenTtl != nil {
		a.AccessTokenTTL = int(*r.AccessTokenTtl)
	}
	if len(r.Jwks) > 0 {
		a.JWKS = json.RawMessage(r.Jwks)
	}
	return a
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// withSecrets fills in which of a's secrets are valid at now.
func (a *App) withSecrets(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, now time.Time) error {
	list, err := appSecrets(ctx, q, t, &a.ID, now)
	if err != nil {
		return err
	}
	for _, sc := range list {
		a.Secrets = append(a.Secrets, sc.AppSecret)
	}
	return nil
}

type appSecret struct {
	appID uuid.UUID
	AppSecret
}

// appSecrets lists the secrets valid at now of t's app (of all its apps
// if app is nil).
func appSecrets(ctx context.Context, q *queries.Queries, t *tenancy.Tenant, app *uuid.UUID, now time.Time) ([]appSecret, error) {
	rows, err := q.ListAppSecrets(ctx, queries.ListAppSecretsParams{TenantID: t.ID.UUID(), AppID: app, At: now})
	if err != nil {
		return nil, err
	}
	out := make([]appSecret, len(rows))
	for i, r := range rows {
		out[i] = appSecret{r.AppID, AppSecret{ID: r.ID, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt}}
	}
	return out, nil
}

// newClientID returns a client id: 128 random bits in lower-case base32
// (26 letters and digits). Public, but unguessable, so that it tells
// nothing of other apps; and never starting with "-", which command
// lines would take for a flag.
func newClientID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// validClientID reports whether id could be a client id, so that nothing
// else reaches Postgres.
func validClientID(id string) bool {
	if len(id) < 22 || len(id) > 64 {
		return false
	}
	return !strings.ContainsFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_')
	})
}
