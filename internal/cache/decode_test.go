package cache

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecode: whatever a bucket holds (anyone can `nats kv put` into it),
// decode never panics and serves only JSON values or a not-found; a lease
// is never served.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{`{"id":1}`, `null`, `[1,2]`, `"s"`, ``, `~lease gw-1`, `not json`, `{"a":`, "\x00"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		res, ok := decode(b)
		if !ok {
			return
		}
		if bytes.HasPrefix(b, []byte(leasePrefix)) {
			t.Fatalf("decode(%q) served a lease", b)
		}
		if res.NotFound != bytes.Equal(b, notFoundValue) {
			t.Fatalf("decode(%q) = %+v: NotFound must mean exactly the stored null", b, res)
		}
		if !res.NotFound && !json.Valid(res.Value) {
			t.Fatalf("decode(%q) served invalid JSON", b)
		}
	})
}
