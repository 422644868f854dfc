package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
)

// Helpers for domain packages' handlers, so that every endpoint reads
// requests and refuses bad ones alike.

// MaxBody bounds JSON request bodies: nothing an endpoint accepts is near.
const MaxBody = 16 << 10

// DecodeJSON reads a JSON request body into v: application/json only, at
// most MaxBody bytes, one object, no unknown fields. Every refusal names its
// reason.
func DecodeJSON(c *fiber.Ctx, v any) error {
	mt, _, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != fiber.MIMEApplicationJSON {
		return problem.Errorf(problem.Unsupported, "send the body as application/json")
	}
	body := c.Body()
	if len(body) > MaxBody {
		return problem.Errorf(problem.TooLarge, "request body too large (at most %d bytes)", MaxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return problem.Errorf(problem.Invalid, "the request body is empty; send a JSON object")
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			return problem.Errorf(problem.Invalid, "the request body is not valid JSON")
		case errors.As(err, &typ):
			if typ.Field == "" {
				return problem.Errorf(problem.Invalid, "the request body must be a JSON object")
			}
			return problem.InvalidField(typ.Field, fmt.Sprintf("must be a %s", jsonType(typ.Type.Kind().String())))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return problem.InvalidField(field, "is not a known field")
		}
		return problem.Errorf(problem.Invalid, "the request body is not valid JSON")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return problem.Errorf(problem.Invalid, "the request body must hold one JSON object and nothing after it")
	}
	return nil
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "ptr":
		return "string"
	}
	return kind
}

// Required refuses a request missing any of the named fields, naming all
// of them.
func Required(fields map[string]string) error {
	var missing []problem.FieldError
	for name, v := range fields {
		if v == "" {
			missing = append(missing, problem.FieldError{Field: name, Reason: "is required"})
		}
	}
	if len(missing) == 0 {
		return nil
	}
	// Stable order for clients and tests.
	sort.Slice(missing, func(i, j int) bool { return missing[i].Field < missing[j].Field })
	e := problem.Errorf(problem.Invalid, "%s: is required", missing[0].Field)
	e.Fields = missing
	return e
}

// NoStore keeps an answer out of every cache (it holds tokens or
// personal data).
func NoStore(c *fiber.Ctx) {
	c.Set(fiber.HeaderCacheControl, "no-store")
	c.Set(fiber.HeaderPragma, "no-cache")
}

// PathID reads a uuid path parameter; a malformed one is simply not found.
func PathID(c *fiber.Ctx, name, missing string) (uuid.UUID, error) {
	id, err := uuid.Parse(c.Params(name))
	if err != nil {
		return uuid.Nil, problem.Errorf(problem.NotFound, "%s", missing)
	}
	return id, nil
}

// IntQuery reads a non-negative integer query parameter.
func IntQuery(c *fiber.Ctx, name string, def int) (int, error) {
	v := c.Query(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, problem.InvalidField(name, "must be a non-negative integer")
	}
	return n, nil
}
