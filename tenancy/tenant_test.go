package tenancy_test

import (
	"encoding/json"
	"testing"

	"github.com/gatehouse/gatehouse/tenancy"
)

func TestTenantIDIsTextInJSON(t *testing.T) {
	t.Parallel()
	id, err := tenancy.ParseID("7f1d4c2e-9a51-4f0e-8a8b-2f4b1c9d0e11")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]tenancy.ID{"tenant_id": id})
	if err != nil || string(b) != `{"tenant_id":"7f1d4c2e-9a51-4f0e-8a8b-2f4b1c9d0e11"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	var back map[string]tenancy.ID
	if err := json.Unmarshal(b, &back); err != nil || back["tenant_id"] != id {
		t.Fatalf("unmarshal: %v, %v", back, err)
	}
}
