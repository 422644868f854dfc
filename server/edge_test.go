package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/server"
)

// startPlain runs a server with one JSON endpoint (POST /echo) and no
// tenant routes, and returns its address.
func startPlain(t *testing.T, cfg server.Config) string {
	t.Helper()
	srv := server.New(cfg, server.Deps{
		Log: slog.New(slog.DiscardHandler),
		Plain: []func(fiber.Router){func(r fiber.Router) {
			r.Post("/echo", func(c *fiber.Ctx) error {
				var v struct{ Name string }
				if err := server.DecodeJSON(c, &v); err != nil {
					return err
				}
				return c.JSON(v)
			})
		}},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.App().Listener(ln)
	t.Cleanup(func() { srv.App().Shutdown() })
	return ln.Addr().String()
}

// rawExchange writes raw bytes to addr (then waits pause, if any, before
// reading) and returns the answer's status and problem body.
func rawExchange(t *testing.T, addr string, raw []byte) (int, http.Header, problem.Details) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(raw); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer res.Body.Close()
	var d problem.Details
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, problem.ContentType) {
		t.Errorf("answer %d is %q, want %s", res.StatusCode, ct, problem.ContentType)
	} else if err := json.NewDecoder(res.Body).Decode(&d); err != nil {
		t.Errorf("answer %d: %v", res.StatusCode, err)
	}
	return res.StatusCode, res.Header, d
}

// gzipped compresses b level times over.
func gzipped(t *testing.T, b []byte, level int) []byte {
	t.Helper()
	for range level {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		b = buf.Bytes()
	}
	return b
}

func request(method, path, body string, headers ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n", method, path)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return []byte(b.String())
}

// TestClientFaultsAreProblemsWithTheirOwnStatus sends what broken or
// hostile clients send; each answer is a problem+json body with the
// status that names the client's fault, never a 5xx.
func TestClientFaultsAreProblemsWithTheirOwnStatus(t *testing.T) {
	t.Parallel()
	addr := startPlain(t, server.Config{ReadTimeout: 500 * time.Millisecond})

	// A bomb: 256 MiB of zeros, gzipped twice, is a few hundred bytes.
	bomb := gzipped(t, make([]byte, 64<<20), 2)
	if len(bomb) > 200<<10 {
		t.Fatalf("the bomb is %d bytes", len(bomb))
	}
	tests := []struct {
		name   string
		raw    []byte
		status int
	}{
		{"gzip body", request("POST", "/echo", string(gzipped(t, []byte(`{"name":"x"}`), 1)), "Content-Type", "application/json", "Content-Encoding", "gzip"), 415},
		{"nested gzip bomb", request("POST", "/echo", string(bomb), "Content-Type", "application/json", "Content-Encoding", "gzip, gzip"), 415},
		{"deflate", request("POST", "/echo", "xx", "Content-Type", "application/json", "Content-Encoding", "deflate"), 415},
		{"brotli", request("POST", "/echo", "xx", "Content-Type", "application/json", "Content-Encoding", "br"), 415},
		{"unknown method", request("FROB", "/echo", ""), 405},
		{"headers over the read buffer", request("GET", "/healthz", "", "X-Filler", strings.Repeat("a", 8<<10)), 431},
		{"body cut short", []byte("POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na"), 408},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, _, d := rawExchange(t, addr, tt.raw)
			if status != tt.status || d.Status != tt.status {
				t.Fatalf("answered %d (%+v), want %d", status, d, tt.status)
			}
		})
	}
	// identity is no encoding at all.
	status, _, _ := rawExchange(t, addr, request("POST", "/echo", `{"name":`, "Content-Type", "application/json", "Content-Encoding", "identity"))
	if status != 400 {
		t.Fatalf("identity encoding: %d, want 400 for the broken JSON", status)
	}
}

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

// TestStrictDecodingRefusesWhatPostgresOrAReaderWouldNot: bodies and
// query strings that encoding/json or fiber let through, but that would
// reach Postgres as NUL or invalid UTF-8, or that a strict reading of the
// documented fields refuses, answer 400 naming the field.
func TestStrictDecodingRefusesWhatPostgresOrAReaderWouldNot(t *testing.T) {
	t.Parallel()
	srv := server.New(server.Config{}, server.Deps{
		Log: slog.New(slog.DiscardHandler),
		Plain: []func(fiber.Router){func(r fiber.Router) {
			r.Post("/strict", func(c *fiber.Ctx) error {
				var v strictBody
				if err := server.DecodeJSON(c, &v); err != nil {
					return err
				}
				return c.JSON(v)
			})
			r.Get("/search", func(c *fiber.Ctx) error { return c.SendString(c.Query("q")) })
		}},
	})
	send := func(method, target, b string) (int, problem.Details) {
		req, _ := http.NewRequest(method, "http://example.test"+target, strings.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		res, err := srv.App().Test(req, -1)
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
	for _, q := range []string{"?q=a%00b", "?q=%ff%fe", "?a%00=b"} {
		if status, _ := send("GET", "/search"+q, ""); status != 400 {
			t.Errorf("GET /search%s: %d, want 400", q, status)
		}
	}
	if status, _ := send("GET", "/search?q=caf%C3%A9", ""); status != 200 {
		t.Errorf("a good query: %d", status)
	}
}
