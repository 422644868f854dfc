package rebac_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/internal/app"
	"github.com/gatehouse/gatehouse/internal/app/apptest"
	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// BenchmarkCheck measures the check API over HTTP (authentication, the
// tenant's consistency token from Postgres, one SpiceDB check) against
// calling SpiceDB's CheckPermission directly for the same relationship,
// in the same run, reporting the p50 ratio; and a bulk check of 100
// items against 100 single checks.
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	// The server's default audit sample; its resolver caching tenants as
	// a server's does.
	e := apptest.New(b, apptest.Options{Caching: true, Config: func(c *app.Config) { c.CheckAuditSample = 0.01 }})
	tn, err := e.Registry.Create(ctx, tenancy.CreateParams{Slug: "bench", Name: "Bench"})
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Accounts.Signup(ctx, tn, identity.SignupInput{Email: "app@bench.test", Password: goodPassword}, identity.Meta{}); err != nil {
		b.Fatal(err)
	}
	e.Client(b).Confirm("app@bench.test")
	if _, err := e.Accounts.SetRole(ctx, tn, "app@bench.test", identity.RoleAdmin); err != nil {
		b.Fatal(err)
	}
	tokens, err := e.Accounts.Login(ctx, tn, "app@bench.test", goodPassword, identity.Meta{})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go e.HTTP.Listener(ln)
	b.Cleanup(func() { e.HTTP.Shutdown() })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	post := func(path string, body any) []byte {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+path, bytes.NewReader(raw))
		req.Host = "bench.localhost"
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tokens.AccessToken)
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("%s: %d %s", path, res.StatusCode, out)
		}
		return out
	}
	post("/v1/relationships", map[string]any{"touch": []any{map[string]any{"resource": obj("resource", "doc"), "relation": "viewer", "subject": obj("user", "alice")}}})
	check := map[string]any{"subject": obj("user", "alice"), "permission": "view", "resource": obj("resource", "doc")}

	// The baseline: the same relationship in a datastore of its own.
	direct := spicedbtest.Shared(b).Connect(b)
	other := tenancy.ID(uuid.New())
	at, err := direct.Write(ctx, other, []rebac.Relationship{{
		Resource: rebac.Ref{Type: "resource", ID: "doc"}, Relation: "viewer", Subject: rebac.SubjectRef{Ref: rebac.Ref{Type: "user", ID: "alice"}},
	}}, nil)
	if err != nil {
		b.Fatal(err)
	}

	alice := rebac.SubjectRef{Ref: rebac.Ref{Type: "user", ID: "alice"}}
	doc := rebac.Ref{Type: "resource", ID: "doc"}
	var baseP50, singles time.Duration
	b.Run("spicedb-check-direct", func(b *testing.B) {
		baseP50 = timed(b, func() {
			if ok, _, err := direct.Check(ctx, other, alice, "view", doc, at); err != nil || !ok {
				b.Fatal(ok, err)
			}
		})
	})
	b.Run("http-healthz", func(b *testing.B) {
		// The HTTP round trip alone, for scale.
		timed(b, func() {
			res, err := client.Get("http://" + ln.Addr().String() + "/healthz")
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		})
	})
	b.Run("freshness-token", func(b *testing.B) {
		// The tenant's consistency token from Postgres, alone.
		timed(b, func() {
			if _, err := e.Relay.Token(ctx, tn); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("token-then-check", func(b *testing.B) {
		// What the handler asks of Postgres and SpiceDB, in process.
		timed(b, func() {
			at, err := e.Relay.Token(ctx, tn)
			if err != nil {
				b.Fatal(err)
			}
			if ok, _, err := e.SpiceDB.Check(ctx, tn.ID, alice, "view", doc, at); err != nil || !ok {
				b.Fatal(ok, err)
			}
		})
	})
	b.Run("check-api", func(b *testing.B) {
		singles = timed(b, func() { post("/v1/permissions/check", check) })
		b.ReportMetric(float64(singles)/float64(baseP50), "x-baseline-p50")
	})
	items := make([]any, 100)
	for i := range items {
		items[i] = check
	}
	b.Run("check-bulk-100", func(b *testing.B) {
		m := timed(b, func() { post("/v1/permissions/check-bulk", map[string]any{"items": items}) })
		b.ReportMetric(float64(m)/float64(100*singles), "x-100-singles")
	})
}

// timed runs op for the benchmark's iterations and reports (and returns)
// its median latency.
func timed(b *testing.B, op func()) time.Duration {
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		op()
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	m := lat[len(lat)/2]
	b.ReportMetric(float64(m.Microseconds()), "p50-µs")
	return m
}
