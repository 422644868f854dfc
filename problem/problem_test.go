package problem_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/gatehouse/gatehouse/problem"
)

func TestOnlyProblemMessagesReachTheCaller(t *testing.T) {
	t.Parallel()
	cause := errors.New("dial tcp 10.0.0.7:5432: password authentication failed")
	tests := []struct {
		name   string
		err    error
		code   problem.Code
		status int
		detail string
	}{
		{"plain error", cause, problem.Internal, 500, "Internal error"},
		{"wrapped plain error", fmt.Errorf("load: %w", cause), problem.Internal, 500, "Internal error"},
		{"problem", problem.Errorf(problem.NotFound, "no tenant %q", "x"), problem.NotFound, 404, `no tenant "x"`},
		{"wrapped problem", fmt.Errorf("resolve: %w", problem.Errorf(problem.Forbidden, "suspended")), problem.Forbidden, 403, "suspended"},
		{"problem hiding its cause", problem.Wrap(problem.Unavailable, cause, "database unavailable"), problem.Unavailable, 503, "database unavailable"},
		{"internal problem", problem.Wrap(problem.Internal, cause, "oops: details"), problem.Internal, 500, "Internal error"},
		{"invalid field", problem.InvalidField("slug", "is reserved"), problem.Invalid, 400, "slug: is reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := problem.DetailsOf(tt.err)
			if d.Code != tt.code || d.Status != tt.status || d.Detail != tt.detail || d.Title != http.StatusText(tt.status) {
				t.Fatalf("DetailsOf = %+v, want code %s, status %d, detail %q", d, tt.code, tt.status, tt.detail)
			}
		})
	}
	if problem.CodeOf(nil) != "" {
		t.Fatal("CodeOf(nil) is not empty")
	}
	if !errors.Is(problem.Wrap(problem.Unavailable, cause, "x"), cause) {
		t.Fatal("Wrap loses its cause for errors.Is")
	}
	d := problem.DetailsOf(problem.InvalidField("email", "too long"))
	if len(d.Errors) != 1 || d.Errors[0] != (problem.FieldError{Field: "email", Reason: "too long"}) {
		t.Fatalf("field errors: %+v", d.Errors)
	}
}
