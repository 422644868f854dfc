package apptest

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/problem/problemtest"
)

// Response is an answer of an Env's server.
type Response struct {
	Status int
	Header map[string]string
	Body   []byte
}

// JSON decodes the answer's body into v, failing t if it cannot.
func (r Response) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response %d %s: %v", r.Status, r.Body, err)
	}
}

// Client drives an Env's server in process for one test, which it fails
// when a request cannot be made or answers what it must not.
type Client struct {
	t   testing.TB
	app *fiber.App
	env *Env
}

// Client returns a client of e's server for test t.
func (e *Env) Client(t testing.TB) *Client { return &Client{t: t, app: e.HTTP, env: e} }

// Do sends a request to host (a tenant's slug, or a full host) with an
// optional bearer token and JSON body.
func (c *Client) Do(method, host, path, token string, body any) Response {
	c.t.Helper()
	h := map[string]string{}
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
		h["Content-Type"] = "application/json"
	}
	if token != "" {
		h["Authorization"] = "Bearer " + token
	}
	return c.Send(method, host, path, h, string(b))
}

// Send sends a request with the given headers (those set to "" left out)
// and body to host (a tenant's slug, or a full host).
func (c *Client) Send(method, host, path string, headers map[string]string, body string) Response {
	c.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Host = host + ".localhost"
	if strings.Contains(host, ".") { // a full host, e.g. a custom domain
		req.Host = host
	}
	for k, v := range headers {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	res, err := c.app.Test(req, 30_000)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	h := map[string]string{}
	for k := range res.Header {
		h[k] = res.Header.Get(k)
	}
	return Response{Status: res.StatusCode, Header: h, Body: b}
}

// Must is Do for a request that must answer want.
func (c *Client) Must(want int, method, host, path, token string, body any) Response {
	c.t.Helper()
	r := c.Do(method, host, path, token, body)
	if r.Status != want {
		c.t.Fatalf("%s %s on %s: %d %s; want %d", method, path, host, r.Status, r.Body, want)
	}
	return r
}

// ProblemOf asserts that r is a problem+json answer with status, and
// returns the problem.
func (c *Client) ProblemOf(r Response, status int) problem.Details {
	c.t.Helper()
	return problemtest.Want(c.t, r.Status, r.Header["Content-Type"], r.Body, status, "")
}
