package httpapi_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
)

// strictBody is a request body with a field of each shape: nested object,
// list of objects, map.
type strictBody struct {
	Email   string            `json:"email"`
	Subject strictInner       `json:"subject"`
	Items   []strictInner     `json:"items"`
	Labels  map[string]string `json:"labels"`
}

type strictInner struct {
	ID string `json:"id"`
}

// TestStrictDecodingRefusesWhatPostgresOrAReaderWouldNot: bodies that
// encoding/json lets through, but that would reach Postgres as NUL or
// invalid UTF-8, or that a strict reading of the documented fields
// refuses, answer 400 naming the field.
func TestStrictDecodingRefusesWhatPostgresOrAReaderWouldNot(t *testing.T) {
	t.Parallel()
	app := fiber.New(fiber.Config{ErrorHandler: problem.Handler(slog.New(slog.DiscardHandler), func(*fiber.Ctx) string { return "r1" })})
	app.Post("/strict", func(c *fiber.Ctx) error {
		var v strictBody
		if err := httpapi.DecodeJSON(c, &v); err != nil {
			return err
		}
		return c.JSON(v)
	})
	send := func(method, target, b string) (int, problem.Details) {
		req, _ := http.NewRequest(method, "http://example.test"+target, strings.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		res, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var d problem.Details
		json.NewDecoder(res.Body).Decode(&d)
		return res.StatusCode, d
	}
	tests := []struct {
		name, body, field string
	}{
		{"key in upper case", `{"EMAIL":"a@example.com"}`, "EMAIL"},
		{"nested key in mixed case", `{"subject":{"Id":"x"}}`, "subject.Id"},
		{"duplicate key", `{"email":"a@example.com","email":"b@example.com"}`, "email"},
		{"duplicate nested key", `{"items":[{"id":"1","id":"2"}]}`, "items[0].id"},
		{"NUL in a string", `{"email":"a\u0000@example.com"}`, "email"},
		{"NUL in a list", `{"items":[{"id":"ok"},{"id":"\u0000"}]}`, "items[1].id"},
		{"NUL in a map value", `{"labels":{"a":"\u0000"}}`, "labels.a"},
		{"invalid UTF-8", "{\"email\":\"\xff\xfe\"}", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, d := send("POST", "/strict", tt.body)
			if status != 400 {
				t.Fatalf("answered %d %+v, want 400", status, d)
			}
			if tt.field != "" && (len(d.Errors) != 1 || d.Errors[0].Field != tt.field) {
				t.Fatalf("errors %+v, want one naming %s", d.Errors, tt.field)
			}
		})
	}
	if status, d := send("POST", "/strict", `{"email":"a@example.com","subject":{"id":"x"},"items":[{"id":"1"}],"labels":{"A":"b"}}`); status != 200 {
		t.Fatalf("a good body: %d %+v", status, d)
	}
}
