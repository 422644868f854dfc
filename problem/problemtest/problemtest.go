// Package problemtest checks, in tests, that an HTTP answer is the
// RFC 9457 problem the project answers every error with.
package problemtest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/problem"
)

// Want fails t unless an answer (its status, Content-Type and body) is a
// problem+json of status whose detail contains detail, with a title and
// the request's id; it returns the problem.
func Want(t testing.TB, status int, contentType string, body []byte, want int, detail string) problem.Details {
	t.Helper()
	if status != want || !strings.HasPrefix(contentType, problem.ContentType) {
		t.Fatalf("got %d %q %s; want %d problem+json", status, contentType, body, want)
	}
	var d problem.Details
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("problem body %s: %v", body, err)
	}
	if d.Status != want || d.Title == "" || d.RequestID == "" || !strings.Contains(d.Detail, detail) {
		t.Fatalf("problem %+v, want status %d, a title, a request id and detail containing %q", d, want, detail)
	}
	return d
}
