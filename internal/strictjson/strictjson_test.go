package strictjson

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
