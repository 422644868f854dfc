package problem_test

import (
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/problem"
)

func TestRetryAfterBecomesAHeader(t *testing.T) {
	t.Parallel()
	app := fiber.New(fiber.Config{ErrorHandler: problem.Handler(slog.New(slog.DiscardHandler), func(*fiber.Ctx) string { return "r1" })})
	app.Get("/busy", func(*fiber.Ctx) error {
		e := problem.Errorf(problem.Unavailable, "busy")
		e.RetryAfter = 1500 * time.Millisecond
		return e
	})
	// Every 503 says when to try again: a second unless told.
	app.Get("/down", func(*fiber.Ctx) error { return problem.Errorf(problem.Unavailable, "down") })
	for path, want := range map[string]string{"/busy": "2", "/down": "1"} {
		res, err := app.Test(httptest.NewRequest("GET", path, nil))
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 503 || res.Header.Get("Retry-After") != want {
			t.Errorf("%s: %d, Retry-After %q; want 503, %q", path, res.StatusCode, res.Header.Get("Retry-After"), want)
		}
	}
}
