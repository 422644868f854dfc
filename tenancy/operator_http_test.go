package tenancy_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/migrations"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/problem/problemtest"
	"github.com/gatehouse/gatehouse/secrets/vaulttest"
	"github.com/gatehouse/gatehouse/server"
	"github.com/gatehouse/gatehouse/tenancy"
	"github.com/gatehouse/gatehouse/tenancy/pgtest"
)

// response is an answer of the operator API.
type response struct {
	status int
	header http.Header
	body   []byte
}

// wantProblem asserts r is an RFC 9457 problem with the given status.
func wantProblem(t *testing.T, r response, status int, detail string) problem.Details {
	t.Helper()
	return problemtest.Want(t, r.status, r.header.Get("Content-Type"), r.body, status, detail)
}

// operatorAPI serves the operator API over reg for the test, and sends it
// requests.
func operatorAPI(t *testing.T, reg *tenancy.Registry, clusters ...string) func(method, path, auth, body string) response {
	t.Helper()
	mover := tenancy.NewMover(reg)
	t.Cleanup(mover.Close)
	op, err := tenancy.NewOperatorHTTP(reg, mover, clusters, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	app := server.New(server.Config{}, server.Deps{Log: slog.New(slog.DiscardHandler), Plain: []func(fiber.Router){op.Routes}}).App()
	return func(method, path, auth, body string) response {
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
}

// actions are what GET …/moves/{id} says operators did to the move, as
// "operator action" lines.
func actions(t *testing.T, r response) []string {
	t.Helper()
	var mv struct {
		ID      uuid.UUID                `json:"id"`
		Actions []tenancy.OperatorAction `json:"operator_actions"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &mv) != nil || mv.ID == uuid.Nil || mv.Actions == nil {
		t.Fatalf("a move with its operator actions: %d %s", r.status, r.body)
	}
	var out []string
	for _, a := range mv.Actions {
		if a.At.IsZero() {
			t.Fatalf("an action without a time: %s", r.body)
		}
		out = append(out, a.Operator+" "+a.Action)
	}
	return out
}

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
	token, err := reg.CreateOperatorToken(ctx, "ops", tenancy.OperatorTokenOptions{Scopes: tenancy.Scopes})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateOperatorToken(ctx, "ops", tenancy.OperatorTokenOptions{}); err == nil {
		t.Fatal("a second token for one operator")
	}
	send := operatorAPI(t, reg, pgtest.Second(t).URL("postgres"))
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
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/promote", token, `{"keep_shared_for": "1h", "purge": true}`), 400, "give either purge or keep_shared_for")
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/demote", token, `{"keep_silo_for": "0s", "purge": true}`), 400, "give either purge or keep_silo_for")
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
	if got := actions(t, send("GET", r.header.Get("Location"), token, "")); !slices.Equal(got, []string{"ops promote"}) {
		t.Fatalf("the promotion's actions: %q", got)
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

func TestOperatorTokenScopesDecideWhatItMayDo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPrimary(t)
	admin := pgtest.Pool(t, db.AdminURL, 4)
	reg := tenancy.NewRegistry(admin, db.AdminURL, "localhost", vaulttest.Shared(t).Connect(t), &tenancy.Migrator{})
	if _, err := reg.Create(ctx, tenancy.CreateParams{Slug: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for name, scopes := range map[string][]tenancy.Scope{
		"reader": nil, // the default: read only
		"mover":  {tenancy.ScopeMove},
		"reaper": {tenancy.ScopeRetire},
	} {
		tok, err := reg.CreateOperatorToken(ctx, name, tenancy.OperatorTokenOptions{Scopes: scopes})
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = tok
	}
	send := operatorAPI(t, reg)
	// A move that nobody runs yet: the requests that pass their scope
	// check act on it.
	mv, err := tenancy.NewMover(reg).Begin(ctx, "acme", tenancy.Promote, tenancy.MoveOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	moves := "/v1/operator/tenants/acme/moves"
	path := moves + "/" + mv.ID.String()
	nowhere := moves + "/" + uuid.NewString()

	forbidden := func(method, path, who string, scope tenancy.Scope) {
		t.Helper()
		r := send(method, path, tokens[who], "")
		wantProblem(t, r, 403, `lacks the "`+string(scope)+`" scope`)
		if h := r.header.Get("WWW-Authenticate"); !strings.Contains(h, `error="insufficient_scope"`) || !strings.Contains(h, `scope="`+string(scope)+`"`) {
			t.Fatalf("%s %s by %s: WWW-Authenticate %q", method, path, who, h)
		}
	}
	// read: GET only.
	if r := send("GET", moves, tokens["reader"], ""); r.status != 200 || !strings.Contains(string(r.body), mv.ID.String()) {
		t.Fatalf("reader lists moves: %d %s", r.status, r.body)
	}
	forbidden("POST", "/v1/operator/tenants/acme/promote", "reader", tenancy.ScopeMove)
	forbidden("POST", "/v1/operator/tenants/acme/demote", "reader", tenancy.ScopeMove)
	forbidden("POST", path+"/resume", "reader", tenancy.ScopeMove)
	forbidden("POST", path+"/abort", "reader", tenancy.ScopeMove)
	forbidden("POST", path+"/retire", "reader", tenancy.ScopeRetire)
	forbidden("POST", path+"/retire?force=true", "reader", tenancy.ScopeRetire)
	// move: no reading, no retiring.
	forbidden("GET", moves, "mover", tenancy.ScopeRead)
	forbidden("GET", path, "mover", tenancy.ScopeRead)
	forbidden("POST", path+"/retire", "mover", tenancy.ScopeRetire)
	forbidden("POST", path+"/retire?force=true", "mover", tenancy.ScopeRetire)
	// retire: neither moving nor reading.
	forbidden("POST", "/v1/operator/tenants/acme/promote", "reaper", tenancy.ScopeMove)
	forbidden("POST", path+"/abort", "reaper", tenancy.ScopeMove)
	forbidden("GET", path, "reaper", tenancy.ScopeRead)
	// Refused requests did nothing and recorded nothing.
	if got := actions(t, send("GET", path, tokens["reader"], "")); len(got) != 0 {
		t.Fatalf("actions after refusals: %q", got)
	}
	if got, err := tenancy.NewMover(reg).Get(ctx, mv.ID); err != nil || got.State != tenancy.MoveRunning {
		t.Fatalf("the move after refusals: %+v %v", got, err)
	}

	// A scope lets a request through to the move itself.
	wantProblem(t, send("POST", nowhere+"/resume", tokens["mover"], ""), 404, "no move")
	wantProblem(t, send("POST", nowhere+"/retire?force=true", tokens["reaper"], ""), 404, "no move")
	if r := send("POST", path+"/abort", tokens["mover"], ""); r.status != 200 || !strings.Contains(string(r.body), `"state":"aborted"`) {
		t.Fatalf("mover aborts: %d %s", r.status, r.body)
	}
	// Retiring an aborted move is refused by the move, but was asked for
	// by a token that may: it is on record.
	wantProblem(t, send("POST", path+"/retire?force=true", tokens["reaper"], ""), 409, "not keeping an old copy")
	if got := actions(t, send("GET", path, tokens["reader"], "")); !slices.Equal(got, []string{"mover abort", "reaper force_retire"}) {
		t.Fatalf("the move's actions: %q", got)
	}
	var slug, tenant string
	if err := admin.QueryRow(ctx, "select tenant_slug, tenant_id::text from control.operator_actions where move_id = $1 and action = 'abort'", mv.ID).Scan(&slug, &tenant); err != nil || slug != "acme" || tenant != mv.Tenant.String() {
		t.Fatalf("the abort's record: %q %q %v", slug, tenant, err)
	}
	// No token, no action.
	wantProblem(t, send("POST", path+"/abort", "", ""), 401, "operator token")

	// An expired token opens nothing, and says why.
	if _, err := admin.Exec(ctx, "update control.operator_tokens set expires_at = now() - interval '1 second' where name = 'reader'"); err != nil {
		t.Fatal(err)
	}
	r := send("GET", moves, tokens["reader"], "")
	wantProblem(t, r, 401, "expired")
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("an expired token's challenge: %q", r.header.Get("WWW-Authenticate"))
	}
	ts, err := reg.OperatorTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range ts {
		if tok.Name == "reader" && !slices.Equal(tok.Scopes, []tenancy.Scope{tenancy.ScopeRead}) {
			t.Fatalf("the default scopes: %v", tok.Scopes)
		}
		if tok.Name == "mover" && (tok.Expires.Sub(time.Now()) < tenancy.DefaultOperatorTokenTTL-time.Minute || tok.Expires.Sub(time.Now()) > tenancy.DefaultOperatorTokenTTL) {
			t.Fatalf("the default lifetime: expires %v", tok.Expires)
		}
	}
}

func TestOperatorTokenOptionsAreChecked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPrimary(t)
	reg := tenancy.NewRegistry(pgtest.Pool(t, db.AdminURL, 2), db.AdminURL, "localhost", vaulttest.Shared(t).Connect(t), &tenancy.Migrator{})
	for _, o := range []tenancy.OperatorTokenOptions{
		{TTL: -time.Hour},
		{TTL: time.Second},
		{TTL: tenancy.MaxOperatorTokenTTL + time.Hour},
		{Scopes: []tenancy.Scope{"admin"}},
	} {
		if _, err := reg.CreateOperatorToken(ctx, "ops", o); err == nil || !strings.Contains(err.Error(), map[bool]string{true: "expires_in", false: "scope"}[o.Scopes == nil]) {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	if _, err := tenancy.ParseScopes("read,,move"); err == nil {
		t.Fatal("an empty scope parsed")
	}
	if got, err := tenancy.ParseScopes("retire, read,retire"); err != nil || !slices.Equal(got, []tenancy.Scope{tenancy.ScopeRead, tenancy.ScopeRetire}) {
		t.Fatalf("ParseScopes: %v %v", got, err)
	}
	if ts, err := reg.OperatorTokens(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("refused tokens were made: %v %v", ts, err)
	}
}

func TestOperatorActionThatCannotBeRecordedIsNotCarriedOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPrimary(t)
	admin := pgtest.Pool(t, db.AdminURL, 4)
	reg := tenancy.NewRegistry(admin, db.AdminURL, "localhost", vaulttest.Shared(t).Connect(t), &tenancy.Migrator{})
	for _, slug := range []string{"acme", "globex"} {
		if _, err := reg.Create(ctx, tenancy.CreateParams{Slug: slug, Name: slug}); err != nil {
			t.Fatal(err)
		}
	}
	token, err := reg.CreateOperatorToken(ctx, "ops", tenancy.OperatorTokenOptions{Scopes: tenancy.Scopes})
	if err != nil {
		t.Fatal(err)
	}
	send := operatorAPI(t, reg)
	mover := tenancy.NewMover(reg)
	mv, err := mover.Begin(ctx, "acme", tenancy.Promote, tenancy.MoveOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	// The record cannot be written.
	if _, err := admin.Exec(ctx, "alter table control.operator_actions rename to operator_actions_away"); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, send("POST", "/v1/operator/tenants/acme/moves/"+mv.ID.String()+"/abort", token, ""), 503, "")
	if got, err := mover.Get(ctx, mv.ID); err != nil || got.State != tenancy.MoveRunning {
		t.Fatalf("an unrecorded abort ran: %+v %v", got, err)
	}
	// A promotion is rolled back before it runs.
	wantProblem(t, send("POST", "/v1/operator/tenants/globex/promote", token, ""), 503, "")
	if tn, err := reg.Get(ctx, "globex"); err != nil || tn.Status != tenancy.Active || tn.Placement != tenancy.Shared {
		t.Fatalf("after an unrecorded promotion: %+v %v", tn, err)
	}
	moves, err := mover.List(ctx, "globex", 10)
	if err != nil || len(moves) != 1 || moves[0].State != tenancy.MoveAborted || moves[0].StartedBy != "operator ops" {
		t.Fatalf("globex's moves after an unrecorded promotion: %+v %v", moves, err)
	}
	if _, err := admin.Exec(ctx, "alter table control.operator_actions_away rename to operator_actions"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := admin.QueryRow(ctx, "select count(*) from control.operator_actions").Scan(&n); err != nil || n != 0 {
		t.Fatalf("actions: %d %v", n, err)
	}
}

func TestOperatorTokensFromBeforeScopesKeepWorking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.NewPrimary(t)
	p := pgtest.Migrations(t, db.AdminURL, migrations.Control(), "gatehouse.control_migrations")
	// The control plane as it was before scopes, with a token made then.
	if _, err := p.DownTo(ctx, 7); err != nil {
		t.Fatal(err)
	}
	const token = "gho_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	hash := sha256.Sum256([]byte(token))
	if _, err := pgtest.Pool(t, db.AdminURL, 1).Exec(ctx, "insert into control.operator_tokens (name, token_hash) values ('old', $1)", hash[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatal(err)
	}
	reg := tenancy.NewRegistry(pgtest.Pool(t, db.AdminURL, 2), db.AdminURL, "localhost", vaulttest.Shared(t).Connect(t), &tenancy.Migrator{})
	op, err := reg.Operator(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	// It keeps what it could do, and expires with the default lifetime.
	if op.Name != "old" || !slices.Equal(op.Scopes, tenancy.Scopes) {
		t.Fatalf("the old token after the migration: %+v", op)
	}
	if left := time.Until(op.Expires); left < tenancy.DefaultOperatorTokenTTL-time.Hour || left > tenancy.DefaultOperatorTokenTTL {
		t.Fatalf("the old token expires in %v", left)
	}
}
