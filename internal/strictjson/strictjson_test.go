package strictjson

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

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
	type body struct {
		Name  string   `json:"name"`
		Stock *int64   `json:"stock"`
		Tags  []string `json:"tags"`
		Blob  []byte   `json:"blob"`
		Ok    bool     `json:"ok"`
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
