package problem

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"
)

// ContentType is the media type of every error body (RFC 9457).
const ContentType = "application/problem+json"

// Details is the RFC 9457 body Gatehouse answers errors with.
type Details struct {
	Type      string       `json:"type"`
	Title     string       `json:"title"`
	Status    int          `json:"status"`
	Detail    string       `json:"detail,omitempty"`
	Code      Code         `json:"code"`
	Instance  string       `json:"instance,omitempty"`
	RequestID string       `json:"request_id,omitempty"`
	Errors    []FieldError `json:"errors,omitempty"`
}

// DetailsOf builds the body for err, showing only what the caller may see.
func DetailsOf(err error) Details {
	code := CodeOf(err)
	var fields []FieldError
	if e, ok := errors.AsType[*Error](err); ok {
		fields = e.Fields
	}
	status := Status(code)
	return Details{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: MessageOf(err),
		Code:   code,
		Errors: fields,
	}
}

// fromFiber turns fiber's own errors (unknown route, body too large, bad
// method…) into *Error so they render like ours.
func fromFiber(fe *fiber.Error) *Error {
	switch fe.Code {
	case fiber.StatusNotFound:
		return Errorf(NotFound, "no such endpoint")
	case fiber.StatusMethodNotAllowed:
		return Errorf(NotAllowed, "method not allowed")
	case fiber.StatusRequestEntityTooLarge:
		return Errorf(TooLarge, "request body too large")
	case fiber.StatusRequestTimeout:
		return Errorf(ClientTimeout, "the request was not received in time")
	case fiber.StatusRequestHeaderFieldsTooLarge:
		return Errorf(HeadersTooLarge, "the request header is too large")
	}
	if fe.Code >= 400 && fe.Code < 500 {
		return Errorf(Invalid, "%s", fe.Message)
	}
	return Wrap(Internal, fe, "Internal error")
}

// Handler is the fiber ErrorHandler: every error a handler or middleware
// returns becomes a problem+json response here, and nowhere else. Internal
// errors are logged with their cause; the client sees "Internal error".
func Handler(log *slog.Logger, requestID func(*fiber.Ctx) string) fiber.ErrorHandler {
	return func(c *fiber.Ctx, err error) error {
		if fe, ok := errors.AsType[*fiber.Error](err); ok {
			err = fromFiber(fe)
		}
		d := DetailsOf(err)
		d.Instance = c.Path()
		d.RequestID = requestID(c)
		if d.Code == Internal {
			log.ErrorContext(c.UserContext(), "internal error",
				"err", err, "request_id", d.RequestID, "path", c.Path())
		}
		if retry := RetryAfterOf(err); retry > 0 {
			c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
		}
		c.Set(fiber.HeaderContentType, ContentType)
		c.Status(d.Status)
		return c.JSON(d, ContentType)
	}
}
