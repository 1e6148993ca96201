package strictjson

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/scalelab/scalelab/internal/apperr"
)

// ErrTrailingData is returned (wrapped) when something follows the value.
var ErrTrailingData = errors.New("strictjson: data after the JSON value")

// strict are the rules of the one strict reading. Most are the defaults of
// github.com/go-json-experiment/json (encoding/json/v2 upstream); they are
// spelled out because they are the contract, not a library default that
// may change: duplicate keys, invalid UTF-8 and keys that match a field
// only when case is ignored are all refused, where encoding/json takes the
// last duplicate, replaces bad bytes and matches case-insensitively.
// Joined once: every request body reads with them.
var strict = json.JoinOptions(
	json.RejectUnknownMembers(true),
	json.MatchCaseInsensitiveNames(false),
	jsontext.AllowDuplicateNames(false),
	jsontext.AllowInvalidUTF8(false),
)

// Decode reads one JSON value from r into v, strictly: no duplicate keys
// in any object, keys matched to fields exactly (case-sensitively), no
// unknown fields, numbers in range of their Go type, nothing after the
// value. Errors of r (a size limit, say) come back as they are (wrapped),
// so callers can tell them apart with errors.As.
//
// A struct is a closed schema unless it has a map field tagged
// `json:",inline"`, which then holds the members the struct does not
// declare (an open schema, such as a task body with its free payload
// members). Even there a member whose name differs from a declared
// field's only in case is refused as unknown: a case-insensitive reader
// (encoding/json, and others) would take it for that field.
func Decode(r io.Reader, v any) error {
	dec := jsontext.NewDecoder(r, strict)
	if err := json.UnmarshalDecode(dec, v, strict); err != nil {
		return err
	}
	switch _, err := dec.ReadToken(); {
	case errors.Is(err, io.EOF):
	case err == nil:
		return ErrTrailingData
	default:
		return err
	}
	return checkOpen(reflect.ValueOf(v), "")
}

// DecodeBody reads all of r and decodes it strictly (see Decode) into a
// new T: the one decoder of the roles' request bodies.
//
// A body that does not decode is an *apperr.Error with code
// apperr.Invalid (400) whose message a client can act on: it names the
// field and what is wrong in JSON's terms, never a Go type, and the cause
// stays in its chain (errors.Is(err, ErrTrailingData) holds for trailing
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

// Canonical returns the canonical form of data, one JSON value: no
// whitespace, every object's members sorted by name (RFC 8785's order),
// strings in their shortest escaping, numbers as written (RFC 8785 would
// round integers beyond 2^53). Two bodies that any reader reads the same
// have the same canonical form, and every reader reads the canonical form
// as it reads data: it is what a role stores and passes on of a body it
// validated (a task's payload), so the next reader cannot read the
// client's bytes differently. data must have passed Decode; Canonical
// itself refuses only what is not one valid JSON value (duplicate keys,
// invalid UTF-8 included).
func Canonical(data []byte) ([]byte, error) {
	v := jsontext.Value(bytes.Clone(data))
	if err := v.Format(strict, jsontext.ReorderRawObjects(true)); err != nil {
		return nil, err
	}
	return v, nil
}

// problem describes a decoding error of Decode for a client: what is
// wrong with the body, in JSON's terms.
func problem(err error) string {
	if syn, ok := errors.AsType[*jsontext.SyntacticError](err); ok {
		return syntaxProblem(syn)
	}
	if sem, ok := errors.AsType[*json.SemanticError](err); ok {
		return semanticProblem(sem)
	}
	switch {
	case errors.Is(err, ErrTrailingData):
		return "body must hold one JSON value and nothing after it"
	case errors.Is(err, io.EOF):
		return "body is empty; it must be a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "body ends in the middle of its JSON value"
	}
	return "body does not match the route's fields"
}

// syntaxProblem describes a body that is not one valid JSON text.
func syntaxProblem(syn *jsontext.SyntacticError) string {
	switch {
	case errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return fmt.Sprintf("duplicate key %q: a key may appear only once in an object", fieldPath(syn.JSONPointer))
	case errors.Is(syn.Err, io.ErrUnexpectedEOF):
		return "body ends in the middle of its JSON value"
	}
	// The library says "object name" where clients say "key".
	msg := strings.NewReplacer("object member name", "object key", "object name", "object key").Replace(syn.Err.Error())
	msg, expected, _ := strings.Cut(msg, " (expecting ")
	// ByteOffset counts the bytes before the bad one: +1 is the bad
	// byte's position counted from 1.
	msg = fmt.Sprintf("body is not valid JSON: %s (at byte %d)", msg, syn.ByteOffset+1)
	if expected != "" {
		msg += "; expected " + strings.TrimSuffix(expected, ")")
	}
	return msg
}

// semanticProblem describes valid JSON that does not fit the route's
// fields: an unknown key, or a value of the wrong kind or out of range.
func semanticProblem(sem *json.SemanticError) string {
	field := fieldPath(sem.JSONPointer)
	if errors.Is(sem.Err, json.ErrUnknownName) {
		msg := fmt.Sprintf("unknown field %q", field)
		if want, ok := caseMatch(sem.GoType, sem.JSONPointer.LastToken()); ok {
			msg += fmt.Sprintf(" (keys are case-sensitive: the field is %q)", want)
		}
		return msg
	}
	if sem.GoType == nil || sem.JSONKind == 0 {
		return "body does not match the route's fields"
	}
	subject := "body"
	if field != "" {
		subject = fmt.Sprintf("field %q", field)
	}
	want := jsonKind(sem.GoType)
	if sem.JSONKind == '"' && sem.Err != nil {
		// A string of the right kind whose content is wrong (base64, a
		// time): the cause says what is wrong with it.
		return fmt.Sprintf("%s must be %s: %v", subject, want, sem.Err)
	}
	return fmt.Sprintf("%s must be %s, not %s", subject, want, gotKind(sem))
}

// fieldPath writes a JSON pointer as clients name a field: its keys (and
// array indexes) joined by dots, "" for the body itself.
func fieldPath(p jsontext.Pointer) string {
	return strings.Join(slices.Collect(p.Tokens()), ".")
}

// gotKind names the JSON value that did not fit, with the number itself
// when there is one ("number 1e400"), so a client sees why it is out of
// range.
func gotKind(sem *json.SemanticError) string {
	switch sem.JSONKind {
	case '0':
		if len(sem.JSONValue) > 0 {
			return "number " + string(sem.JSONValue)
		}
		return "a number"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '[':
		return "an array"
	case '{':
		return "an object"
	default:
		return "another kind of JSON value"
	}
}

// textType is the type of values that read themselves from a JSON string.
var textType = reflect.TypeFor[encoding.TextUnmarshaler]()

// jsonKind names, in JSON's terms, what a value of Go type t is written
// as: the client wrote JSON and knows nothing of the server's types.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textType) {
		return "a string" // time.Time, say: the cause says which string
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer in range"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer in range"
	case reflect.Float32, reflect.Float64:
		return "a number in range"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string" // the JSON form of []byte
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

// field is one JSON member a struct declares.
type field struct {
	index []int  // for reflect.Value.FieldByIndex
	name  string // its key, or "" for a struct inlined into its parent
}

// schemaOf is schema, kept per type: every body of a route has the same
// type, and walking its fields by reflection on each request cost as much
// as decoding it.
func schemaOf(t reflect.Type) (fields []field, rest []int) {
	if s, ok := schemas.Load(t); ok {
		c := s.(cachedSchema)
		return c.fields, c.rest
	}
	fields, rest = schema(t)
	schemas.Store(t, cachedSchema{fields, rest})
	return fields, rest
}

// schemas holds schemaOf's results by reflect.Type.
var schemas sync.Map

// cachedSchema is one entry of schemas.
type cachedSchema struct {
	fields []field
	rest   []int
}

// schema returns the members struct type t declares, with those of its
// inlined structs (embedded without a name, or tagged inline), and the
// index of its map of undeclared members (tagged `json:",inline"` or
// `json:",unknown"`), nil for a closed schema. It follows the library's
// tag rules that the roles' types use.
func schema(t reflect.Type) (fields []field, rest []int) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() && !f.Anonymous {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		inline := slices.ContainsFunc(strings.Split(opts, ","), func(o string) bool { return o == "inline" || o == "unknown" })
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case inline && ft.Kind() == reflect.Map:
			rest = f.Index
		case (inline || f.Anonymous && name == "") && ft.Kind() == reflect.Struct:
			fields = append(fields, field{index: f.Index})
			inner, innerRest := schema(ft)
			for _, g := range inner {
				if g.name != "" {
					fields = append(fields, field{index: append(slices.Clone(f.Index), g.index...), name: g.name})
				}
			}
			if innerRest != nil && rest == nil {
				rest = append(slices.Clone(f.Index), innerRest...)
			}
		case f.IsExported():
			if name == "" {
				name = f.Name
			}
			fields = append(fields, field{index: f.Index, name: name})
		}
	}
	return fields, rest
}

// caseMatch returns the key struct type t (or a pointer to it) declares
// that name matches when case is ignored, if any.
func caseMatch(t reflect.Type, name string) (string, bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return "", false
	}
	fields, _ := schemaOf(t)
	return foldMatch(fields, name)
}

// foldMatch returns the key of fields that name matches only when case is
// ignored (as encoding/json matches), if any.
func foldMatch(fields []field, name string) (string, bool) {
	for _, f := range fields {
		if f.name != "" && f.name != name && strings.EqualFold(f.name, name) {
			return f.name, true
		}
	}
	return "", false
}

// checkOpen refuses, in the decoded value v at ptr, a member of an open
// schema (see Decode) whose name matches a declared field's only when
// case is ignored. The library put it with the undeclared members, where
// a case-insensitive reader would have read it as the field: it is
// reported as the library reports an unknown member of a closed schema.
func checkOpen(v reflect.Value, ptr jsontext.Pointer) error {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return checkOpen(v.Elem(), ptr)
	case reflect.Slice, reflect.Array:
		if !composite(v.Type().Elem()) {
			return nil // a []byte, []string...: nothing to check, and maybe long
		}
		for i := range v.Len() {
			if err := checkOpen(v.Index(i), ptr.AppendToken(fmt.Sprint(i))); err != nil {
				return err
			}
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String || !composite(v.Type().Elem()) {
			return nil
		}
		for _, k := range sortedKeys(v) {
			if err := checkOpen(v.MapIndex(k), ptr.AppendToken(k.String())); err != nil {
				return err
			}
		}
	case reflect.Struct:
		fields, rest := schemaOf(v.Type())
		if rest != nil {
			if m := v.FieldByIndex(rest); m.Kind() == reflect.Map {
				for _, k := range sortedKeys(m) {
					if _, ok := foldMatch(fields, k.String()); ok {
						return &json.SemanticError{JSONPointer: ptr.AppendToken(k.String()), GoType: v.Type(), Err: json.ErrUnknownName}
					}
				}
			}
		}
		for _, f := range fields {
			if f.name == "" {
				continue // an inlined struct: its fields are listed too
			}
			fv, err := v.FieldByIndexErr(f.index)
			if err != nil {
				continue // through a nil embedded pointer: not decoded
			}
			if err := checkOpen(fv, ptr.AppendToken(f.name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// composite reports whether a value of type t may hold a struct.
func composite(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Struct, reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return true
	}
	return false
}

// sortedKeys returns the keys of map m in order, so that of two problems
// the same one is reported every time.
func sortedKeys(m reflect.Value) []reflect.Value {
	keys := m.MapKeys()
	slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
	return keys
}
