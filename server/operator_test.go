package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

func TestOperatorAPIPromotesAndDemotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPrimary(t)
	admin := pgtest.Pool(t, db.AdminURL, 8)
	reg := tenancy.NewRegistry(admin, db.AdminURL, "localhost", vaulttest.Shared(t).Connect(t), &tenancy.Migrator{})
	for _, slug := range []string{"acme", "other"} {
		if _, err := reg.Create(ctx, tenancy.CreateParams{Slug: slug, Name: slug}); err != nil {
			t.Fatal(err)
		}
	}
	token, err := reg.CreateOperatorToken(ctx, "ops")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateOperatorToken(ctx, "ops"); err == nil {
		t.Fatal("a second token for one operator")
	}
	op, err := server.NewOperator(reg, tenancy.NewMover(reg), []string{pgtest.Second(t).URL("postgres")}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	app := server.New(server.Config{}, server.Deps{Log: slog.New(slog.DiscardHandler), Plain: []func(fiber.Router){op.Routes}}).App()

	send := func(method, path, auth, body string) response {
		t.Helper()
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, path, r)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		res, err := app.Test(req, 30_000)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return response{status: res.StatusCode, header: res.Header, body: b}
	}
	move := func(r response) tenancy.Move {
		t.Helper()
		var mv tenancy.Move
		if err := json.Unmarshal(r.body, &mv); err != nil {
			t.Fatalf("move %s: %v", r.body, err)
		}
		return mv
	}
	// follow polls a move's resource until it has flipped and finished.
	follow := func(location string) tenancy.Move {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			r := send("GET", location, token, "")
			if r.status != 200 {
				t.Fatalf("GET %s: %d %s", location, r.status, r.body)
			}
			mv := move(r)
			if mv.State == tenancy.MoveDone || mv.State == tenancy.MoveFailed {
				return mv
			}
			if time.Now().After(deadline) {
				t.Fatalf("the move did not finish: %s", r.body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	silo := `"silo_cluster": "` + pgtest.Second(t).URL("postgres") + `"`
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", "", ""), 401, "operator token")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", "gho_nonsense", ""), 401, "operator token")
	wantProblem(t, send("POST", "/v1/operator/tenants/nobody/promote", token, "{"+silo+"}"), 404, "nobody")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"max_pause": "soon"}`), 400, "max_pause")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"max_pause": "1ms"}`), 400, "max_pause")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"keep_shared_for": "-1h"}`), 400, "keep_shared_for")
	// Only the server's own silo clusters: a token does not choose where a tenant's data goes.
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"silo_cluster": "postgres://me@evil.example:5432/postgres"}`), 400, "silo_cluster")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"keep_silo_for": "1h"}`), 400, "keep_silo_for")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"speed": "fast"}`), 400, "speed")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/demote", token, ""), 409, "already in the shared database")

	r := send("POST", "/v1/operator/tenants/acme/promote", token, `{`+silo+`, "max_pause": "1s", "purge": true}`)
	if r.status != 202 || !strings.HasPrefix(r.header.Get("Location"), "/v1/operator/tenants/acme/moves/") {
		t.Fatalf("promote: %d %v %s", r.status, r.header, r.body)
	}
	started := move(r)
	if started.StartedBy != "operator ops" || started.Direction != tenancy.Promote {
		t.Fatalf("promote answered %s", r.body)
	}
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, "{"+silo+"}"), 409, "")
	// Another tenant's path does not reach the move.
	wantProblem(t, send("GET", "/v1/operator/tenants/other/moves/"+started.ID.String(), token, ""), 404, "no such move")
	mv := follow(r.header.Get("Location"))
	if mv.State != tenancy.MoveDone || mv.Pause <= 0 || mv.Pause > time.Second {
		t.Fatalf("promotion: %+v", mv)
	}
	if tn, err := reg.Get(ctx, "acme"); err != nil || tn.Placement != tenancy.Silo {
		t.Fatalf("after promotion: %+v %v", tn, err)
	}
	wantProblem(t, send("POST", r.header.Get("Location")+"/abort", token, ""), 409, "has flipped")

	r = send("POST", "/v1/operator/tenants/acme/demote", token, `{"purge": true}`)
	if r.status != 202 {
		t.Fatalf("demote: %d %s", r.status, r.body)
	}
	if mv := follow(r.header.Get("Location")); mv.State != tenancy.MoveDone {
		t.Fatalf("demotion: %+v", mv)
	}
	if tn, err := reg.Get(ctx, "acme"); err != nil || tn.Placement != tenancy.Shared {
		t.Fatalf("after demotion: %+v %v", tn, err)
	}
	var list struct{ Moves []tenancy.Move }
	if r := send("GET", "/v1/operator/tenants/acme/moves", token, ""); r.status != 200 || json.Unmarshal(r.body, &list) != nil || len(list.Moves) != 2 {
		t.Fatalf("moves: %d %s", r.status, r.body)
	}
	if r := send("GET", "/v1/operator/tenants/other/moves", token, ""); r.status != 200 || !strings.Contains(string(r.body), `"moves":[]`) {
		t.Fatalf("another tenant's moves: %d %s", r.status, r.body)
	}

	// A revoked token opens nothing.
	if err := reg.RevokeOperatorToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, send("GET", "/v1/operator/tenants/acme/moves", token, ""), 401, "operator token")
}
