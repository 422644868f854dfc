package identity_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/identity"
	"github.com/gatehouse/gatehouse/tenancy"
)

func TestAuditChainCatchesTampering(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	acme := e.tenant("acme", tenancy.Shared, "")
	globex := e.tenant("globex", tenancy.Shared, "")
	e.signup("acme", "audit@example.com", goodPassword)
	tok := e.login("acme", "audit@example.com", goodPassword)
	e.do("POST", "acme", "/v1/auth/login", "", map[string]string{"email": "audit@example.com", "password": "wrong-password-here"})
	e.must(204, "POST", "acme", "/v1/auth/logout", tok.AccessToken, nil)
	e.signup("globex", "audit@example.com", goodPassword)

	verify := func(tn *tenancy.Tenant) (int64, *identity.AuditBreak) {
		t.Helper()
		n, brk, err := identity.VerifyAudit(ctx, e.data, tn)
		if err != nil {
			t.Fatal(err)
		}
		return n, brk
	}
	if n, brk := verify(acme); brk != nil || n != 4 {
		t.Fatalf("intact chain: %d events, break %+v; want 4, none", n, brk)
	}
	var out strings.Builder
	if n, err := identity.ExportAudit(ctx, e.data, acme, &out); err != nil || n != 4 {
		t.Fatalf("export: %d events, %v", n, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var prev string
	for i, line := range lines {
		var rec identity.AuditRecord
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Seq != int64(i+1) || len(rec.Hash) != 64 || (i > 0 && rec.PrevHash != prev) || rec.Action == "" {
			t.Fatalf("exported line %d: %s", i+1, line)
		}
		prev = rec.Hash
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := e.admin.Exec(ctx, sql, append([]any{acme.ID.UUID()}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	// An operator with database access rewrites history: each is caught.
	exec("create table public.saved as select * from app.audit_events where tenant_id = $1")
	exec("update app.audit_events set target = 'user:someone-else' where tenant_id = $1 and seq = 2")
	if _, brk := verify(acme); brk == nil || brk.Seq != 2 || !strings.Contains(brk.Reason, "altered") {
		t.Fatalf("altered event: %+v", brk)
	}
	if _, brk := verify(globex); brk != nil {
		t.Fatalf("another tenant's chain broke too: %+v", brk)
	}
	exec("delete from app.audit_events where tenant_id = $1 and seq = 3")
	if _, brk := verify(acme); brk == nil || brk.Seq != 2 {
		t.Fatalf("after deleting event 3 the first break is %+v, want still 2", brk)
	}
	exec("update app.audit_events set target = (select target from saved where seq = 2) where tenant_id = $1 and seq = 2")
	if _, brk := verify(acme); brk == nil || brk.Seq != 3 || !strings.Contains(brk.Reason, "missing") {
		t.Fatalf("deleted event: %+v", brk)
	}
	exec("insert into app.audit_events select * from saved where tenant_id = $1 and seq = 3")
	if _, brk := verify(acme); brk != nil {
		t.Fatalf("restored chain: %+v", brk)
	}
	exec("delete from app.audit_events where tenant_id = $1 and seq = 4")
	if _, brk := verify(acme); brk == nil || !strings.Contains(brk.Reason, "head") {
		t.Fatalf("truncated chain: %+v", brk)
	}
}
