package gateway

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestCacheAnonymousWriteNotServed is the attack of issue #24 on a real
// dbsvc, cachesvc and gateway: a stranger who reaches cachesvc's port
// posts a made-up item under the key the gateway caches item 42 at, and
// flushes the cache. Both are refused with 401, and GET /items/42 through
// the gateway still serves the database's item. A token with cache:write
// can write the key, which shows the refused write was aimed right.
func TestCacheAnonymousWriteNotServed(t *testing.T) {
	t.Parallel()
	st := startStack(t, 2000)
	base := startGateway(t, testutil.Connect(t, st.ns))
	reader := token(t, auth.ScopeItemsRead)
	const forged = `{"value":{"id":42,"name":"FORGED","price_cents":1,"stock":1,"updated_at":"2020-01-01T00:00:00Z"}}`

	item := func() string {
		t.Helper()
		r := get(t, base+"/items/42", reader)
		if r.status != http.StatusOK {
			t.Fatalf("GET /items/42 = %d %s, want 200", r.status, r.body)
		}
		var it struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(r.body, &it); err != nil {
			t.Fatalf("GET /items/42 body %q: %v", r.body, err)
		}
		return it.Name
	}
	real := item() // also puts it in the cache tiers
	if real == "FORGED" {
		t.Fatalf("the seeded item 42 is named FORGED")
	}

	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/cache/item.v2.42", forged},
		{http.MethodDelete, "/cache/item.v2.42", ""},
		{http.MethodDelete, "/cache", ""},
	} {
		r := send(t, tc.method, st.cache+tc.path, "", tc.body, map[string]string{"Content-Type": "application/json"})
		if r.status != http.StatusUnauthorized || errorCode(t, r) != "unauthorized" {
			t.Errorf("anonymous %s %s on cachesvc = %d %s, want 401 unauthorized", tc.method, tc.path, r.status, r.body)
		}
		if r := send(t, tc.method, st.cache+tc.path, reader, tc.body, nil); r.status != http.StatusForbidden {
			t.Errorf("%s %s with an items:read token = %d %s, want 403", tc.method, tc.path, r.status, r.body)
		}
		if got := item(); got != real {
			t.Fatalf("GET /items/42 after a refused %s %s = name %q, want %q", tc.method, tc.path, got, real)
		}
	}

	// The same write with cache:write is what a refusal prevents.
	if r := send(t, http.MethodPost, st.cache+"/cache/item.v2.42", token(t, auth.ScopeCacheWrite), forged, nil); r.status != http.StatusOK {
		t.Fatalf("POST /cache/item.v2.42 with cache:write = %d %s, want 200", r.status, r.body)
	}
	if got := item(); got != "FORGED" {
		t.Errorf("GET /items/42 after an authorized write = name %q, want FORGED (the key is the one the gateway serves)", got)
	}
}
