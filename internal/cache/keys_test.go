package cache

import (
	"fmt"
	"strings"
	"testing"
)

func TestValidKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want bool
	}{
		{"a", true},
		{"k", true},
		{"items.42", true},
		{"data.expensive.v1", true},
		{"a/b/c", true},
		{"A-Z_a-z_0-9=x", true},
		{"-", true},
		{"=", true},
		{strings.Repeat("k", 256), true},
		{strings.Repeat("a.", 127) + "a", true},
		{"", false},
		{strings.Repeat("k", 257), false},
		{".", false},
		{"..", false},
		{".a", false},
		{"a.", false},
		{"a..b", false},
		{"a...b", false},
		{"*", false},
		{">", false},
		{"a*", false},
		{"a.*", false},
		{"a.>", false},
		{"a>b", false},
		{"a b", false},
		{" a", false},
		{"a\t", false},
		{"a\n", false},
		{"a\x00", false},
		{"a:b", false},
		{"a%b", false},
		{"a$b", false},
		{"$KV", false},
		{"ä", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20q", tt.key), func(t *testing.T) {
			t.Parallel()
			if got := ValidKey(tt.key); got != tt.want {
				t.Errorf("ValidKey(%q) = %v, want %v", tt.key, got, tt.want)
			}
		})
	}
}

// FuzzValidKey checks that an accepted key is safe as a KV key and subject
// part: 1-256 characters of A-Z a-z 0-9 - _ = / ., no wildcard, no space and
// no empty dot-separated token.
func FuzzValidKey(f *testing.F) {
	for _, s := range []string{"a", "items.42", "a/b", "a..b", ".a", "a.", "a*", "a>b", "a b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if !ValidKey(key) {
			return
		}
		if len(key) < 1 || len(key) > 256 {
			t.Errorf("ValidKey(%q) = true, want false for length %d", key, len(key))
		}
		if strings.ContainsAny(key, "*> \t\r\n") {
			t.Errorf("ValidKey(%q) = true, want false for a wildcard or white space", key)
		}
		for i := 0; i < len(key); i++ {
			c := key[i]
			ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-/_=.", c) >= 0
			if !ok {
				t.Errorf("ValidKey(%q) = true, want false: byte %q at %d", key, c, i)
			}
		}
		for i, tok := range strings.Split(key, ".") {
			if tok == "" {
				t.Errorf("ValidKey(%q) = true, want false: empty token %d", key, i)
			}
		}
	})
}
