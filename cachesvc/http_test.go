package cachesvc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/testutil"
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
	kv, err := js.KeyValue(t.Context(), cache.Bucket)
	if err != nil {
		t.Fatalf("js.KeyValue(%q) = %v", cache.Bucket, err)
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
	if stats.Bucket != cache.Bucket {
		t.Errorf("GET /cache bucket = %q, want %q", stats.Bucket, cache.Bucket)
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
	// No gateway reads through the cache: processes is there, and empty.
	want := Stats{Bucket: cache.Bucket, TTLSeconds: 90, History: 1, Processes: []cache.Stats{}}
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
				// Every route refuses it with the same message.
				var msgs []string
				for _, method := range []string{"POST", "GET", "DELETE"} {
					if method != "POST" {
						status, _, body = in.do(t, method, path, nil)
					}
					wantError(t, method+" "+path, status, body, tt.want, apperr.Invalid)
					var got apperr.Body
					_ = json.Unmarshal(body, &got)
					msgs = append(msgs, got.Error.Message)
				}
				if msgs[0] != msgs[1] || msgs[1] != msgs[2] {
					t.Errorf("POST, GET, DELETE %s messages = %q, want all the same", path, msgs)
				}
				return
			}
			if status != tt.want {
				t.Fatalf("POST %s = %d %s, want %d", path, status, body, tt.want)
			}
			var v value
			in.doJSON(t, "GET", path, nil, http.StatusOK, &v)
			wantJSONEqual(t, "GET "+path, v.Value, `"v"`)
			var deleted map[string]string
			in.doJSON(t, "DELETE", path, nil, http.StatusOK, &deleted)
			if diff := cmp.Diff(map[string]string{"status": "deleted", "key": tt.key}, deleted); diff != "" {
				t.Errorf("DELETE %s body mismatch (-want +got):\n%s", path, diff)
			}
			in.doJSON(t, "GET", path, nil, http.StatusOK, &v)
			if string(v.Value) != "null" {
				t.Errorf("GET %s after DELETE = %s, want null", path, v.Value)
			}
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

// TestPutStrictBodies: POST /cache/{key} reads its body with the one
// strict reader: a duplicate key (at any depth of the value), a key of
// another case, an unknown field or data after the body is a 400 whose
// message names the problem, and nothing is stored.
func TestPutStrictBodies(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	tests := []struct {
		name, body, wantMsg string
	}{
		{"duplicate key", `{"value":1,"value":2}`, `duplicate key "value"`},
		{"duplicate key in the value", `{"value":{"a":1,"b":{"c":1,"c":2}}}`, `duplicate key "value.b.c"`},
		{"wrong-case key", `{"Value":1}`, `unknown field "Value" (keys are case-sensitive: the field is "value")`},
		{"unknown field", `{"value":1,"ttl":5}`, `unknown field "ttl"`},
		{"trailing data", `{"value":1} {"value":2}`, "body must hold one JSON value and nothing after it"},
		{"invalid UTF-8", "{\"value\":\"\xff\"}", "body is not valid JSON: invalid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key := strings.ReplaceAll(tt.name, " ", "_")
			status, _, body := in.do(t, "POST", "/cache/"+key, []byte(tt.body))
			wantError(t, fmt.Sprintf("POST /cache/%s %q", key, tt.body), status, body, http.StatusBadRequest, apperr.Invalid)
			var got apperr.Body
			if err := json.Unmarshal(body, &got); err != nil || !strings.HasPrefix(got.Error.Message, tt.wantMsg) {
				t.Errorf("POST /cache/%s %q message = %q, want it to start with %q", key, tt.body, got.Error.Message, tt.wantMsg)
			}
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
		{"DELETE", "/cache/a/b", http.StatusNotFound, apperr.NotFound},
		{"PUT", "/cache/k", http.StatusMethodNotAllowed, apperr.Unsupported},
		{"PATCH", "/cache/k", http.StatusMethodNotAllowed, apperr.Unsupported},
		{"PUT", "/cache", http.StatusMethodNotAllowed, apperr.Unsupported},
		{"POST", "/cache", http.StatusMethodNotAllowed, apperr.Unsupported},
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

// wantMetrics fails unless GET /metrics has every line in want.
func wantMetrics(t *testing.T, in *instance, want ...string) {
	t.Helper()
	status, _, body := in.do(t, "GET", "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics = %d", status)
	}
	for _, w := range want {
		if !strings.Contains(string(body), w+"\n") {
			t.Errorf("GET /metrics does not contain %q", w)
		}
	}
}

// flushed is the body of DELETE /cache.
type flushed struct {
	Status string `json:"status"`
	Purged uint64 `json:"purged"`
}

func TestDelete(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	var st map[string]string
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":{"a":1}}`), http.StatusOK, &st)

	// Deleting is idempotent: a deleted or never stored key is fine too.
	for _, key := range []string{"k", "k", "never.stored"} {
		var got map[string]string
		in.doJSON(t, "DELETE", "/cache/"+key, nil, http.StatusOK, &got)
		if diff := cmp.Diff(map[string]string{"status": "deleted", "key": key}, got); diff != "" {
			t.Errorf("DELETE /cache/%s body mismatch (-want +got):\n%s", key, diff)
		}
		var v value
		in.doJSON(t, "GET", "/cache/"+key, nil, http.StatusOK, &v)
		if string(v.Value) != "null" {
			t.Errorf("GET /cache/%s after DELETE = %s, want null", key, v.Value)
		}
	}
	// A refused delete is not counted.
	status, _, body := in.do(t, "DELETE", "/cache/a..b", nil)
	wantError(t, "DELETE /cache/a..b", status, body, http.StatusBadRequest, apperr.Invalid)
	wantMetrics(t, in, "scalelab_cachesvc_deletes_total 3", "scalelab_cachesvc_writes_total 1")
}

func TestFlush(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	keys := []string{"a", "b.c", "d/e"}
	for _, key := range keys {
		var st map[string]string
		in.doJSON(t, "POST", "/cache/"+url.PathEscape(key), []byte(`{"value":"`+key+`"}`), http.StatusOK, &st)
	}
	var stats Stats
	in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &stats)
	if stats.Values != uint64(len(keys)) {
		t.Fatalf("GET /cache values before the flush = %d, want %d", stats.Values, len(keys))
	}

	var got flushed
	in.doJSON(t, "DELETE", "/cache", nil, http.StatusOK, &got)
	if diff := cmp.Diff(flushed{"flushed", uint64(len(keys))}, got); diff != "" {
		t.Errorf("DELETE /cache body mismatch (-want +got):\n%s", diff)
	}
	stats = Stats{} // zero entries are left out of the JSON
	in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &stats)
	if stats.Values != 0 || stats.Bytes != 0 || stats.Tiers.KV.Entries != 0 {
		t.Errorf("GET /cache after the flush: values, bytes, tiers.kv.entries = %d, %d, %d, want 0, 0, 0",
			stats.Values, stats.Bytes, stats.Tiers.KV.Entries)
	}
	for _, key := range keys {
		var v value
		in.doJSON(t, "GET", "/cache/"+url.PathEscape(key), nil, http.StatusOK, &v)
		if string(v.Value) != "null" {
			t.Errorf("GET /cache/%s after the flush = %s, want null", key, v.Value)
		}
	}

	// Flushing an empty cache is fine; the bucket still takes writes.
	in.doJSON(t, "DELETE", "/cache", nil, http.StatusOK, &got)
	if diff := cmp.Diff(flushed{"flushed", 0}, got); diff != "" {
		t.Errorf("second DELETE /cache body mismatch (-want +got):\n%s", diff)
	}
	var st map[string]string
	in.doJSON(t, "POST", "/cache/a", []byte(`{"value":"again"}`), http.StatusOK, &st)
	var v value
	in.doJSON(t, "GET", "/cache/a", nil, http.StatusOK, &v)
	wantJSONEqual(t, "GET /cache/a after the flushes", v.Value, `"again"`)
	wantMetrics(t, in, "scalelab_cachesvc_flushes_total 2")
}

func TestStatsAfterPost(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	for _, key := range []string{"x", "y"} {
		var st map[string]string
		in.doJSON(t, "POST", "/cache/"+key, []byte(`{"value":[1,2,3]}`), http.StatusOK, &st)
	}
	var got Stats
	in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &got)
	if got.Values != 2 || got.Bytes == 0 {
		t.Errorf("GET /cache values, bytes = %d, %d, want 2, > 0", got.Values, got.Bytes)
	}
	// No gateway: the tiers hold only the bucket's size.
	want := Tiers{KV: cache.TierStats{Entries: 2, Bytes: int64(got.Bytes)}}
	if diff := cmp.Diff(want, got.Tiers); diff != "" {
		t.Errorf("GET /cache tiers mismatch (-want +got):\n%s", diff)
	}
	if got.Loads != 0 || got.OverallHitRatio != 0 || got.Processes == nil || len(got.Processes) != 0 {
		t.Errorf("GET /cache loads, hit_ratio, processes = %d, %v, %v, want 0, 0, []", got.Loads, got.OverallHitRatio, got.Processes)
	}
}

func TestBucketGone(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	in := startCache(t, nc, testConfig())
	if err := newJetStream(t, nc).DeleteKeyValue(t.Context(), cache.Bucket); err != nil {
		t.Fatalf("DeleteKeyValue() = %v", err)
	}
	tests := []struct {
		method, path string
		body         []byte
	}{
		{"POST", "/cache/k", []byte(`{"value":1}`)},
		{"DELETE", "/cache/k", nil},
		{"DELETE", "/cache", nil},
		{"GET", "/cache", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			status, _, body := in.do(t, tt.method, tt.path, tt.body)
			wantError(t, tt.method+" "+tt.path+" without the bucket", status, body, http.StatusServiceUnavailable, apperr.Unavailable)
		})
	}
}

// TestUnconfirmedInvalidation has a process that answers pings but never
// confirms invalidations (hung): writes still succeed, with a warning.
func TestUnconfirmedInvalidation(t *testing.T) {
	t.Parallel()
	const notConfirmed = "cache invalidation not confirmed by every process"
	tests := []struct {
		name    string
		method  string
		path    string
		body    []byte
		warning string
		check   func(t *testing.T, in *instance)
	}{
		{"write", "POST", "/cache/k", []byte(`{"value":"new"}`), notConfirmed, func(t *testing.T, in *instance) {
			if got := in.getValue(t, "k"); got != `"new"` {
				t.Errorf("GET /cache/k = %s, want \"new\"", got)
			}
		}},
		{"delete", "DELETE", "/cache/k", nil, "cache delete not confirmed by every process", func(t *testing.T, in *instance) {
			if got := in.getValue(t, "k"); got != "null" {
				t.Errorf("GET /cache/k = %s, want null", got)
			}
		}},
		{"flush", "DELETE", "/cache", nil, notConfirmed, func(t *testing.T, in *instance) {
			var stats Stats
			in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &stats)
			if stats.Values != 0 {
				t.Errorf("GET /cache values = %d, want 0", stats.Values)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ns := testutil.StartNATS(t)
			hung, err := micro.AddService(testutil.Connect(t, ns), micro.Config{
				Name: cache.ServiceName, Version: "1.0.0", QueueGroupDisabled: true,
			})
			if err != nil {
				t.Fatalf("micro.AddService() = %v", err)
			}
			t.Cleanup(func() { _ = hung.Stop() })
			log, logs := captureLog(t)
			in := startCacheWithLog(t, testutil.Connect(t, ns), testConfig(), log)
			kv, err := newJetStream(t, testutil.Connect(t, ns)).KeyValue(t.Context(), cache.Bucket)
			if err != nil {
				t.Fatalf("js.KeyValue() = %v", err)
			}
			if _, err := kv.Put(t.Context(), "k", []byte(`"old"`)); err != nil {
				t.Fatalf("kv.Put(k) = %v", err)
			}

			status, _, body := in.do(t, tt.method, tt.path, tt.body)
			if status != http.StatusOK {
				t.Fatalf("%s %s with a hung process = %d %s, want 200", tt.method, tt.path, status, body)
			}
			tt.check(t, in)
			if !logs.has(slog.LevelWarn, tt.warning) {
				t.Errorf("log has no warning %q", tt.warning)
			}
		})
	}
}

// TestGatewayNearCache runs two gateways' cache clients, one with a
// near-cache, against cachesvc: its writes, deletes and flushes reach the
// near-cache before they return, and GET /cache reports both processes.
func TestGatewayNearCache(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	in := startCache(t, testutil.Connect(t, ns), testConfig())
	gw := newGatewayCache(t, testutil.Connect(t, ns), "gw-test", cache.ModeKVLocal)
	other := newGatewayCache(t, testutil.Connect(t, ns), "gw-test-2", cache.ModeKV)
	var loads atomic.Int64
	load := func(context.Context) ([]byte, error) {
		return fmt.Appendf(nil, `{"load":%d}`, loads.Add(1)), nil
	}
	get := func(c *cache.Cache, key string) cache.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		res, err := c.Get(ctx, key, load)
		if err != nil {
			t.Fatalf("Get(%s) = %v", key, err)
		}
		return res
	}
	// warm waits until the near-cache is on and holds k.
	warm := func() {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			get(gw, "k")
			if res := get(gw, "k"); res.Source != cache.SourceLocal {
				return fmt.Errorf("second Get(k) answered from %s, want %s", res.Source, cache.SourceLocal)
			}
			return nil
		})
	}

	warm()
	before := loads.Load()
	var deleted map[string]string
	in.doJSON(t, "DELETE", "/cache/k", nil, http.StatusOK, &deleted)
	res := get(gw, "k")
	if want := fmt.Sprintf(`{"load":%d}`, before+1); res.Source != cache.SourceDB || string(res.Value) != want {
		t.Errorf("Get(k) right after DELETE /cache/k = %s from %s, want %s loaded again from %s", res.Value, res.Source, want, cache.SourceDB)
	}

	warm()
	var st map[string]string
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":"posted"}`), http.StatusOK, &st)
	if res := get(gw, "k"); res.Source != cache.SourceKV || string(res.Value) != `"posted"` {
		t.Errorf("Get(k) right after POST /cache/k = %s from %s, want \"posted\" from %s", res.Value, res.Source, cache.SourceKV)
	}

	warm()
	before = loads.Load()
	var f flushed
	in.doJSON(t, "DELETE", "/cache", nil, http.StatusOK, &f)
	if res := get(gw, "k"); res.Source != cache.SourceDB || loads.Load() != before+1 {
		t.Errorf("Get(k) right after DELETE /cache = %s from %s, want loaded again from %s", res.Value, res.Source, cache.SourceDB)
	}
	warm()

	for range 3 {
		get(other, "k")
	}

	// Once nothing moves, GET /cache reports each process as it counts
	// itself (the KV watch may still be delivering the last changes).
	testutil.Eventually(t, 5*time.Second, func() error {
		var got Stats
		in.doJSON(t, "GET", "/cache", nil, http.StatusOK, &got)
		procs := []cache.Stats{gw.Stats(), other.Stats()}
		if diff := cmp.Diff(procs, got.Processes); diff != "" {
			return fmt.Errorf("GET /cache processes mismatch (-want +got):\n%s", diff)
		}
		var want Tiers
		var wantLoads uint64
		for _, p := range procs {
			want.Local.Add(p.Local)
			want.KV.Add(p.KV)
			wantLoads += p.Loads
		}
		want.KV.Entries, want.KV.Bytes = int(got.Values), int64(got.Bytes)
		if diff := cmp.Diff(want, got.Tiers); diff != "" {
			return fmt.Errorf("GET /cache tiers mismatch (-want +got):\n%s", diff)
		}
		answered := want.Local.Hits + want.KV.Hits
		if wantRatio := float64(answered) / float64(answered+wantLoads); got.Loads != wantLoads || got.OverallHitRatio != wantRatio {
			return fmt.Errorf("GET /cache loads, hit_ratio = %d, %v, want %d, %v", got.Loads, got.OverallHitRatio, wantLoads, wantRatio)
		}
		return nil
	})
	if s := gw.Stats(); s.Local.Hits == 0 || s.KV.Hits == 0 || s.Loads == 0 {
		t.Errorf("gw-test stats = %+v, want local hits, kv hits and loads", s)
	}
	if s := other.Stats(); s.KV.Hits != 3 {
		t.Errorf("gw-test-2 kv hits = %d, want 3", s.KV.Hits)
	}
}
