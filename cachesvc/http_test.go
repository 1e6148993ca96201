package cachesvc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/apperr"
)

// value is the body of GET /cache/{key}.
type value struct {
	Value json.RawMessage `json:"value"`
}

// wantJSONEqual fails unless got and want are the same JSON value.
func wantJSONEqual(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s = %q, not JSON: %v", what, got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("test setup: %q is not JSON: %v", want, err)
	}
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, diff)
	}
}

// wantError checks a house JSON error body.
func wantError(t *testing.T, what string, status int, body []byte, wantStatus int, wantCode apperr.Code) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s = %d %s, want %d", what, status, body, wantStatus)
	}
	var got apperr.Body
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("%s body %q is not the house error body: %v", what, body, err)
	}
	if got.Error.Code != wantCode || got.Error.Message == "" || got.Error.RequestID != "req-test" {
		t.Errorf("%s error = %+v, want code %q, a message and request_id req-test", what, got.Error, wantCode)
	}
}

// TestAPI walks through the lab's cache API on one instance, in order:
// the stats at the end count what the steps before did.
func TestAPI(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	cfg := testConfig()
	in := startCache(t, nc, cfg)
	js := newJetStream(t, nc)
	var hits, misses int

	// A miss answers {"value": null}, as in the lab.
	status, _, body := in.do(t, "GET", "/cache/missing", nil)
	misses++
	if status != http.StatusOK || strings.TrimSpace(string(body)) != `{"value":null}` {
		t.Errorf("GET /cache/missing = %d %s, want 200 {\"value\":null}", status, body)
	}

	var st map[string]string
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":{"a":1}}`), http.StatusOK, &st)
	if diff := cmp.Diff(map[string]string{"status": "ok"}, st); diff != "" {
		t.Errorf("POST /cache/k body mismatch (-want +got):\n%s", diff)
	}

	var v value
	in.doJSON(t, "GET", "/cache/k", nil, http.StatusOK, &v)
	hits++
	wantJSONEqual(t, "GET /cache/k value", v.Value, `{"a":1}`)

	// What the API stored is what `nats kv get cache k` shows.
	kv, err := js.KeyValue(t.Context(), Bucket)
	if err != nil {
		t.Fatalf("js.KeyValue(%q) = %v", Bucket, err)
	}
	e, err := kv.Get(t.Context(), "k")
	if err != nil {
		t.Fatalf("kv.Get(k) = %v", err)
	}
	wantJSONEqual(t, "kv.Get(k)", e.Value(), `{"a":1}`)

	// Values written by someone else that are not JSON come back as strings;
	// those that are JSON come back as they are.
	raw := []struct{ key, stored, want string }{
		{"raw", "hello world", `"hello world"`},
		{"raw.brace", "{not json", `"{not json"`},
		{"raw.empty", "", `""`},
		{"raw.number", "42", `42`},
	}
	for _, r := range raw {
		if _, err := kv.Put(t.Context(), r.key, []byte(r.stored)); err != nil {
			t.Fatalf("kv.Put(%s) = %v", r.key, err)
		}
		var v value
		in.doJSON(t, "GET", "/cache/"+r.key, nil, http.StatusOK, &v)
		hits++
		wantJSONEqual(t, fmt.Sprintf("GET /cache/%s (stored %q) value", r.key, r.stored), v.Value, r.want)
	}

	// Overwrite.
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":[1,2,3]}`), http.StatusOK, &st)
	in.doJSON(t, "GET", "/cache/k", nil, http.StatusOK, &v)
	hits++
	wantJSONEqual(t, "GET /cache/k after overwrite", v.Value, `[1,2,3]`)

	// Bad keys and bodies are not lookups: the counters below must not move.
	for _, key := range []string{"a..b", ".a", "a.", "a*", "a>b", "a b", "*", ">", strings.Repeat("k", 300)} {
		path := "/cache/" + url.PathEscape(key)
		status, _, body := in.do(t, "GET", path, nil)
		wantError(t, "GET "+path, status, body, http.StatusBadRequest, apperr.Invalid)
		status, _, body = in.do(t, "POST", path, []byte(`{"value":1}`))
		wantError(t, "POST "+path, status, body, http.StatusBadRequest, apperr.Invalid)
	}

	var stats Stats
	in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &stats)
	if stats.Bucket != Bucket {
		t.Errorf("GET /cache bucket = %q, want %q", stats.Bucket, Bucket)
	}
	if want := uint64(1 + len(raw)); stats.Values < want {
		t.Errorf("GET /cache values = %d, want >= %d", stats.Values, want)
	}
	if stats.Bytes == 0 {
		t.Errorf("GET /cache bytes = 0, want > 0")
	}
	if stats.TTLSeconds != cfg.TTL.Seconds() {
		t.Errorf("GET /cache ttl_seconds = %v, want %v", stats.TTLSeconds, cfg.TTL.Seconds())
	}
	if stats.History != 1 {
		t.Errorf("GET /cache history = %d, want 1", stats.History)
	}
	if stats.Hits != uint64(hits) || stats.Misses != uint64(misses) {
		t.Errorf("GET /cache api_hits, api_misses = %d, %d, want %d, %d", stats.Hits, stats.Misses, hits, misses)
	}
	if want := float64(hits) / float64(hits+misses); stats.HitRatio != want {
		t.Errorf("GET /cache api_hit_ratio = %v, want %v", stats.HitRatio, want)
	}

	// The same counts, as Prometheus sees them.
	status, _, body = in.do(t, "GET", "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d", status)
	}
	for _, want := range []string{
		fmt.Sprintf(`scalelab_cachesvc_lookups_total{result="hit"} %d`, hits),
		fmt.Sprintf(`scalelab_cachesvc_lookups_total{result="miss"} %d`, misses),
		"scalelab_cachesvc_writes_total 2",
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics does not contain %q", want)
		}
	}

	if err := in.Stop(); err != nil {
		t.Errorf("Run() after cancel = %v, want nil", err)
	}
}

func TestStatsEmpty(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	var got Stats
	in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &got)
	want := Stats{Bucket: Bucket, TTLSeconds: 90, History: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GET /cache on an empty cache mismatch (-want +got):\n%s", diff)
	}
}

func TestValueRoundTrip(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	tests := []struct {
		name  string
		value string
	}{
		{"object", `{"a":1,"b":{"c":[true,null]}}`},
		{"array", `[1,"two",3.5]`},
		{"string", `"hello"`},
		{"empty string", `""`},
		{"unicode string", `"héllo ✓ \u0000"`},
		{"number", `-12.5e3`},
		{"zero", `0`},
		{"true", `true`},
		{"false", `false`},
		{"empty object", `{}`},
		{"empty array", `[]`},
		{"big", `"` + strings.Repeat("x", 900<<10) + `"`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := fmt.Sprintf("rt.%d", i)
			var st map[string]string
			in.doJSON(t, "POST", "/cache/"+key, []byte(`{"value":`+tt.value+`}`), http.StatusOK, &st)
			var v value
			in.doJSON(t, "GET", "/cache/"+key, nil, http.StatusOK, &v)
			wantJSONEqual(t, "GET /cache/"+key, v.Value, tt.value)
		})
	}
}

func TestKeysOverHTTP(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	tests := []struct {
		key  string
		want int
	}{
		{"a", http.StatusOK},
		{"items.42", http.StatusOK},
		{"a/b", http.StatusOK}, // escaped as a%2Fb
		{"A-Z_0=9", http.StatusOK},
		{strings.Repeat("k", 256), http.StatusOK},
		{strings.Repeat("k", 257), http.StatusBadRequest},
		{"a..b", http.StatusBadRequest},
		{".a", http.StatusBadRequest},
		{"a.", http.StatusBadRequest},
		{"a*", http.StatusBadRequest},
		{"a>b", http.StatusBadRequest},
		{"a b", http.StatusBadRequest},
		{"a\tb", http.StatusBadRequest},
		{"a%b", http.StatusBadRequest},
		{"ä", http.StatusBadRequest},
		{"$KV", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%.20s", tt.key), func(t *testing.T) {
			t.Parallel()
			path := "/cache/" + url.PathEscape(tt.key)
			status, _, body := in.do(t, "POST", path, []byte(`{"value":"v"}`))
			if tt.want != http.StatusOK {
				wantError(t, "POST "+path, status, body, tt.want, apperr.Invalid)
				return
			}
			if status != tt.want {
				t.Fatalf("POST %s = %d %s, want %d", path, status, body, tt.want)
			}
			var v value
			in.doJSON(t, "GET", path, nil, http.StatusOK, &v)
			wantJSONEqual(t, "GET "+path, v.Value, `"v"`)
		})
	}
}

func TestPutBadBodies(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantCode   apperr.Code
	}{
		{"malformed", `{"value":`, http.StatusBadRequest, apperr.Invalid},
		{"not an object", `[1]`, http.StatusBadRequest, apperr.Invalid},
		{"bare value", `42`, http.StatusBadRequest, apperr.Invalid},
		{"empty body", ``, http.StatusBadRequest, apperr.Invalid},
		{"empty object", `{}`, http.StatusBadRequest, apperr.Invalid},
		{"missing value", `{"val":1}`, http.StatusBadRequest, apperr.Invalid},
		{"null value", `{"value":null}`, http.StatusBadRequest, apperr.Invalid},
		{"null value with spaces", `{"value" :  null }`, http.StatusBadRequest, apperr.Invalid},
		{"unknown field", `{"value":1,"ttl":5}`, http.StatusBadRequest, apperr.Invalid},
		{"null body", `null`, http.StatusBadRequest, apperr.Invalid},
		{"trailing garbage", `{"value":1} garbage`, http.StatusBadRequest, apperr.Invalid},
		{"two objects", `{"value":1}{"value":2}`, http.StatusBadRequest, apperr.Invalid},
		{"too large", `{"value":"` + strings.Repeat("x", 1<<20) + `"}`, http.StatusRequestEntityTooLarge, apperr.TooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := strings.ReplaceAll(tt.name, " ", "_")
			status, _, body := in.do(t, "POST", "/cache/"+key, []byte(tt.body))
			wantError(t, fmt.Sprintf("POST /cache/%s %.40q", key, tt.body), status, body, tt.wantStatus, tt.wantCode)
			// Nothing was stored.
			var v value
			in.doJSON(t, "GET", "/cache/"+key, nil, http.StatusOK, &v)
			if string(v.Value) != "null" {
				t.Errorf("GET /cache/%s after a refused POST = %s, want null", key, v.Value)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	tests := []struct {
		method     string
		path       string
		wantStatus int
		wantCode   apperr.Code // "" for a success
	}{
		{"GET", "/nope", http.StatusNotFound, apperr.NotFound},
		{"GET", "/cache/a/b", http.StatusNotFound, apperr.NotFound},
		{"DELETE", "/cache/k", http.StatusMethodNotAllowed, apperr.Unsupported},
		{"PUT", "/cache", http.StatusMethodNotAllowed, apperr.Unsupported},
		{"GET", "/healthz", http.StatusOK, ""},
		{"GET", "/readyz", http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			status, h, body := in.do(t, tt.method, tt.path, nil)
			if tt.wantCode == "" {
				if status != tt.wantStatus {
					t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, status, body, tt.wantStatus)
				}
				return
			}
			if ct := h.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("%s %s Content-Type = %q, want JSON", tt.method, tt.path, ct)
			}
			wantError(t, tt.method+" "+tt.path, status, body, tt.wantStatus, tt.wantCode)
		})
	}
}
