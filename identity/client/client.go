package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Options tune a Client; the zero value verifies tokens, and calls the
// check API without credentials (which it refuses).
type Options struct {
	// HTTPClient makes every request; default one with a 10-second
	// timeout.
	HTTPClient *http.Client
	// Token returns the bearer access token the check API is called
	// with: a token of an account with the tenant's manage_apps
	// permission. It is asked before every call, so that it may refresh.
	Token func(ctx context.Context) (string, error)
	// TenantID is the tenant's id, which every token of the tenant
	// carries (tid). If empty, the Client learns it from the tenant's
	// GET /v1/tenant before it verifies its first token, over the same
	// connection it trusts for the keys.
	TenantID string
	// Keys verify tokens; default a JWKS at the tenant's URL followed by
	// JWKSPath, fetched with HTTPClient.
	Keys KeySource
}

// Client is a SaaS app's access to one tenant of Gatehouse: it verifies
// the tenant's access tokens and calls its check API. It is safe for
// concurrent use; make one per tenant and keep it, as its keys are kept
// in it.
type Client struct {
	url      string // the tenant's URL: its tokens' issuer and audience
	http     *http.Client
	token    func(context.Context) (string, error)
	keys     KeySource
	tenantID string // pinned by Options.TenantID

	learn   shared[string]
	mu      sync.Mutex
	learned string // the tenant id GET /v1/tenant gave
}

// New returns a Client of the tenant at tenantURL: the tenant's public
// URL, such as https://acme.gatehouse.example, with no path. It is the
// issuer and audience of the tenant's tokens (Gatehouse's --public-url
// with the tenant's slug), and must be spelled as they say it; a custom
// domain of the tenant serves the same API but issues no tokens of its
// name.
func New(tenantURL string, o Options) (*Client, error) {
	u, err := url.Parse(tenantURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("client: %q is not a tenant URL (https://host, no path)", tenantURL)
	}
	base := u.Scheme + "://" + u.Host
	c := &Client{
		url:      base,
		http:     cmp.Or(o.HTTPClient, defaultHTTPClient()),
		token:    o.Token,
		keys:     o.Keys,
		tenantID: o.TenantID,
	}
	if c.keys == nil {
		c.keys = NewJWKS(base+JWKSPath, JWKSOptions{HTTPClient: c.http})
	}
	c.learn = shared[string]{interval: time.Second, timeout: 5 * time.Second, fetch: c.fetchTenantID}
	return c, nil
}

// URL returns the tenant's URL, its tokens' issuer and audience.
func (c *Client) URL() string { return c.url }

// VerifyAccessToken checks an access token of the tenant (see the
// package's VerifyAccessToken), with the issuer and audience pinned to
// the tenant's URL and the tenant to its id.
//
// Returns an error wrapping ErrInvalidToken for a token that does not
// pass (answer 401, and the token is worth nothing), and a
// *KeysUnavailableError if the keys or the tenant's id could not be had
// (answer 503: the token may well be good).
func (c *Client) VerifyAccessToken(ctx context.Context, token string) (*Claims, error) {
	tid, err := c.tenant(ctx)
	if err != nil {
		return nil, &KeysUnavailableError{Err: err}
	}
	return VerifyAccessToken(ctx, token, c.keys, Expect{Issuer: c.url, Audience: c.url, Tenant: tid})
}

// tenant returns the tenant's id: as given, else as learned.
func (c *Client) tenant(ctx context.Context) (string, error) {
	if c.tenantID != "" {
		return c.tenantID, nil
	}
	c.mu.Lock()
	tid := c.learned
	c.mu.Unlock()
	if tid != "" {
		return tid, nil
	}
	return c.learn.start(ctx).wait(ctx)
}

func (c *Client) fetchTenantID(ctx context.Context) (string, error) {
	var info struct {
		ID string `json:"id"`
	}
	if err := c.do(ctx, "learn tenant id", http.MethodGet, "/v1/tenant", false, nil, &info); err != nil {
		return "", err
	}
	if info.ID == "" || len(info.ID) > 64 {
		return "", errors.New("learn tenant id: GET /v1/tenant gave no id")
	}
	c.mu.Lock()
	c.learned = info.ID
	c.mu.Unlock()
	return info.ID, nil
}

// Bounds of what is read of an answer.
const (
	maxAnswer  = 4 << 20
	maxProblem = 64 << 10
)

// do sends a request to the tenant's API (in as JSON, with the bearer
// token if auth) and decodes its answer into out. An answer that is not
// a success is an *APIError.
func (c *Client) do(ctx context.Context, op, method, path string, auth bool, in, out any) error {
	var body io.Reader // nil, not a nil *bytes.Reader, when there is none
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth {
		if c.token == nil {
			return fmt.Errorf("%s: no Options.Token to call the check API with", op)
		}
		tok, err := c.token(ctx)
		if err != nil {
			return fmt.Errorf("%s: bearer token: %w", op, err)
		}
		if tok == "" || strings.ContainsAny(tok, " \r\n") {
			return fmt.Errorf("%s: Options.Token gave no usable token", op)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("%s: %w", op, apiError(res, time.Now()))
	}
	b, err := readBounded(res.Body, maxAnswer)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s: malformed answer: %w", op, err)
	}
	return nil
}
