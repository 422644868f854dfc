package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/gatehouse/gatehouse/identity/client"
)

func TestNewRefusesWhatIsNotATenantURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "acme.gatehouse.test", "ftp://acme.gatehouse.test", "https://", "https://acme.gatehouse.test/api",
		"https://acme.gatehouse.test?x=1", "https://acme.gatehouse.test#top", "https://user:pw@acme.gatehouse.test"} {
		if _, err := client.New(u, client.Options{}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
	c, err := client.New("https://acme.gatehouse.test/", client.Options{})
	if err != nil || c.URL() != acmeURL {
		t.Fatalf("New with a trailing slash: %v, %v", c, err)
	}
}

// tenantToken is a valid token of the tenant at s's URL, and the key
// that signed it.
func tenantToken(t *testing.T, s *keyServer, kid string, f func(*client.Claims)) string {
	t.Helper()
	priv := s.rotate(kid)
	c := goodClaims(client.Expect{Issuer: s.URL, Audience: s.URL, Tenant: acmeID})
	if f != nil {
		f(&c)
	}
	return sign(t, priv, kid, c)
}

func TestClientVerifiesTokensOfItsTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newKeyServer(t)
	c, err := client.New(s.URL, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := c.VerifyAccessToken(ctx, tenantToken(t, s, "k1", nil))
	if err != nil || claims.Tenant != acmeID {
		t.Fatalf("a good token: %+v, %v", claims, err)
	}
	for name, f := range map[string]func(*client.Claims){
		"another tenant's": func(c *client.Claims) { c.Tenant = "globex" },
		"another issuer's": func(c *client.Claims) { c.Issuer = "https://globex.gatehouse.test" },
		"for another app":  func(c *client.Claims) { c.Audience = jwt.ClaimStrings{"https://globex.gatehouse.test"} },
	} {
		if _, err := c.VerifyAccessToken(ctx, tenantToken(t, s, "k1", f)); !errors.Is(err, client.ErrInvalidToken) {
			t.Errorf("%s token: %v, want ErrInvalidToken", name, err)
		}
	}
	if n := s.tenantReads.Load(); n != 1 {
		t.Fatalf("the tenant id was read %d times, want once", n)
	}
}

// The tenant's id, when given, is trusted over what the server says; not
// given, it is learned once, and a failure to learn it is no fault of the
// token.
func TestClientPinsOrLearnsTheTenantID(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newKeyServer(t)
	tok := tenantToken(t, s, "k1", nil)

	pinned, _ := client.New(s.URL, client.Options{TenantID: "globex-id"})
	if _, err := pinned.VerifyAccessToken(ctx, tok); !errors.Is(err, client.ErrInvalidToken) {
		t.Fatalf("a token of a tenant other than the pinned one: %v", err)
	}
	if n := s.tenantReads.Load(); n != 0 {
		t.Fatalf("the pinned client read the tenant id %d times", n)
	}

	s.set(func(s *keyServer) { s.down = true })
	learning, _ := client.New(s.URL, client.Options{})
	_, err := learning.VerifyAccessToken(ctx, tok)
	if _, ok := errors.AsType[*client.KeysUnavailableError](err); !ok || errors.Is(err, client.ErrInvalidToken) {
		t.Fatalf("the tenant id cannot be had: %v, want KeysUnavailableError", err)
	}
	s.set(func(s *keyServer) { s.down = false })
	if _, err := learning.VerifyAccessToken(ctx, tok); err != nil {
		t.Fatalf("once the server is back: %v", err)
	}
}

// apiServer answers the check API with canned bodies and keeps what it
// was sent.
type apiServer struct {
	*httptest.Server
	mu   sync.Mutex
	sent []string // "METHOD path auth body"
}

func newAPIServer(t *testing.T, answers map[string]string) *apiServer {
	t.Helper()
	s := &apiServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.sent = append(s.sent, fmt.Sprintf("%s %s %s %s", r.Method, r.URL.Path, r.Header.Get("Authorization"), b))
		s.mu.Unlock()
		if r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, answers[r.URL.Path])
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *apiServer) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sent) == 0 {
		return ""
	}
	return s.sent[len(s.sent)-1]
}

// The check API's requests and answers, as the server reads and writes
// them (rebac/checks_http.go), consistency tokens in and out.
func TestCheckAPIWireFormat(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newAPIServer(t, map[string]string{
		"/v1/permissions/check":            `{"allowed":true,"consistency_token":"c1"}`,
		"/v1/permissions/check-bulk":       `{"results":[{"allowed":true},{"allowed":false}],"consistency_token":"c2"}`,
		"/v1/permissions/lookup-resources": `{"resources":["doc1","doc2"],"truncated":false}`,
		"/v1/relationships":                `{"consistency_token":"w1"}`,
	})
	c, _ := client.New(s.URL, client.Options{Token: func(context.Context) (string, error) { return "app-token", nil }})
	alice := client.Subject{Type: "user", ID: "u1"}
	doc := client.Object{Type: "resource", ID: "doc1"}
	readers := client.Subject{Type: "group", ID: "g1", Relation: "member"}

	written, err := c.WriteRelationships(ctx, []client.Relationship{{Resource: doc, Relation: "viewer", Subject: readers}}, nil)
	if err != nil || written != "w1" {
		t.Fatalf("WriteRelationships = %q, %v", written, err)
	}
	want := `POST /v1/relationships Bearer app-token {"touch":[{"resource":{"type":"resource","id":"doc1"},"relation":"viewer","subject":{"type":"group","id":"g1","relation":"member"}}]}`
	if got := s.last(); got != want {
		t.Fatalf("sent\n%s\nwant\n%s", got, want)
	}

	for _, at := range []client.ConsistencyToken{"", written} {
		d, err := c.Check(ctx, client.Question{Subject: alice, Permission: "view", Resource: doc}, at)
		if err != nil || !d.Allowed || d.ConsistencyToken != "c1" {
			t.Fatalf("Check = %+v, %v", d, err)
		}
		want := `POST /v1/permissions/check Bearer app-token {"subject":{"type":"user","id":"u1"},"permission":"view","resource":{"type":"resource","id":"doc1"}`
		if at != "" {
			want += `,"consistency_token":"w1"`
		}
		if got := s.last(); got != want+"}" {
			t.Fatalf("sent\n%s\nwant\n%s}", got, want)
		}
	}

	qs := []client.Question{{Subject: alice, Permission: "view", Resource: doc}, {Subject: alice, Permission: "edit", Resource: doc}}
	bulk, err := c.CheckBulk(ctx, qs, written)
	if err != nil || len(bulk.Allowed) != 2 || !bulk.Allowed[0] || bulk.Allowed[1] || bulk.ConsistencyToken != "c2" {
		t.Fatalf("CheckBulk = %+v, %v", bulk, err)
	}
	want = `POST /v1/permissions/check-bulk Bearer app-token {"items":[` +
		`{"subject":{"type":"user","id":"u1"},"permission":"view","resource":{"type":"resource","id":"doc1"}},` +
		`{"subject":{"type":"user","id":"u1"},"permission":"edit","resource":{"type":"resource","id":"doc1"}}],"consistency_token":"w1"}`
	if got := s.last(); got != want {
		t.Fatalf("sent\n%s\nwant\n%s", got, want)
	}
	// An answer that does not match the questions is not taken.
	if _, err := c.CheckBulk(ctx, qs[:1], ""); err == nil {
		t.Fatal("two answers to one question were taken")
	}

	res, err := c.LookupResources(ctx, client.Lookup{Subject: alice, Permission: "view", ResourceType: "resource"}, written)
	if err != nil || strings.Join(res.IDs, ",") != "doc1,doc2" || res.Truncated {
		t.Fatalf("LookupResources = %+v, %v", res, err)
	}
	want = `POST /v1/permissions/lookup-resources Bearer app-token {"subject":{"type":"user","id":"u1"},"permission":"view","resource_type":"resource","consistency_token":"w1"}`
	if got := s.last(); got != want {
		t.Fatalf("sent\n%s\nwant\n%s", got, want)
	}
}

// No request leaves without its credential.
func TestCheckAPIWithoutACredentialSendsNothing(t *testing.T) {
	t.Parallel()
	s := newAPIServer(t, nil)
	q := client.Question{Subject: client.Subject{Type: "user", ID: "u1"}, Permission: "view", Resource: client.Object{Type: "resource", ID: "d"}}
	broken := errors.New("token endpoint down")
	for name, o := range map[string]client.Options{
		"no token source":    {},
		"token source fails": {Token: func(context.Context) (string, error) { return "", broken }},
		"empty token":        {Token: func(context.Context) (string, error) { return "", nil }},
	} {
		c, _ := client.New(s.URL, o)
		if _, err := c.Check(context.Background(), q, ""); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c, _ := client.New(s.URL, client.Options{Token: func(context.Context) (string, error) { return "", broken }})
	if _, err := c.Check(context.Background(), q, ""); !errors.Is(err, broken) {
		t.Errorf("the token source's error is lost: %v", err)
	}
	if got := s.last(); got != "" {
		t.Fatalf("sent %s", got)
	}
}

func TestAPIErrorsCarryTheProblem(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, contentType, body, retryAfter string
		status                              int
		want                                client.APIError
	}{
		{
			name: "invalid field", status: 400, contentType: "application/problem+json",
			body: `{"type":"about:blank","title":"Bad Request","status":400,"detail":"consistency_token: is not a consistency token this service gave out",` +
				`"code":"invalid","instance":"/v1/permissions/check","request_id":"r1","errors":[{"field":"consistency_token","reason":"is not a consistency token this service gave out"}]}`,
			want: client.APIError{Status: 400, Code: "invalid", Detail: "consistency_token: is not a consistency token this service gave out", RequestID: "r1",
				Fields: []client.FieldError{{Field: "consistency_token", Reason: "is not a consistency token this service gave out"}}},
		},
		{
			name: "forbidden", status: 403, contentType: "application/problem+json",
			body: `{"status":403,"code":"forbidden","detail":"the check API needs the tenant's manage_apps permission"}`,
			want: client.APIError{Status: 403, Code: "forbidden", Detail: "the check API needs the tenant's manage_apps permission"},
		},
		{
			name: "unavailable", status: 503, contentType: "application/problem+json", retryAfter: "2",
			body: `{"status":503,"code":"unavailable","detail":"permissions unavailable, try again later"}`,
			want: client.APIError{Status: 503, Code: "unavailable", Detail: "permissions unavailable, try again later", RetryAfter: 2 * time.Second},
		},
		{
			name: "a proxy's page", status: 502, contentType: "text/html", body: "<html>bad gateway</html>",
			want: client.APIError{Status: 502, Detail: "Bad Gateway"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			c, _ := client.New(srv.URL, client.Options{Token: func(context.Context) (string, error) { return "s3cret-bearer", nil }})
			_, err := c.WriteRelationships(context.Background(), []client.Relationship{{}}, nil)
			e, ok := errors.AsType[*client.APIError](err)
			if !ok {
				t.Fatalf("%v is not an APIError", err)
			}
			if fmt.Sprint(*e) != fmt.Sprint(tt.want) {
				t.Fatalf("got  %+v\nwant %+v", *e, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("the bearer token is in the error: %v", err)
			}
		})
	}
}
