package httpapi_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
)

// FuzzDecodeJSON feeds DecodeJSON any body under any content type: it
// never panics, refuses with a 4xx problem or decodes, and what it
// decodes holds no NUL.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"email":"a@example.com","items":[{"id":"x"}],"subject":{"id":"y"}}`,
		`{"EMAIL":"x"}`, `{"email":"a","email":"b"}`, `{"email":"\u0000"}`, "{\"email\":\"\xff\"}",
		`{"items":[{"id":1}]}`, `[]`, `null`, `{"email":"a"} {}`, `{"labels":{"k":"\u0000"}}`, ``, `{`,
	} {
		f.Add(seed, "application/json")
	}
	f.Add(`email=a`, "application/x-www-form-urlencoded")
	app := fiber.New(fiber.Config{ErrorHandler: problem.Handler(slog.New(slog.DiscardHandler), func(*fiber.Ctx) string { return "fuzz" })})
	var decoded strictBody
	var refused error
	app.Post("/", func(c *fiber.Ctx) error {
		decoded, refused = strictBody{}, nil
		refused = httpapi.DecodeJSON(c, &decoded)
		return c.SendStatus(fiber.StatusNoContent)
	})
	f.Fuzz(func(t *testing.T, b, contentType string) {
		req, err := http.NewRequest("POST", "http://example.test/", strings.NewReader(b))
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Content-Type", contentType)
		res, err := app.Test(req, -1)
		if err != nil {
			t.Skip() // a content type net/http will not send
		}
		res.Body.Close()
		if refused != nil {
			if s := problem.Status(problem.CodeOf(refused)); s < 400 || s >= 500 {
				t.Fatalf("%q refused with %d: %v", b, s, refused)
			}
			return
		}
		all := []string{decoded.Email, decoded.Subject.ID}
		for _, it := range decoded.Items {
			all = append(all, it.ID)
		}
		for k, v := range decoded.Labels {
			all = append(all, k, v)
		}
		for _, s := range all {
			if strings.ContainsRune(s, 0) {
				t.Fatalf("%q decoded a NUL", b)
			}
		}
	})
}
