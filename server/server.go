// Package server assembles Gatehouse's HTTP server: the middleware every
// request passes (request id, logs, security headers, limits, recovery),
// health endpoints, tenant resolution, and the routes each domain package
// registers from its own http.go.
//
// Invariant: every route that touches tenant data is registered behind the
// resolver's middleware, so a handler always finds its tenant in the context.
package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/gatehouse/gatehouse/problem"
	"github.com/gatehouse/gatehouse/tenancy"
)

// Config tunes the HTTP server. Zero values mean the defaults.
type Config struct {
	BodyLimit    int           // bytes; default 1 MiB
	ReadTimeout  time.Duration // default 10s
	WriteTimeout time.Duration // default 30s
	IdleTimeout  time.Duration // default 120s
}

// Deps are the services the server wires into routes.
type Deps struct {
	Log *slog.Logger
	// Resolver resolves each request's tenant for Routes; nil for a
	// server with no tenant routes (the operator API).
	Resolver *tenancy.Resolver
	// Ready holds the checks /readyz runs, by component name (database,
	// vault…); all must return nil for the server to be ready.
	Ready map[string]func(context.Context) error
	// Routes register domain packages' endpoints on the tenant router
	// (every request there has its tenant resolved).
	Routes []func(fiber.Router)
	// Plain routes are registered on no tenant's behalf (the operator API,
	// which authenticates its callers itself).
	Plain []func(fiber.Router)
}

// Server is Gatehouse's HTTP server.
type Server struct {
	app *fiber.App
	log *slog.Logger
}

// New builds the server and its routes.
func New(cfg Config, d Deps) *Server {
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = 1 << 20
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 120 * time.Second
	}
	problems := problem.Handler(d.Log, requestID)
	app := fiber.New(fiber.Config{
		AppName:               "gatehouse",
		BodyLimit:             cfg.BodyLimit,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		IdleTimeout:           cfg.IdleTimeout,
		DisableStartupMessage: true,
		// Requests refused before any middleware ran (a body over the
		// limit) still get the security headers.
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			setSecurityHeaders(c)
			return problems(c, err)
		},
		// No proxy is trusted, so X-Forwarded-Host cannot pick the tenant.
		EnableTrustedProxyCheck: true,
		// fiber's strings and byte slices (Hostname, Get, Params, Query,
		// Cookies, Body) otherwise point into buffers that the next
		// request on any connection overwrites: a value kept past its
		// handler (a cache key, a goroutine, an audit record) would
		// change under whoever kept it. Copies cost a few allocations a
		// request; a host key that changed under the resolver's cache
		// once served requests as the wrong tenant.
		Immutable: true,
	})
	s := &Server{app: app, log: d.Log}
	refuseUnknownMethods(app)
	closeSilentlyWhenNothingRead(app)

	// Recovery sits inside the access log, so a panic is logged as the 500
	// it becomes.
	app.Use(assignRequestID, securityHeaders, s.logRequests, refuseEncodedBodies, refuseBadQuery)
	app.Use(recover.New(recover.Config{EnableStackTrace: true, StackTraceHandler: func(c *fiber.Ctx, e any) {
		d.Log.Error("panic", "panic", fmt.Sprint(e), "request_id", requestID(c), "stack", string(debug.Stack()))
	}}))

	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(health{Status: "ok"}) })
	app.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		var failed []string
		var errs []error
		for _, name := range slices.Sorted(maps.Keys(d.Ready)) {
			if err := d.Ready[name](ctx); err != nil {
				// Internal causes stay in the log; the probe sees which
				// component failed and, for known conditions, why.
				failed = append(failed, name+": "+strings.ToLower(problem.MessageOf(err)))
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
		if len(failed) > 0 {
			return problem.Wrap(problem.Unavailable, errors.Join(errs...), "not ready: "+strings.Join(failed, "; "))
		}
		return c.JSON(health{Status: "ready"})
	})

	for _, routes := range d.Plain {
		routes(app)
	}
	if d.Resolver != nil {
		tenant := app.Group("/", d.Resolver.Middleware())
		tenancy.Routes(tenant)
		for _, routes := range d.Routes {
			routes(tenant)
		}
	}
	return s
}

// App exposes the fiber app, for tests that drive it in-process.
func (s *Server) App() *fiber.App { return s.app }

// Serve answers requests on ln until ctx ends, then shuts down gracefully:
// it stops accepting, lets requests in flight finish (up to grace), and
// returns.
// Serve, not App().Listener, is what closes a connection on which nothing
// arrived without answering it (see closeSilentlyWhenNothingRead).
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(watchedListener{ln}) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "grace", grace.String())
	if err := s.app.ShutdownWithTimeout(grace); err != nil {
		return err
	}
	if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

const requestIDHeader = "X-Request-Id"

// validRequestID accepts an incoming id only if it is short and plain, so a
// caller cannot inject into logs.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

func assignRequestID(c *fiber.Ctx) error {
	id := c.Get(requestIDHeader)
	if !validRequestID.MatchString(id) {
		id = uuid.NewString()
	} else {
		id = string([]byte(id)) // fiber reuses its buffers
	}
	c.Locals(requestIDHeader, id)
	c.Set(requestIDHeader, id)
	return c.Next()
}

// requestID returns the request's id. Requests refused before any
// middleware ran (a body over the limit) get one here.
func requestID(c *fiber.Ctx) string {
	id, _ := c.Locals(requestIDHeader).(string)
	if id == "" {
		id = uuid.NewString()
		c.Locals(requestIDHeader, id)
		c.Set(requestIDHeader, id)
	}
	return id
}

// refuseUnknownMethods answers a method fiber does not know (FROB, say)
// with a problem, like every other error: fiber itself would answer it
// with plain text before any middleware runs.
func refuseUnknownMethods(app *fiber.App) {
	known := map[string]bool{}
	for _, m := range app.Config().RequestMethods {
		known[m] = true
	}
	srv := app.Server()
	next := srv.Handler
	srv.Handler = func(fc *fasthttp.RequestCtx) {
		if known[string(fc.Method())] {
			next(fc)
			return
		}
		c := app.AcquireCtx(fc)
		defer app.ReleaseCtx(c)
		fc.Request.Header.SetMethod(fiber.MethodGet) // a method the error handler's ctx understands
		if err := app.Config().ErrorHandler(c, fiber.ErrMethodNotAllowed); err != nil {
			fc.SetStatusCode(fiber.StatusMethodNotAllowed)
		}
	}
}

// closeSilentlyWhenNothingRead closes, without writing anything, a
// connection that failed before a byte of a request arrived on it: an
// answer nobody asked for is a protocol error to an HTTP/1.1 client (RFC
// 9112 9.3.1), and the client that opened the connection and sent nothing
// would read a 408 as the answer to its next request. fasthttp keeps
// quiet itself between keep-alive requests, but on a new connection it
// hands the read timeout to its ErrorHandler as a bare read error, which
// fiber turns into a 408 that fasthttp then writes. Nor can the error or
// the request tell that case from a body that stalled (fasthttp resets
// the request when a body read fails), so the connection tells: Serve
// hands fasthttp connections that note whether a byte ever arrived.
// Connections not accepted by Serve keep fasthttp's behaviour.
func closeSilentlyWhenNothingRead(app *fiber.App) {
	srv := app.Server()
	next := srv.ErrorHandler
	srv.ErrorHandler = func(fc *fasthttp.RequestCtx, err error) {
		if c, ok := fc.Conn().(interface{ nothingRead() bool }); ok && c.nothingRead() {
			// fasthttp writes whatever response fc holds once this
			// returns; on a closed connection that write goes nowhere.
			fc.Conn().Close()
			return
		}
		next(fc, err)
	}
}

// watchedListener accepts connections that note whether a byte ever
// arrived on them.
type watchedListener struct{ net.Listener }

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w := &watchedConn{Conn: c}
	if tc, ok := c.(*tls.Conn); ok {
		return watchedTLSConn{w, tc}, nil
	}
	return w, nil
}

type watchedConn struct {
	net.Conn
	read atomic.Bool
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Store(true)
	}
	return n, err
}

func (c *watchedConn) nothingRead() bool { return !c.read.Load() }

// watchedTLSConn keeps the methods fasthttp looks for on a TLS connection
// (for ctx.IsTLS, and so fiber's c.Protocol, and for ALPN).
type watchedTLSConn struct {
	*watchedConn
	tls *tls.Conn
}

func (c watchedTLSConn) Handshake() error                     { return c.tls.Handshake() }
func (c watchedTLSConn) ConnectionState() tls.ConnectionState { return c.tls.ConnectionState() }

// refuseEncodedBodies refuses compressed request bodies before anything
// reads the body: fiber would inflate them without bound (a few hundred
// bytes of nested gzip become gigabytes) before any size check could
// run. No client of this API needs to compress what it sends.
func refuseEncodedBodies(c *fiber.Ctx) error {
	if enc := c.Get(fiber.HeaderContentEncoding); enc != "" && !strings.EqualFold(strings.TrimSpace(enc), "identity") {
		return problem.Errorf(problem.Unsupported, "compressed request bodies are not accepted: send the body without Content-Encoding")
	}
	return c.Next()
}

// refuseBadQuery refuses a query string whose names or values, decoded,
// hold NUL or are not UTF-8: nothing an endpoint takes may, and Postgres
// would refuse them with an error that is no fault of the server.
func refuseBadQuery(c *fiber.Ctx) error {
	var bad []byte
	c.Context().QueryArgs().VisitAll(func(k, v []byte) {
		for _, b := range [][]byte{k, v} {
			if bad == nil && (!utf8.Valid(b) || bytes.IndexByte(b, 0) >= 0) {
				bad = k
			}
		}
	})
	if bad != nil {
		return problem.InvalidField(strings.ToValidUTF8(strings.ReplaceAll(string(bad), "\x00", ""), "?"),
			"query parameters must be UTF-8 text without NUL characters")
	}
	return c.Next()
}

// securityHeaders are set on every answer. The API serves JSON only, so the
// content security policy forbids everything, framing included.
func securityHeaders(c *fiber.Ctx) error {
	setSecurityHeaders(c)
	return c.Next()
}

func setSecurityHeaders(c *fiber.Ctx) {
	c.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
	c.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set("Cross-Origin-Opener-Policy", "same-origin")
	c.Set("Cache-Control", "no-store")
}

// logRequests writes one JSON line per request with its tenant and id.
func (s *Server) logRequests(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	status := c.Response().StatusCode()
	if err != nil {
		// The error handler has not run yet; this is the status it will set.
		if fe, ok := errors.AsType[*fiber.Error](err); ok {
			status = fe.Code
		} else {
			status = problem.Status(problem.CodeOf(err))
		}
	}
	attrs := []any{
		"method", c.Method(), "path", c.Path(), "status", status,
		"duration_ms", float64(time.Since(start).Microseconds()) / 1000,
		"request_id", requestID(c),
	}
	if t, ok := tenancy.FromContext(c.UserContext()); ok {
		attrs = append(attrs, "tenant_id", t.ID.String())
	}
	s.log.InfoContext(c.UserContext(), "request", attrs...)
	return err
}

// health is the answer of /healthz and /readyz when all is well.
type health struct {
	Status string `json:"status"`
}
