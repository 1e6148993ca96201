package reqid

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want bool
	}{
		{"abc", true},
		{"A-Z_0.9~!#$%&'*+^`|", true},
		{strings.Repeat("x", 128), true},
		{"", false},
		{strings.Repeat("x", 129), false},
		{"a b", false},
		{"a\x00b", false},
		{"a\x01b", false},
		{"a\x7fb", false},
		{"a\r\nX-Evil: 1", false},
		{"a/b", false},
		{"ä", false},
	}
	for _, tt := range tests {
		if got := Valid(tt.id); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
	if id := Or(""); !Valid(id) || len(id) != 26 {
		t.Errorf("Or(\"\") = %q, want 26 sane characters", id)
	}
}
