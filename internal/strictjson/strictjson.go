package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/scalelab/scalelab/internal/apperr"
)

// ErrTrailingData is returned (wrapped) when something follows the value.
var ErrTrailingData = errors.New("strictjson: data after the JSON value")

// Decode reads one JSON value from r into v, refusing unknown object
// fields and trailing data. Errors of r (a size limit, say) come back as
// they are, so callers can tell them apart.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return ErrTrailingData
	default:
		return err
	}
}

// DecodeBody reads all of r and decodes it strictly (see Decode) into a
// new T: the one decoder of the roles' fixed-schema request bodies.
//
// A body that does not decode is an *apperr.Error with code
// apperr.Invalid (400) whose message a client can act on: it names the
// field and the JSON kind wanted, never a Go type, and the cause stays
// in its chain (errors.Is(err, ErrTrailingData) holds for trailing
// data). A read error that is an *http.MaxBytesError becomes
// apperr.TooLarge (413); any other read error (echo's body limit, a
// broken connection) comes back unchanged for the caller's error
// handler to translate.
func DecodeBody[T any](r io.Reader) (T, error) {
	var v T
	body, err := io.ReadAll(r)
	if err != nil {
		if tooBig, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return v, apperr.Wrap(err, apperr.TooLarge, "request body is larger than %d bytes", tooBig.Limit)
		}
		return v, err
	}
	// The whole body is read first, so every error from here on is the
	// body's, not the connection's: a 400.
	if err := Decode(bytes.NewReader(body), &v); err != nil {
		return v, apperr.Wrap(err, apperr.Invalid, "%s", problem(err))
	}
	return v, nil
}

// problem describes a decoding error of Decode for a client: what is
// wrong with the body, in JSON's terms.
func problem(err error) string {
	if syn, ok := errors.AsType[*json.SyntaxError](err); ok {
		// Offset counts the bytes read up to and including the bad one,
		// so it is the bad byte's position counted from 1.
		return fmt.Sprintf("body is not valid JSON: %s (at byte %d)", syn, syn.Offset)
	}
	if typ, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if typ.Field == "" {
			return fmt.Sprintf("body must be %s, not %s", jsonKind(typ.Type), article(typ.Value))
		}
		return fmt.Sprintf("field %q must be %s, not %s", typ.Field, jsonKind(typ.Type), article(typ.Value))
	}
	switch {
	case errors.Is(err, ErrTrailingData):
		return "body must hold one JSON value and nothing after it"
	case errors.Is(err, io.EOF):
		return "body is empty; it must be a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "body ends in the middle of its JSON value"
	}
	// encoding/json has no typed error for an unknown field, only this
	// text (stable since DisallowUnknownFields was added in Go 1.10).
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return "unknown field " + field
	}
	// What is left comes from a field's own UnmarshalJSON (a time that
	// does not parse, say), which speaks of the value, not of Go types.
	return "body does not match the route's fields: " + strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind names, in JSON's terms, what a value of Go type t is written
// as: the client wrote JSON and knows nothing of the server's types.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a JSON value"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer in range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string" // encoding/json's form of []byte
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	default:
		return "another kind of JSON value"
	}
}

// article puts an article before the JSON kind in an
// UnmarshalTypeError's Value ("string", "bool"); a value it quotes
// ("number 1e400") is left as it is.
func article(value string) string {
	switch value {
	case "array", "object":
		return "an " + value
	case "bool":
		return "a boolean"
	case "string", "number":
		return "a " + value
	default:
		return value
	}
}
