package strictjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/apperr"
)

// The bodies the roles read, mirrored here (strictjson may not import the
// roles): the field names, Go types and tags are those of the real types.
type (
	// itemBody is dbsvc.ItemUpdate, the body of PUT /items/{id}.
	itemBody struct {
		Name       string `json:"name"`
		PriceCents int64  `json:"price_cents"`
		Stock      int64  `json:"stock"`
	}
	// itemRequest is dbsvc's item update request over NATS: an id and the
	// embedded item (encoding/json's promoted fields).
	itemRequest struct {
		ID int64 `json:"id"`
		itemBody
	}
	// loginBody is the body of POST /auth/token.
	loginBody struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	// userPut is dbsvc.UserPut.
	userPut struct {
		Name         string   `json:"name"`
		PasswordHash string   `json:"password_hash"`
		Scopes       []string `json:"scopes"`
	}
	// cachePut is the body of POST /cache/{key}: any JSON value.
	cachePut struct {
		Value json.RawMessage `json:"value"`
	}
	// taskHead is what every POST /longtask body may declare (task.head).
	taskHead struct {
		Task  *string `json:"task"`
		RunAt *string `json:"run_at"`
		Delay *string `json:"delay"`
	}
	// sleepHead is what a sleep task's body declares (task.SleepPayload).
	sleepHead struct {
		DurationMS int64 `json:"duration_ms"`
	}
)

// openBody is an open schema as the task package declares one: the
// members of H, and every other member, free, in Rest.
type openBody[H any] struct {
	Head H                          `json:",inline"`
	Rest map[string]json.RawMessage `json:",inline"`
}

// bodyCase reads a body with the strict reader and with the independent
// one; both return what they read in the same Go type, or an error.
type bodyCase struct {
	name            string
	strict, another func([]byte) (any, error)
}

// closedCase compares the two readers on T, a closed schema declaring
// the keys declared (written out by hand: the independent reader must not
// share strictjson's reading of the tags).
func closedCase[T any](name string, declared ...string) bodyCase {
	return bodyCase{
		name: name,
		strict: func(b []byte) (any, error) {
			v, err := DecodeBody[T](bytes.NewReader(b))
			return v, err
		},
		another: func(b []byte) (any, error) {
			var v T
			err := independent(b, &v, declared, true)
			return v, err
		},
	}
}

// openCase compares the two readers on openBody[H], whose head declares
// the keys declared.
func openCase[H any](name string, declared ...string) bodyCase {
	return bodyCase{
		name: name,
		strict: func(b []byte) (any, error) {
			v, err := DecodeBody[openBody[H]](bytes.NewReader(b))
			return v, err
		},
		another: func(b []byte) (any, error) {
			var v openBody[H]
			if err := independent(b, &v.Head, declared, false); err != nil {
				return nil, err
			}
			var all map[string]json.RawMessage
			if err := json.Unmarshal(b, &all); err != nil {
				return nil, err
			}
			for k, raw := range all {
				if !slices.Contains(declared, k) {
					if v.Rest == nil {
						v.Rest = map[string]json.RawMessage{}
					}
					v.Rest[k] = raw
				}
			}
			return v, nil
		},
	}
}

var bodyCases = []bodyCase{
	closedCase[itemBody]("item", "name", "price_cents", "stock"),
	closedCase[itemRequest]("item request", "id", "name", "price_cents", "stock"),
	closedCase[loginBody]("login", "username", "password"),
	closedCase[userPut]("user", "name", "password_hash", "scopes"),
	closedCase[cachePut]("cache value", "value"),
	openCase[taskHead]("task", "task", "run_at", "delay"),
	openCase[sleepHead]("sleep task", "duration_ms"),
}

// independent reads body into v with encoding/json (v1), which on its own
// takes the last of duplicate keys and matches keys case-insensitively, so
// a walk of its tokenizer refuses those first: a duplicate key in any
// object, and a top-level key that only matches a declared one when case
// is ignored. closed refuses unknown fields; data after the value is
// refused either way.
func independent(body []byte, v any, declared []string, closed bool) error {
	if err := checkKeys(body, declared); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if closed {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the value (%v)", err)
	}
	return nil
}

// checkKeys is the token walk of independent.
func checkKeys(body []byte, declared []string) error {
	type frame struct {
		object  bool
		wantKey bool // in an object, the next token is a key or '}'
		keys    map[string]bool
	}
	var stack []*frame
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // a number's range is the decode's to check, for its field's type
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if key, ok := tok.(string); ok && top != nil && top.wantKey {
			if top.keys[key] {
				return fmt.Errorf("duplicate key %q", key)
			}
			top.keys[key] = true
			if len(stack) == 1 && !slices.Contains(declared, key) &&
				slices.ContainsFunc(declared, func(d string) bool { return strings.EqualFold(d, key) }) {
				return fmt.Errorf("key %q matches a field only when case is ignored", key)
			}
			top.wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantKey: true, keys: map[string]bool{}})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended (a scalar, or a closed object or array): in an
		// object, a key comes next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantKey = true
		}
	}
}

// sameJSON compares raw JSON values by their canonical forms: the strict
// reader and encoding/json may keep different bytes of the same value.
var sameJSON = cmp.Comparer(func(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	ca, errA := Canonical(a)
	cb, errB := Canonical(b)
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
})

// FuzzStrictAgreesWithIndependentDecoder decodes the same bytes with the
// strict reader and with an independent one (encoding/json plus a token
// walk for duplicate and wrong-case keys) into each of the roles' body
// types, and fails on any body that one accepts and the other reads
// differently: what the strict reader accepts, the other accepts with the
// same value; what the other accepts, the strict reader accepts too,
// unless it holds invalid Unicode (which encoding/json silently replaces).
// An accepted body's canonical form reads the same again, and a refusal
// is a 400 whose message names no Go type.
func FuzzStrictAgreesWithIndependentDecoder(f *testing.F) {
	for _, s := range []string{
		`{"name":"widget","price_cents":250,"stock":3}`,
		`{"id":7,"name":"widget","price_cents":250,"stock":3}`,
		`{"username":"alice","password":"correct horse"}`,
		`{"name":"bob","password_hash":"$2a$10$x","scopes":["items:read","tasks:write"]}`,
		`{"value":{"a":[1,2,{"b":null}]}}`,
		`{"task":"noop"}`,
		`{"task":"sleep","duration_ms":250}`,
		`{"task":"report","note":"x","delay":"90s"}`,
		`{"task":"noop","run_at":"2030-01-02T15:04:05Z"}`,
		// Duplicates, at the top and deeper.
		`{"task":"noop","task":"sleep"}`,
		`{"name":"a","name":"b"}`,
		`{"value":{"x":1,"x":2}}`,
		`{"scopes":["a"],"scopes":["b"]}`,
		`{"n\u0061me":"a","name":"b"}`,
		// Case.
		`{"Name":"a"}`,
		`{"name":"a","NAME":"b"}`,
		`{"TASK":"noop"}`,
		`{"task":"sleep","Duration_MS":5}`,
		`{"ID":1,"name":"a"}`,
		"{\"\u017fcopes\":[]}", // ſ folds to s in encoding/json's matching
		"{\"name\":\"\u212a\"}",
		// Unknown fields, trailing data, syntax.
		`{"name":"a","colour":"red"}`,
		`{"username":"a"} {}`,
		`{"username":"a"}x`,
		`{"username":"a"`,
		`{"username":"a",}`,
		` {"username":"a"} ` + "\n",
		``,
		`null`,
		`[]`,
		`"x"`,
		// Numbers.
		`{"stock":9223372036854775807}`,
		`{"stock":9223372036854775808}`,
		`{"stock":-9223372036854775808}`,
		`{"stock":1e2}`,
		`{"stock":1.0}`,
		`{"stock":-0}`,
		`{"duration_ms":1e400}`,
		`{"value":123456789012345678901234567890}`,
		// Strings and Unicode.
		`{"name":"\u00e9\/\n"}`,
		"{\"name\":\"\xff\"}",
		`{"name":"\ud800"}`,
		`{"name":"\ud83d\ude00"}`,
		`{"password":"\u0000"}`,
		`{"value":null}`,
		`{"scopes":null}`,
	} {
		f.Add([]byte(s))
	}
	opts := cmp.Options{sameJSON, cmp.AllowUnexported(itemRequest{})}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, c := range bodyCases {
			got, err := c.strict(body)
			want, otherErr := c.another(body)
			switch {
			case err == nil && otherErr != nil:
				t.Fatalf("%s: strict reader accepted %q as %+v; encoding/json: %v", c.name, body, got, otherErr)
			case err == nil:
				if diff := cmp.Diff(want, got, opts); diff != "" {
					t.Fatalf("%s: %q read differently (-encoding/json +strict):\n%s", c.name, body, diff)
				}
				canon, cerr := Canonical(body)
				if cerr != nil {
					t.Fatalf("%s: Canonical(%q) = %v after the strict reader accepted it", c.name, body, cerr)
				}
				again, aerr := c.strict(canon)
				if diff := cmp.Diff(got, again, opts); aerr != nil || diff != "" {
					t.Fatalf("%s: canonical form %s of %q read differently (%v) (-body +canonical):\n%s", c.name, canon, body, aerr, diff)
				}
			default:
				code, msg := apperr.Public(err)
				if code != apperr.Invalid {
					t.Fatalf("%s: DecodeBody(%q) = %v, want code %q", c.name, body, err, apperr.Invalid)
				}
				for _, goWord := range []string{"Go ", "jsontext", "json:", "strictjson", "int64", "struct"} {
					if strings.Contains(msg, goWord) {
						t.Fatalf("%s: DecodeBody(%q) message %q names Go's %q", c.name, body, msg, goWord)
					}
				}
				if otherErr == nil && !strings.Contains(msg, "UTF-8") && !strings.Contains(msg, "surrogate") {
					t.Fatalf("%s: strict reader refused %q (%s), which encoding/json reads as %+v", c.name, body, msg, want)
				}
			}
		}
	})
}

// TestIndependentDecoder: the independent reader of the fuzz test refuses
// what it must, or the comparison proves nothing.
func TestIndependentDecoder(t *testing.T) {
	declared := []string{"name", "price_cents", "stock"}
	for _, in := range []string{`{"name":"a","name":"b"}`, `{"name":{"x":1,"x":2}}`, `{"NAME":"a"}`, `{"name":"a","x":1}`, `{"name":"a"} {}`} {
		var v itemBody
		if err := independent([]byte(in), &v, declared, true); err == nil {
			t.Errorf("independent(%s) = nil, want an error", in)
		}
	}
	var v itemBody
	if err := independent([]byte(`{"name":"a","stock":[1][0]}`), &v, declared, true); err == nil {
		t.Errorf("independent(bad syntax) = nil, want an error")
	}
	if err := independent([]byte(` {"name":"a","stock":2} `), &v, declared, true); err != nil || v.Name != "a" || v.Stock != 2 {
		t.Errorf("independent(valid) = %+v, %v, want name a, stock 2", v, err)
	}
}
