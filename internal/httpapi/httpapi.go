// Package httpapi is what every domain's HTTP handlers share, so that
// every endpoint reads requests and refuses bad ones alike: strict JSON
// decoding, required fields, path and query parameters, and answers kept
// out of caches (the request's tenant is tenancy.Of). It knows nothing of how the
// server is assembled (package server does that).
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"
	"github.com/google/uuid"

	"github.com/gatehouse/gatehouse/problem"
)

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
	if !utf8.Valid(body) {
		return problem.Errorf(problem.Invalid, "the request body is not valid UTF-8 text")
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
	// encoding/json matches keys case-insensitively, keeps the last of
	// duplicates and lets "\u0000" through: check what it let pass.
	return checkShape(json.NewDecoder(bytes.NewReader(body)), reflect.TypeOf(v), "")
}

// checkShape walks one JSON value's tokens beside the Go type t it was
// decoded into (nil: any) and refuses what encoding/json accepts but a
// strict reading must not: a key that matches a field only in another
// letter case, a key given twice in one object, and a string holding NUL
// (which Postgres refuses). The body has already decoded without error.
func checkShape(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return problem.Errorf(problem.Invalid, "the request body is not valid JSON")
	}
	switch tok := tok.(type) {
	case string:
		if strings.ContainsRune(tok, 0) {
			return problem.InvalidField(fieldName(path), "must not contain NUL characters")
		}
	case json.Delim:
		if tok == '[' {
			var elem reflect.Type
			if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
				elem = t.Elem()
			}
			for i := 0; dec.More(); i++ {
				if err := checkShape(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		} else {
			fields := jsonFields(t)
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return problem.Errorf(problem.Invalid, "the request body is not valid JSON")
				}
				key := k.(string)
				name := key
				if path != "" {
					name = path + "." + key
				}
				if seen[key] {
					return problem.InvalidField(fieldName(name), "is given more than once")
				}
				seen[key] = true
				if strings.ContainsRune(key, 0) {
					return problem.Errorf(problem.Invalid, "the request body's keys must not contain NUL characters")
				}
				var vt reflect.Type
				switch {
				case fields != nil:
					f, ok := fields[key]
					if !ok {
						for known, kf := range fields {
							if !strings.EqualFold(known, key) {
								continue
							}
							if kf.tagged {
								return problem.InvalidField(fieldName(name), fmt.Sprintf("is not a known field (field names are lower case: %s)", known))
							}
							f = kf // an untagged Go field: encoding/json's own matching
						}
					}
					vt = f.typ
				case t != nil && t.Kind() == reflect.Map:
					vt = t.Elem()
				}
				if err := checkShape(dec, vt, name); err != nil {
					return err
				}
			}
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return problem.Errorf(problem.Invalid, "the request body is not valid JSON")
		}
	}
	return nil
}

// jsonField is a struct field as encoding/json decodes it.
type jsonField struct {
	typ    reflect.Type
	tagged bool // named by a json tag: matched exactly
}

// jsonFields maps the JSON names of struct type t's fields to them; nil
// if t is not a struct.
func jsonFields(t reflect.Type) map[string]jsonField {
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	fields := map[string]jsonField{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-":
			continue
		case name == "" && f.Anonymous && f.Type.Kind() == reflect.Struct:
			maps.Copy(fields, jsonFields(f.Type)) // encoding/json lifts its fields
			continue
		case name == "":
			fields[f.Name] = jsonField{typ: f.Type}
			continue
		}
		fields[name] = jsonField{typ: f.Type, tagged: true}
	}
	return fields
}

// fieldName is path as a field name for errors ("the body" when empty).
func fieldName(path string) string {
	if path == "" {
		return "body"
	}
	return path
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
