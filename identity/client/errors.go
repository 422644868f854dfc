package client

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"time"
)

// APIError is Gatehouse's answer to a request it refused: its
// application/problem+json body (RFC 9457), or what could be had of an
// answer without one (a proxy's, say).
type APIError struct {
	Status int    // the HTTP status
	Code   string // Gatehouse's error code: invalid, unauthorized, forbidden, too_many, unavailable…; empty without a problem body
	Detail string // what went wrong, for people
	// Fields lists which input fields broke which rule (400).
	Fields []FieldError
	// RetryAfter is when to try again (429, 503), from Retry-After; 0 if
	// not said.
	RetryAfter time.Duration
	// RequestID names the request in Gatehouse's logs.
	RequestID string
}

// FieldError says which input field broke which rule.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	return fmt.Sprintf("gatehouse: %d %s: %s", e.Status, code, e.Detail)
}

// apiError reads a refusal (at now, for a Retry-After that is a date).
func apiError(res *http.Response, now time.Time) *APIError {
	e := &APIError{Status: res.StatusCode, RetryAfter: retryAfter(res.Header.Get("Retry-After"), now)}
	media, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if media == "application/problem+json" || media == "application/json" {
		var p struct {
			Code      string       `json:"code"`
			Detail    string       `json:"detail"`
			RequestID string       `json:"request_id"`
			Errors    []FieldError `json:"errors"`
		}
		if b, err := readBounded(res.Body, maxProblem); err == nil && json.Unmarshal(b, &p) == nil {
			e.Code, e.Detail, e.RequestID, e.Fields = p.Code, p.Detail, p.RequestID, p.Errors
		}
	}
	if e.Detail == "" {
		e.Detail = http.StatusText(e.Status)
	}
	return e
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}
