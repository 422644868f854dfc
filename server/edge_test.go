package server_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/gatehouse/gatehouse/internal/httpapi"
	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/server"
)

// startPlain runs a server with one JSON endpoint (POST /echo), one that
// answers the scheme fiber sees (GET /scheme) and no tenant routes, over
// TLS if tc is not nil, and returns its address.
func startPlain(t *testing.T, cfg server.Config, tc *tls.Config) string {
	t.Helper()
	srv := server.New(cfg, server.Deps{
		Log: slog.New(slog.DiscardHandler),
		Plain: []func(fiber.Router){func(r fiber.Router) {
			r.Post("/echo", func(c *fiber.Ctx) error {
				var v struct{ Name string }
				if err := httpapi.DecodeJSON(c, &v); err != nil {
					return err
				}
				return c.JSON(v)
			})
			r.Get("/scheme", func(c *fiber.Ctx) error { return c.SendString(c.Protocol()) })
		}},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return addr
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
	addr := startPlain(t, server.Config{ReadTimeout: 500 * time.Millisecond}, nil)

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

// TestIdleConnectionsCloseWithoutAnAnswer: a connection on which no byte
// of a next request has arrived is closed without a word when its timeout
// passes (RFC 9112 9.3.1: an answer nobody asked for is a protocol error
// to the client), over TLS too; a client that stalls part way through a
// request is told 408.
func TestIdleConnectionsCloseWithoutAnAnswer(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	cfg := server.Config{ReadTimeout: timeout, IdleTimeout: timeout}
	serverTLS, clientTLS := selfSigned(t)
	addrs := map[string]string{"http": startPlain(t, cfg, nil), "https": startPlain(t, cfg, serverTLS)}
	tests := []struct {
		name     string
		scheme   string
		answered int    // full keep-alive requests sent and answered first
		partial  string // then sent, and nothing more
		status   int    // 0: the server must close without writing
	}{
		{"new connection, nothing sent", "http", 0, "", 0},
		{"idle after an answer", "http", 1, "", 0},
		{"idle after two answers", "http", 2, "", 0},
		{"half a request line", "http", 0, "GET /sch", 408},
		{"half the headers", "http", 0, "POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-", 408},
		{"half a body", "http", 0, "POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"na", 408},
		{"half a second request", "http", 1, "GET /scheme HTTP/1.1\r\nHo", 408},
		{"TLS, nothing sent", "https", 0, "", 0},
		{"TLS, idle after an answer", "https", 1, "", 0},
		{"TLS, half a request line", "https", 0, "GET /sch", 408},
		{"TLS, half a body", "https", 0, "POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"na", 408},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var conn net.Conn
			var err error
			if tt.scheme == "https" {
				conn, err = tls.Dial("tcp", addrs[tt.scheme], clientTLS)
			} else {
				conn, err = net.Dial("tcp", addrs[tt.scheme])
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			// The test's bound, far past the server's timeouts.
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			for i := range tt.answered {
				if _, err := conn.Write([]byte("GET /scheme HTTP/1.1\r\nHost: example.test\r\n\r\n")); err != nil {
					t.Fatal(err)
				}
				res, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || res.Close || string(b) != tt.scheme {
					t.Fatalf("request %d: %d %q (close %t), want 200 %q on a kept-alive connection", i+1, res.StatusCode, b, res.Close, tt.scheme)
				}
			}
			if _, err := conn.Write([]byte(tt.partial)); err != nil {
				t.Fatal(err)
			}
			if tt.status == 0 {
				rest, err := io.ReadAll(br)
				if err != nil {
					t.Fatalf("connection not closed: %v (after %q)", err, rest)
				}
				if len(rest) > 0 {
					t.Fatalf("the server wrote %q on an idle connection, want nothing before it closes", rest)
				}
				return
			}
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer to a stalled request: %v", err)
			}
			defer res.Body.Close()
			var d problem.Details
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, problem.ContentType) {
				t.Fatalf("answer %d is %q, want %s", res.StatusCode, ct, problem.ContentType)
			}
			if err := json.NewDecoder(res.Body).Decode(&d); err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status || d.Status != tt.status {
				t.Fatalf("answered %d (%+v), want %d", res.StatusCode, d, tt.status)
			}
		})
	}
}

// selfSigned returns a server configuration with a certificate for
// 127.0.0.1 and a client configuration that trusts it.
func selfSigned(t *testing.T) (serverTLS, clientTLS *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		&tls.Config{RootCAs: roots}
}

// TestMalformedQueryStringsAreRefused: query strings that fiber lets
// through but that would reach Postgres as NUL or invalid UTF-8 answer
// 400 before any handler.
func TestMalformedQueryStringsAreRefused(t *testing.T) {
	t.Parallel()
	srv := server.New(server.Config{}, server.Deps{
		Log: slog.New(slog.DiscardHandler),
		Plain: []func(fiber.Router){func(r fiber.Router) {
			r.Get("/search", func(c *fiber.Ctx) error { return c.SendString(c.Query("q")) })
		}},
	})
	send := func(target string) int {
		res, err := srv.App().Test(httptest.NewRequest("GET", "http://example.test"+target, nil), -1)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, q := range []string{"?q=a%00b", "?q=%ff%fe", "?a%00=b"} {
		if status := send("/search" + q); status != 400 {
			t.Errorf("GET /search%s: %d, want 400", q, status)
		}
	}
	if status := send("/search?q=caf%C3%A9"); status != 200 {
		t.Errorf("a good query: %d", status)
	}
}
