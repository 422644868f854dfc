package identity_test

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// TestBadInputSweepOfEveryEndpoint sends the classes of bad input a
// hostile client tries to every route the tenant server has (identity's
// and rebac's), signed in as an admin so that the input reaches the
// handler: NUL and invalid UTF-8 in the query and in JSON strings, wrong
// types, keys in another case or given twice, compressed and oversized
// bodies, and odd content types. Every answer is a 4xx problem; none is a
// 5xx, and nothing is left half written.
func TestBadInputSweepOfEveryEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.tenant("acme", tenancy.Shared, "")
	boss := e.adminLogin("acme", "boss@sweep.test").AccessToken
	var bomb bytes.Buffer
	w := gzip.NewWriter(&bomb)
	w.Write(make([]byte, 8<<20))
	w.Close()

	type input struct {
		name, query, contentType, encoding, body string
	}
	inputs := []input{
		{name: "NUL in the query", query: "?search=a%00b&cursor=%00&action=%00&token=%00"},
		{name: "invalid UTF-8 in the query", query: "?search=%ff%fe&action=%c3"},
		{name: "NUL in a JSON string", contentType: "application/json", body: `{"email":"a\u0000@x.test","name":"\u0000","description":"\u0000","token":"\u0000","password":"\u0000","display_name":"\u0000","type":"user","id":"\u0000"}`},
		{name: "invalid UTF-8 in JSON", contentType: "application/json", body: "{\"name\":\"\xff\"}"},
		{name: "wrong types", contentType: "application/json", body: `{"email":1,"name":[],"permissions":"all","touch":{},"items":7,"manager":"yes"}`},
		{name: "keys in upper case", contentType: "application/json", body: `{"EMAIL":"a@x.test","NAME":"x","TOKEN":"x"}`},
		{name: "a key twice", contentType: "application/json", body: `{"name":"a","name":"b","email":"a@x.test","email":"b@x.test"}`},
		{name: "compressed", contentType: "application/json", encoding: "gzip", body: bomb.String()},
		{name: "oversized", contentType: "application/json", body: `{"name":"` + strings.Repeat("a", 20<<10) + `"}`},
		{name: "not JSON", contentType: "text/plain", body: "hello"},
		{name: "truncated JSON", contentType: "application/json", body: `{"name":`},
		{name: "JSON and more", contentType: "application/json", body: `{} {}`},
	}
	routes := e.app.GetRoutes(true)
	if len(routes) < 40 {
		t.Fatalf("only %d routes found", len(routes))
	}
	seen := 0
	for _, r := range routes {
		if r.Method == "HEAD" || r.Path == "/" || strings.HasSuffix(r.Path, "*") || r.Path == "/v1/auth/logout" {
			continue // logout reads no body, and would end the sweep's session
		}
		path := r.Path
		for _, param := range r.Params {
			value := "00000000-0000-4000-8000-000000000000"
			if param == "type" {
				value = "user"
			}
			path = strings.Replace(path, ":"+param, value, 1)
		}
		for _, in := range inputs {
			if (r.Method == "GET" || r.Method == "DELETE") && in.body != "" {
				continue
			}
			headers := map[string]string{"Authorization": "Bearer " + boss, "Content-Type": in.contentType, "Content-Encoding": in.encoding}
			if strings.HasPrefix(r.Path, "/account/") && in.contentType == "application/json" {
				headers["Content-Type"] = "application/x-www-form-urlencoded"
			}
			res := e.send(r.Method, "acme", path+in.query, headers, in.body)
			seen++
			if res.status < 400 && in.query == "" {
				// A body the endpoint does not read at all (a POST without
				// one, say) may well succeed: it is not bad input to it.
				continue
			}
			if res.status >= 500 || (res.status < 400 && in.query != "") {
				t.Errorf("%s %s with %s: %d %s", r.Method, path, in.name, res.status, res.body)
				continue
			}
			ct := res.header["Content-Type"]
			if strings.HasPrefix(r.Path, "/oauth/") && strings.HasPrefix(ct, "application/json") {
				// The OAuth endpoints answer as OAuth says (RFC 6749,
				// section 5.2): an error code and its description.
				var oe struct{ Error string }
				if res.json(t, &oe); oe.Error == "" {
					t.Errorf("%s %s with %s: %d without an OAuth error: %s", r.Method, path, in.name, res.status, res.body)
				}
				continue
			}
			if !strings.HasPrefix(ct, problem.ContentType) && !strings.HasPrefix(ct, "text/html") {
				t.Errorf("%s %s with %s: %d answered as %q", r.Method, path, in.name, res.status, ct)
			}
		}
	}
	t.Logf("%d requests over %d routes", seen, len(routes))
	// The admin is still the admin, and nothing was created by any of it.
	e.must(200, "GET", "acme", "/v1/me", boss, nil)
	var n int
	e.admin.QueryRow(t.Context(), "select (select count(*) from app.users) + (select count(*) from app.groups) + (select count(*) from app.roles)").Scan(&n)
	if n != 1 {
		t.Fatalf("%d users, groups and roles after the sweep; want the admin alone", n)
	}
}
