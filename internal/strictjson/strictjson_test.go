package strictjson

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/apperr"
)

func TestDecode(t *testing.T) {
	type body struct {
		Name string `json:"name"`
	}
	tests := []struct {
		in       string
		ok       bool
		trailing bool
	}{
		{`{"name":"a"}`, true, false},
		{" {\"name\":\"a\"} \n", true, false},
		{`{}`, true, false},
		{`{"name":"a","x":1}`, false, false},
		{`{"name":"a"} {}`, false, true},
		{`{"name":"a"}x`, false, false},
		{`{"name":`, false, false},
		{``, false, false},
		{`[1]`, false, false},
	}
	for _, tt := range tests {
		var b body
		err := Decode(strings.NewReader(tt.in), &b)
		if (err == nil) != tt.ok {
			t.Errorf("Decode(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
		if errors.Is(err, ErrTrailingData) != tt.trailing {
			t.Errorf("Decode(%q) = %v, want trailing-data error %v", tt.in, err, tt.trailing)
		}
	}
}

// TestDecodeReaderError: the reader's own error (here a size limit) comes
// back unchanged, so a caller can answer 413 rather than 400.
func TestDecodeReaderError(t *testing.T) {
	r := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(`{"name":"`+strings.Repeat("a", 100)+`"}`)), 10)
	var v map[string]string
	var tooBig *http.MaxBytesError
	if err := Decode(r, &v); !errors.As(err, &tooBig) {
		t.Errorf("Decode(over the limit) = %v, want a *http.MaxBytesError", err)
	}
}

// TestDecodeBody: every refusal is a 400 whose message says what is wrong
// in JSON's terms, never naming a Go type; a body over an http.MaxBytesReader
// limit is a 413, and other read errors come back unchanged.
func TestDecodeBody(t *testing.T) {
	type inner struct {
		A int8 `json:"a"`
	}
	type body struct {
		Name  string   `json:"name"`
		Stock *int64   `json:"stock"`
		Tags  []string `json:"tags"`
		Blob  []byte   `json:"blob"`
		Ok    bool     `json:"ok"`
		In    inner    `json:"in"`
		Ins   []inner  `json:"ins"`
		Count uint16   `json:"count"`
		Ratio float32  `json:"ratio"`
		// Counts is a map: its keys are free, but not duplicates.
		Counts map[string]int `json:"counts"`
	}
	tests := []struct {
		name, in string
		wantMsg  string // "" for success
	}{
		{"ok", `{"name":"a","stock":3}`, ""},
		{"ok with space", " {\"name\":\"a\"} \n", ""},
		{"unknown field", `{"name":"a","nmae":"b"}`, `unknown field "nmae"`},
		{"trailing object", `{"name":"a"} {}`, "body must hold one JSON value and nothing after it"},
		{"trailing garbage", `{"name":"a"}x`, "body is not valid JSON: invalid character 'x'"},
		{"syntax", `{"name" "a"}`, "body is not valid JSON: invalid character '\"' after object key (at byte 9)"},
		{"truncated", `{"name":`, "body ends in the middle of its JSON value"},
		{"empty", ``, "body is empty; it must be a JSON object"},
		{"top-level array", `[1]`, "body must be an object, not an array"},
		{"top-level string", `"x"`, "body must be an object, not a string"},
		{"string for integer", `{"stock":"3"}`, `field "stock" must be an integer in range, not a string`},
		{"fraction for integer", `{"stock":1.5}`, `field "stock" must be an integer in range, not number 1.5`},
		{"overflow", `{"stock":1e400}`, `field "stock" must be an integer in range, not number 1e400`},
		{"number for string", `{"name":1}`, `field "name" must be a string, not a number`},
		{"object for array", `{"tags":{}}`, `field "tags" must be an array, not an object`},
		{"number for bytes", `{"blob":1}`, `field "blob" must be a base64 string, not a number`},
		{"string for bool", `{"ok":"yes"}`, `field "ok" must be a boolean, not a string`},
		{"duplicate key", `{"name":"a","name":"b"}`, `duplicate key "name"`},
		{"duplicate key, other value", `{"stock":1,"name":"a","stock":2}`, `duplicate key "stock"`},
		{"duplicate key in a nested object", `{"in":{"a":1,"a":2}}`, `duplicate key "in.a"`},
		{"duplicate key in an array's object", `{"ins":[{"a":1},{"a":1,"a":1}]}`, `duplicate key "ins.1.a"`},
		{"duplicate key in a map", `{"counts":{"x":1,"x":2}}`, `duplicate key "counts.x"`},
		{"duplicate key by escape", `{"name":"a","n\u0061me":"b"}`, `duplicate key "name"`},
		{"wrong-case key", `{"Name":"a"}`, `unknown field "Name" (keys are case-sensitive: the field is "name")`},
		{"wrong-case key beside the right one", `{"name":"a","NAME":"b"}`, `unknown field "NAME"`},
		{"wrong-case nested key", `{"in":{"A":1}}`, `unknown field "in.A" (keys are case-sensitive: the field is "a")`},
		{"unknown nested field", `{"in":{"b":1}}`, `unknown field "in.b"`},
		{"out of range for int8", `{"in":{"a":128}}`, `field "in.a" must be an integer in range, not number 128`},
		{"beyond int64", `{"stock":9223372036854775808}`, `field "stock" must be an integer in range, not number 9223372036854775808`},
		{"exponent for integer", `{"stock":1e2}`, `field "stock" must be an integer in range, not number 1e2`},
		{"negative for unsigned", `{"count":-1}`, `field "count" must be a non-negative integer in range, not number -1`},
		{"out of range for float32", `{"ratio":1e39}`, `field "ratio" must be a number in range, not number 1e39`},
		{"invalid UTF-8", "{\"name\":\"\xff\"}", "body is not valid JSON: invalid UTF-8"},
		{"lone surrogate", `{"name":"\ud800"}`, "body is not valid JSON: invalid surrogate pair"},
		{"bad base64", `{"blob":"!!"}`, `field "blob" must be a base64 string: illegal base64 data`},
		{"trailing comma", `{"name":"a",}`, "body is not valid JSON: invalid character ',' at start of value (at byte 12)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeBody[body](strings.NewReader(tt.in))
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("DecodeBody(%q) = %v, want nil", tt.in, err)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Code != apperr.Invalid {
				t.Fatalf("DecodeBody(%q) = %v, want an invalid *apperr.Error", tt.in, err)
			}
			if !strings.HasPrefix(ae.Message, tt.wantMsg) {
				t.Errorf("DecodeBody(%q) message = %q, want it to start with %q", tt.in, ae.Message, tt.wantMsg)
			}
			for _, goName := range []string{"struct", "int64", "strictjson", "json:", "[]"} {
				if strings.Contains(ae.Message, goName) {
					t.Errorf("DecodeBody(%q) message = %q, names Go's %q", tt.in, ae.Message, goName)
				}
			}
		})
	}
	t.Run("trailing data stays in the chain", func(t *testing.T) {
		t.Parallel()
		if _, err := DecodeBody[body](strings.NewReader(`{} {}`)); !errors.Is(err, ErrTrailingData) {
			t.Errorf("DecodeBody(two values) = %v, want ErrTrailingData in its chain", err)
		}
	})
	t.Run("value", func(t *testing.T) {
		t.Parallel()
		got, err := DecodeBody[body](strings.NewReader(`{"name":"a","stock":3,"tags":["x"]}`))
		if err != nil || got.Name != "a" || got.Stock == nil || *got.Stock != 3 || len(got.Tags) != 1 {
			t.Errorf("DecodeBody = %+v, %v, want name a, stock 3, one tag", got, err)
		}
	})
}

// TestDecodeBodyReadErrors: an http.MaxBytesReader's limit is a 413; any
// other read error is the caller's to translate, so it comes back as is.
func TestDecodeBodyReadErrors(t *testing.T) {
	t.Run("size limit", func(t *testing.T) {
		t.Parallel()
		r := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(strings.NewReader(`{"name":"`+strings.Repeat("a", 100)+`"}`)), 10)
		_, err := DecodeBody[map[string]string](r)
		if apperr.CodeOf(err) != apperr.TooLarge {
			t.Fatalf("DecodeBody(over the limit) = %v, want code %q", err, apperr.TooLarge)
		}
		if _, ok := errors.AsType[*http.MaxBytesError](err); !ok {
			t.Errorf("DecodeBody(over the limit) = %v, want the *http.MaxBytesError in its chain", err)
		}
	})
	t.Run("other", func(t *testing.T) {
		t.Parallel()
		broken := errors.New("connection reset")
		if _, err := DecodeBody[map[string]string](io.MultiReader(strings.NewReader(`{"na`), iotest.ErrReader(broken))); err != broken {
			t.Errorf("DecodeBody(broken reader) = %v, want %v unchanged", err, broken)
		}
	})
}

// TestDecodeBodyOpenSchema: a struct with an inline map takes the members
// it does not declare into the map, but still refuses duplicates and a
// member that matches a declared field only when case is ignored.
func TestDecodeBodyOpenSchema(t *testing.T) {
	type body struct {
		Task  string                     `json:"task"`
		Delay *string                    `json:"delay"`
		Rest  map[string]json.RawMessage `json:",inline"`
	}
	tests := []struct {
		name, in string
		want     body
		wantMsg  string // "" for success
	}{
		{"declared and free members", `{"task":"a","note":{"x":[1, 2]}}`, body{Task: "a", Rest: map[string]json.RawMessage{"note": json.RawMessage(`{"x":[1, 2]}`)}}, ""},
		{"only declared", `{"task":"a"}`, body{Task: "a"}, ""},
		{"free member names are case-sensitive", `{"task":"a","note":1,"Note":2}`, body{Task: "a", Rest: map[string]json.RawMessage{"note": json.RawMessage(`1`), "Note": json.RawMessage(`2`)}}, ""},
		{"wrong-case declared field", `{"TASK":"a"}`, body{}, `unknown field "TASK" (keys are case-sensitive: the field is "task")`},
		{"wrong-case beside the right one", `{"task":"a","Task":"b"}`, body{}, `unknown field "Task" (keys are case-sensitive: the field is "task")`},
		{"duplicate free member", `{"task":"a","note":1,"note":2}`, body{}, `duplicate key "note"`},
		{"duplicate inside a free member", `{"task":"a","note":{"x":1,"x":2}}`, body{}, `duplicate key "note.x"`},
		{"declared field of the wrong kind", `{"task":1}`, body{}, `field "task" must be a string, not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := DecodeBody[body](strings.NewReader(tt.in))
			if tt.wantMsg != "" {
				if _, msg := apperr.Public(err); apperr.CodeOf(err) != apperr.Invalid || !strings.HasPrefix(msg, tt.wantMsg) {
					t.Errorf("DecodeBody(%q) = %v, want invalid, message starting %q", tt.in, err, tt.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeBody(%q) = %v, want nil", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DecodeBody(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// TestDecodeEmbedded: an embedded struct's fields are the outer object's,
// as with encoding/json (dbsvc's item update request embeds ItemUpdate).
func TestDecodeEmbedded(t *testing.T) {
	type Inner struct {
		Name string `json:"name"`
	}
	type body struct {
		ID int64 `json:"id"`
		Inner
	}
	got, err := DecodeBody[body](strings.NewReader(`{"id":3,"name":"a"}`))
	if err != nil || got.ID != 3 || got.Name != "a" {
		t.Errorf(`DecodeBody({"id":3,"name":"a"}) = %+v, %v, want id 3, name a`, got, err)
	}
	for _, in := range []string{`{"id":3,"Inner":{"name":"a"}}`, `{"id":3,"NAME":"a"}`} {
		if _, err := DecodeBody[body](strings.NewReader(in)); apperr.CodeOf(err) != apperr.Invalid {
			t.Errorf("DecodeBody(%s) = %v, want invalid", in, err)
		}
	}
}

// TestCanonical: whitespace, member order at every depth and string
// escapes do not survive; numbers stay as written; what is not one valid
// JSON value is refused.
func TestCanonical(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{`{"task":"sleep","duration_ms":5}`, `{"duration_ms":5,"task":"sleep"}`},
		{" { \"b\" : [ 1 , {\"z\":1,\"a\":2} ] ,\n\"a\":\"\\u00e9\\/\" } \n", `{"a":"é/","b":[1,{"a":2,"z":1}]}`},
		{`{"n":-0,"m":1.0E+2,"big":123456789012345678901234567890}`, `{"big":123456789012345678901234567890,"m":1.0E+2,"n":-0}`},
		{`"x"`, `"x"`},
		{`{"a":1,"a":2}`, ""},
		{`{"a":{"b":1,"b":1}}`, ""},
		{"\"\xff\"", ""},
		{`{} {}`, ""},
		{``, ""},
	}
	for _, tt := range tests {
		got, err := Canonical([]byte(tt.in))
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("Canonical(%q) = %s, want an error", tt.in, got)
		case tt.want != "" && (err != nil || string(got) != tt.want):
			t.Errorf("Canonical(%q) = %s, %v, want %s", tt.in, got, err, tt.want)
		}
	}
	in := []byte(`{"b":1, "a":2}`)
	if _, err := Canonical(in); err != nil || string(in) != `{"b":1, "a":2}` {
		t.Errorf("Canonical changed its argument to %s (%v)", in, err)
	}
}
