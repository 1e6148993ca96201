package cachesvc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
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

func TestClientBeforeBucket(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	c := NewClient(newJetStream(t, nc))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if got, err := c.Get(ctx, "k"); !errors.Is(err, ErrNoBucket) {
		t.Errorf("Get() before the bucket exists = %q, %v, want %v", got, err, ErrNoBucket)
	}
	if err := c.Put(ctx, "k", []byte("v")); !errors.Is(err, ErrNoBucket) {
		t.Errorf("Put() before the bucket exists = %v, want %v", err, ErrNoBucket)
	}

	// The same client binds once cachesvc has provisioned the bucket.
	startCache(t, nc, testConfig())
	if err := c.Put(ctx, "k", []byte(`{"n":1}`)); err != nil {
		t.Fatalf("Put() after Run provisioned the bucket = %v, want nil", err)
	}
	got, err := c.Get(ctx, "k")
	if err != nil || string(got) != `{"n":1}` {
		t.Errorf("Get(k) = %q, %v, want %q, nil", got, err, `{"n":1}`)
	}
}

func TestClient(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	in := startCache(t, nc, testConfig())
	c := NewClient(newJetStream(t, nc))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if got, err := c.Get(ctx, "absent"); !errors.Is(err, ErrMiss) || got != nil {
		t.Errorf("Get(absent) = %q, %v, want nil, %v", got, err, ErrMiss)
	}
	tests := []struct {
		key   string
		value string
	}{
		{"items.1", `{"id":1}`},
		{"data", `[1,2,3]`},
		{"raw", "not json at all"},
		{"a/b", `"slash"`},
	}
	for _, tt := range tests {
		if err := c.Put(ctx, tt.key, []byte(tt.value)); err != nil {
			t.Fatalf("Put(%q) = %v", tt.key, err)
		}
	}
	for _, tt := range tests {
		got, err := c.Get(ctx, tt.key)
		if err != nil || string(got) != tt.value {
			t.Errorf("Get(%q) = %q, %v, want %q, nil", tt.key, got, err, tt.value)
		}
	}
	// Overwrite.
	if err := c.Put(ctx, "items.1", []byte(`{"id":1,"v":2}`)); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if got, err := c.Get(ctx, "items.1"); err != nil || string(got) != `{"id":1,"v":2}` {
		t.Errorf("Get(items.1) after overwrite = %q, %v, want the new value", got, err)
	}

	// The client and the HTTP API share the bucket.
	var v value
	in.doJSON(t, "GET", "/cache/items.1", nil, 200, &v)
	wantJSONEqual(t, "GET /cache/items.1", v.Value, `{"id":1,"v":2}`)
	var st map[string]string
	in.doJSON(t, "POST", "/cache/from.http", []byte(`{"value":true}`), 200, &st)
	if got, err := c.Get(ctx, "from.http"); err != nil || string(got) != "true" {
		t.Errorf("Get(from.http) = %q, %v, want \"true\", nil", got, err)
	}

	// Bad keys are refused, not looked up as misses.
	for _, key := range []string{"a*", "a b", ""} {
		if _, err := c.Get(ctx, key); err == nil || errors.Is(err, ErrMiss) {
			t.Errorf("Get(%q) = %v, want an error that is not %v", key, err, ErrMiss)
		}
		if err := c.Put(ctx, key, []byte("v")); err == nil {
			t.Errorf("Put(%q) = nil, want an error", key)
		}
	}
}

func TestClientTTL(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	cfg := testConfig()
	cfg.TTL = time.Second
	in := startCache(t, nc, cfg)
	c := NewClient(newJetStream(t, nc))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	start := time.Now()
	if err := c.Put(ctx, "short", []byte("lived")); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if got, err := c.Get(ctx, "short"); err != nil || string(got) != "lived" {
		t.Fatalf("Get() right after Put() = %q, %v, want \"lived\", nil", got, err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		got, err := c.Get(ctx, "short")
		if errors.Is(err, ErrMiss) {
			return nil
		}
		return fmt.Errorf("Get(short) = %q, %v, want %v", got, err, ErrMiss)
	})
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Errorf("entry expired after %v, want about the 1s TTL", elapsed)
	}
	var v value
	in.doJSON(t, "GET", "/cache/short", nil, 200, &v)
	if string(v.Value) != "null" {
		t.Errorf("GET /cache/short after the TTL = %s, want null", v.Value)
	}
}
