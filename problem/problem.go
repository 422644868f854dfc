// Package problem is Gatehouse's error vocabulary: a small Error type with a
// transport-neutral Code that services return, and the one place where codes
// become HTTP statuses and RFC 9457 application/problem+json bodies.
//
// Invariant: only an *Error's Message ever reaches a client. Any other error
// is reported as "Internal error" and logged, so wrapped causes (which may
// name hosts, queries or worse) never leak.
package problem

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Code classifies an error for the caller. The set is small on purpose:
// handlers map it to an HTTP status, the CLI to a message and exit code.
type Code string

// Error codes.
const (
	Internal     Code = "internal"     // a bug or an unexpected failure: 500
	Invalid      Code = "invalid"      // the request is malformed or breaks a rule: 400
	Unauthorized Code = "unauthorized" // no or bad credentials: 401
	Forbidden    Code = "forbidden"    // the caller may not do this: 403
	NotFound     Code = "not_found"    // no such thing, or the caller may not know it exists: 404
	NotAllowed   Code = "not_allowed"  // the method is not supported on this resource: 405
	Conflict     Code = "conflict"     // clashes with the current state: 409
	TooLarge     Code = "too_large"    // the request body is over the limit: 413
	Unsupported  Code = "unsupported"  // the request body's media type or encoding is not accepted: 415
	TooMany      Code = "too_many"     // rate limited: 429
	Unavailable  Code = "unavailable"  // a dependency is down, try again later: 503
	Timeout      Code = "timeout"      // the operation took too long: 504

	ClientTimeout   Code = "client_timeout"    // the client did not send its request in time: 408
	HeadersTooLarge Code = "headers_too_large" // the request's header is over the limit: 431
)

// Error is an error meant to be shown to the caller.
type Error struct {
	Code    Code
	Message string
	// Fields lists per-field validation failures, for Invalid.
	Fields []FieldError
	// Err is an optional cause, kept for logs and errors.Is, never shown.
	Err error
	// RetryAfter, for Unavailable and TooMany, says when to try again; it
	// becomes the Retry-After header (whole seconds, rounded up).
	RetryAfter time.Duration
}

// FieldError says which input field broke which rule.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given code and message that keeps err as
// its hidden cause.
func Wrap(code Code, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// InvalidField returns an Invalid error for one field.
func InvalidField(field, reason string) *Error {
	return &Error{
		Code:    Invalid,
		Message: fmt.Sprintf("%s: %s", field, reason),
		Fields:  []FieldError{{Field: field, Reason: reason}},
	}
}

// CodeOf returns the code of the first *Error in err's chain, Internal if
// there is none, and "" for a nil error.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return Internal
}

// RetryAfterOf returns when a caller refused with err may try again: the
// error's RetryAfter, and for Unavailable at least a second; 0 when err
// says nothing of it.
func RetryAfterOf(err error) time.Duration {
	e, ok := errors.AsType[*Error](err)
	if !ok {
		return 0
	}
	if e.Code == Unavailable {
		return max(e.RetryAfter, time.Second)
	}
	return e.RetryAfter
}

// MessageOf returns the message a caller may see for err.
func MessageOf(err error) string {
	if e, ok := errors.AsType[*Error](err); ok && e.Code != Internal {
		return e.Message
	}
	return "Internal error"
}

// Status maps a code to its HTTP status.
func Status(c Code) int {
	switch c {
	case Invalid:
		return http.StatusBadRequest
	case Unauthorized:
		return http.StatusUnauthorized
	case Forbidden:
		return http.StatusForbidden
	case NotFound:
		return http.StatusNotFound
	case NotAllowed:
		return http.StatusMethodNotAllowed
	case Conflict:
		return http.StatusConflict
	case TooLarge:
		return http.StatusRequestEntityTooLarge
	case Unsupported:
		return http.StatusUnsupportedMediaType
	case TooMany:
		return http.StatusTooManyRequests
	case Unavailable:
		return http.StatusServiceUnavailable
	case Timeout:
		return http.StatusGatewayTimeout
	case ClientTimeout:
		return http.StatusRequestTimeout
	case HeadersTooLarge:
		return http.StatusRequestHeaderFieldsTooLarge
	default:
		return http.StatusInternalServerError
	}
}
