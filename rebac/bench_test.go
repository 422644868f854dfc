package rebac_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/rebac"
	"github.com/gatehouse/gatehouse/rebac/spicedbtest"
	"github.com/gatehouse/gatehouse/tenancy"
)

// BenchmarkDisabledQuestion measures what denying disabled accounts adds
// to a check of a user on an app's resource: the question and whether
// the user is disabled, in one CheckBulkPermissions call (what
// Service.Check sends), against CheckPermission of the question alone
// (what the check API sent before). The two alternate in one loop, so
// that both meet the same load; it reports their p50s and the ratio.
func BenchmarkDisabledQuestion(b *testing.B) {
	c := spicedbtest.Shared(b).Connect(b)
	ctx := context.Background()
	tn := tenancy.ID(uuid.New())
	at, err := c.Write(ctx, tn, []rebac.Relationship{
		rel("resource", "doc", "viewer", user("alice")),
		rel("tenant", rebac.TenantObject, "disabled", user("mallory")),
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	question := rebac.CheckItem{Subject: user("alice"), Permission: "view", Resource: ref("resource", "doc")}
	disabled := rebac.CheckItem{Subject: user("alice"), Permission: "disabled", Resource: ref("tenant", rebac.TenantObject)}
	single := func() time.Duration {
		start := time.Now()
		if ok, _, err := c.Check(ctx, tn, question.Subject, question.Permission, question.Resource, at); err != nil || !ok {
			b.Fatal(ok, err)
		}
		return time.Since(start)
	}
	paired := func() time.Duration {
		start := time.Now()
		if got, _, err := c.CheckBulk(ctx, tn, []rebac.CheckItem{question, disabled}, at); err != nil || !got[0] || got[1] {
			b.Fatal(got, err)
		}
		return time.Since(start)
	}
	var singles, pairs []time.Duration
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			singles = append(singles, single())
			pairs = append(pairs, paired())
		} else {
			pairs = append(pairs, paired())
			singles = append(singles, single())
		}
	}
	p50 := func(d []time.Duration) time.Duration {
		slices.Sort(d)
		return d[len(d)/2]
	}
	s, p := p50(singles), p50(pairs)
	b.ReportMetric(float64(s.Microseconds()), "check-p50-µs")
	b.ReportMetric(float64(p.Microseconds()), "with-disabled-p50-µs")
	b.ReportMetric(float64(p)/float64(s), "x-baseline-p50")
}
