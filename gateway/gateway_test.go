package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/cachesvc"
	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

var testKeys = auth.Keys{Secret: []byte("0123456789abcdef0123456789abcdef"), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}

// startGateway runs a gateway over nc and returns its base URL once ready.
// edit, if given, changes the test config first.
func startGateway(t *testing.T, nc *nats.Conn, edit ...func(*Config)) string {
	t.Helper()
	base, _ := startGatewayRunning(t, nc, edit...)
	return base
}

// startGatewayRunning is startGateway, also returning the running gateway
// for a test that stops it.
func startGatewayRunning(t *testing.T, nc *nats.Conn, edit ...func(*Config)) (string, *testutil.Running) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ID, cfg.Listener, cfg.JWT = "gw-test", ln, testKeys
	cfg.RequestTimeout, cfg.ShutdownTimeout = 2*time.Second, 2*time.Second
	for _, f := range edit {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The provisioner's step (admin's, outside tests): the gateway only
	// opens the task streams.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Provision(t.Context(), js, cfg.Provision); err != nil {
		t.Fatalf("task.Provision() = %v", err)
	}
	r := testutil.Start(t, func(ctx context.Context) error { return Run(ctx, cfg, nc, testutil.QuietLog()) })
	base := "http://" + ln.Addr().String()
	testutil.Eventually(t, 10*time.Second, func() error { return ready(t, base) })
	return base, r
}

// ready asks base's /readyz once. A server still starting (a dbsvc seeding
// its database accepts connections before it serves them) is an error to
// poll again, not a failed test.
func ready(t *testing.T, base string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s/readyz = %d", base, res.StatusCode)
	}
	return nil
}

type result struct {
	status int
	header http.Header
	body   []byte
}

var client = &http.Client{Timeout: 10 * time.Second}

func get(t *testing.T, url, token string) result {
	t.Helper()
	return send(t, http.MethodGet, url, token, "", nil)
}

// send makes one request; header, if given, is set on it.
func send(t *testing.T, method, url, token, body string, header map[string]string) result {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return result{res.StatusCode, res.Header, b}
}

func errorCode(t *testing.T, r result) string {
	t.Helper()
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	return e.Error.Code
}

func token(t *testing.T, scopes ...string) string {
	t.Helper()
	tok, _, err := testKeys.Issue("tester", scopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenFor is a token for sub with exactly the given scopes.
func tokenFor(t *testing.T, sub string, scopes ...string) string {
	t.Helper()
	tok, _, err := testKeys.Issue(sub, scopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestBusDownIs503 stops NATS under a running gateway: API calls answer
// 503 JSON at once instead of waiting out a timeout, and /readyz says so.
func TestBusDownIs503(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	tok := token(t, auth.AllScopes...)

	ns.Shutdown()
	ns.WaitForShutdown()
	testutil.Eventually(t, 5*time.Second, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	for _, path := range []string{"/data", "/process", "/tasks/abc"} {
		start := time.Now()
		r := get(t, base+path, tok)
		if r.status != http.StatusServiceUnavailable || errorCode(t, r) != "unavailable" {
			t.Errorf("GET %s with NATS down = %d %s, want 503 unavailable", path, r.status, r.body)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("GET %s with NATS down took %v, want < 1s", path, d)
		}
		if r.header.Get("X-Served-By") != "gw-test" {
			t.Errorf("GET %s: X-Served-By = %q, want gw-test", path, r.header.Get("X-Served-By"))
		}
	}
	if r := get(t, base+"/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with NATS down = %d, want 503", r.status)
	}
	if r := get(t, base+"/healthz", ""); r.status != http.StatusOK {
		t.Errorf("GET /healthz with NATS down = %d, want 200 (the process is alive)", r.status)
	}
}

// TestServicesDownIs503: with NATS up but no dbsvc and no worker, the
// routes that need them answer 503 quickly (no responders).
func TestServicesDownIs503(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	tok := token(t, auth.AllScopes...)
	for _, path := range []string{"/data", "/process"} {
		start := time.Now()
		r := get(t, base+path, tok)
		if r.status != http.StatusServiceUnavailable || errorCode(t, r) != "unavailable" {
			t.Errorf("GET %s without its service = %d %s, want 503 unavailable", path, r.status, r.body)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("GET %s without its service took %v, want < 1s", path, d)
		}
	}
}

// TestDataWithoutCacheReadsDatabase: with dbsvc up but no cache bucket
// (cachesvc not started), /data still answers from the database every time.
func TestDataWithoutCacheReadsDatabase(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	var queries atomic.Int64
	dbCfg := dbsvc.DefaultConfig()
	dbCfg.DataDir, dbCfg.SeedRows, dbCfg.Queries = t.TempDir(), 2000, &queries
	dbLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbCfg.Listener = dbLn
	dbNC := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return dbsvc.Run(ctx, dbCfg, dbNC, testutil.QuietLog()) })
	base := startGateway(t, testutil.Connect(t, ns))
	tok := token(t, auth.ScopeDataRead)

	testutil.Eventually(t, 20*time.Second, func() error {
		if r := get(t, base+"/data", tok); r.status != 200 {
			return fmt.Errorf("GET /data = %d %s", r.status, r.body)
		}
		return nil
	})
	before := queries.Load()
	for range 3 {
		r := get(t, base+"/data", tok)
		var body struct {
			Cached bool `json:"cached"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != 200 || body.Cached {
			t.Fatalf("GET /data without cache = %d %s, want 200 cached:false", r.status, r.body)
		}
	}
	if got := queries.Load() - before; got != 3 {
		t.Errorf("database queries for 3 uncached reads = %d, want 3", got)
	}
	m := get(t, base+"/metrics", "")
	if !strings.Contains(string(m.body), `scalelab_cache_lookups_total{result="error",tier="kv"}`) {
		t.Errorf("/metrics lacks the cache error counter")
	}

	// Once cachesvc provisions the bucket, the second read is a hit.
	cacheLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cCfg := cachesvc.DefaultConfig()
	cCfg.JWT = testKeys
	cCfg.Listener = cacheLn
	cNC := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return cachesvc.Run(ctx, cCfg, cNC, testutil.QuietLog()) })
	testutil.Eventually(t, 10*time.Second, func() error {
		r := get(t, base+"/data", tok)
		if !strings.Contains(string(r.body), `"cached":true`) {
			return fmt.Errorf("GET /data = %s, want cached:true", r.body[:min(len(r.body), 40)])
		}
		return nil
	})

	// Garbage in the cache (someone's `nats kv put`) is not served: the
	// database answers and its value replaces the garbage.
	js, err := jetstream.New(cNC)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), cache.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), dataCacheKey, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	// The near-cache hears of the write through its KV watch, within
	// milliseconds; from then on the database answers once, then the cache.
	testutil.Eventually(t, 5*time.Second, func() error {
		if r := get(t, base+"/data", tok); !strings.HasPrefix(string(r.body), `{"cached":false`) {
			return fmt.Errorf("GET /data = %.40s, want cached:false once the garbage is seen", r.body)
		}
		return nil
	})
	r := get(t, base+"/data", tok)
	if r.status != 200 || !strings.HasPrefix(string(r.body), `{"cached":true`) || !json.Valid(r.body) {
		t.Errorf("GET /data after the database replaced the garbage = %d %.60s, want 200 cached:true", r.status, r.body)
	}
	// The answer is written in parts (see writeJSONParts): its length must
	// still be announced, not chunked, and match the body.
	if cl, ct := r.header.Get("Content-Length"), r.header.Get("Content-Type"); cl != strconv.Itoa(len(r.body)) || ct != "application/json" {
		t.Errorf("GET /data: Content-Length %q, Content-Type %q; want %d, application/json", cl, ct, len(r.body))
	}
}

// TestScopes: a valid token without the route's scope is refused with 403.
func TestScopes(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	tests := []struct {
		name   string
		path   string
		scopes []string
		want   int
	}{
		{"data without data:read", "/data", []string{auth.ScopeTasksRead}, 403},
		{"process without data:read", "/process", nil, 403},
		{"task without tasks:read", "/tasks/abc", []string{auth.ScopeDataRead}, 403},
		{"task with tasks:read", "/tasks/abc", []string{auth.ScopeTasksRead}, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, base+tt.path, token(t, tt.scopes...))
			if r.status != tt.want {
				t.Errorf("GET %s with scopes %q = %d %s, want %d", tt.path, tt.scopes, r.status, r.body, tt.want)
			}
		})
	}
}

// TestConfigValidate names every bad setting, all at once.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.ID, cfg.Addr = "", ""
	cfg.JWT.Secret = []byte("short")
	cfg.RequestTimeout, cfg.Cache.Timeout, cfg.Provision.Replicas = 0, -1, 7
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"--id", "--addr", "SCALELAB_JWT_SECRET", "--request-timeout", "--cache-timeout", "--replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, want it to name %s", err, want)
		}
	}
	good := DefaultConfig()
	good.ID, good.JWT = "gw", testKeys
	if err := good.Validate(); err != nil {
		t.Errorf("Validate() of a good config = %v, want nil", err)
	}
}

func taskID(t *testing.T, r result) string {
	t.Helper()
	var body struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || r.status != http.StatusAccepted || body.TaskID == "" {
		t.Fatalf("POST /longtask = %d %s, want 202 with a task_id", r.status, r.body)
	}
	return body.TaskID
}

func taskState(t *testing.T, base, tok, id string) string {
	t.Helper()
	var rec struct {
		State string `json:"state"`
	}
	r := get(t, base+"/tasks/"+id, tok)
	if err := json.Unmarshal(r.body, &rec); err != nil {
		t.Fatalf("GET /tasks/%s = %d %s", id, r.status, r.body)
	}
	return rec.State
}

// TestCancelTask cancels a queued task (no worker runs here): the record
// says cancelled, and a second cancel, of a finished task, is a conflict.
func TestCancelTask(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	tok := token(t, auth.AllScopes...)
	id := taskID(t, send(t, "POST", base+"/longtask", tok, `{"task":"noop"}`, nil))

	tests := []struct {
		name     string
		id       string
		tok      string
		want     int
		wantCode string
	}{
		{"queued task", id, tok, 200, ""},
		{"already cancelled", id, tok, 409, "conflict"},
		{"unknown task", "nosuchtask", tok, 404, "not_found"},
		{"bad id", "a.b", tok, 400, "invalid"},
		{"without tasks:write", id, token(t, auth.ScopeTasksRead), 403, "forbidden"},
	}
	for _, tt := range tests { // in order: the first cancel makes the second a conflict
		r := send(t, "DELETE", base+"/tasks/"+tt.id, tt.tok, "", nil)
		if r.status != tt.want {
			t.Errorf("%s: DELETE /tasks/%s = %d %s, want %d", tt.name, tt.id, r.status, r.body, tt.want)
		}
		if tt.wantCode != "" && errorCode(t, r) != tt.wantCode {
			t.Errorf("%s: error code = %q, want %q", tt.name, errorCode(t, r), tt.wantCode)
		}
	}
	if got := taskState(t, base, tok, id); got != "cancelled" {
		t.Errorf("state after cancel = %q, want cancelled", got)
	}
}

// TestIdempotencyKey: a repeated submission with the same key and body
// gets the same task and is queued once; the key is scoped to the caller.
// Neither token has tasks:admin, so bob's submission is his own whatever
// he could see.
func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	key := map[string]string{"Idempotency-Key": "order-42"}

	first := send(t, "POST", base+"/longtask", alice, `{"task":"sleep","duration_ms":5}`, key)
	id := taskID(t, first)
	again := send(t, "POST", base+"/longtask", alice, `{ "task": "sleep", "duration_ms": 5 }`, key)
	if got := taskID(t, again); got != id {
		t.Errorf("repeat with the same key: task_id = %q, want %q", got, id)
	}
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("repeat: Idempotent-Replayed = %q, want true", again.header.Get("Idempotent-Replayed"))
	}
	if r := send(t, "POST", base+"/longtask", alice, `{"task":"sleep","duration_ms":6}`, key); r.status != 409 || errorCode(t, r) != "conflict" {
		t.Errorf("same key, other body = %d %s, want 409 conflict", r.status, r.body)
	}
	theirs := send(t, "POST", base+"/longtask", bob, `{"task":"sleep","duration_ms":5}`, key)
	if got := taskID(t, theirs); got == id || theirs.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("another caller's key gave task %s (Idempotent-Replayed %q), want its own, new", got, theirs.header.Get("Idempotent-Replayed"))
	}
	if r := send(t, "POST", base+"/longtask", alice, `{"task":"noop"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}); r.status != 400 {
		t.Errorf("256-character key = %d, want 400", r.status)
	}
	// The older header name is the same key (the balancer retries a POST
	// that carries it); both, different, are refused.
	if old := send(t, "POST", base+"/longtask", alice, `{"task":"sleep","duration_ms":5}`, map[string]string{"X-Idempotency-Key": "order-42"}); taskID(t, old) != id || old.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("X-Idempotency-Key with the same key: task_id = %q (replayed %q), want %q, replayed", taskID(t, old), old.header.Get("Idempotent-Replayed"), id)
	}
	if r := send(t, "POST", base+"/longtask", alice, `{"task":"noop"}`, map[string]string{"Idempotency-Key": "a", "X-Idempotency-Key": "b"}); r.status != 400 || errorCode(t, r) != "invalid" {
		t.Errorf("two different keys = %d %s, want 400 invalid", r.status, r.body)
	}

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("TASKS holds %d messages, want 2 (alice's once, bob's once)", info.State.Msgs)
	}
}

// TestIdempotentReplayQueuesLostTask: a submission whose record was
// stored but whose message never went out (its Create timed out during a
// NATS failover and the client got a 503) is queued by the client's retry
// with the same key, once however often it is retried.
func TestIdempotentReplayQueuesLostTask(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	alice := tokenFor(t, "alice", auth.ScopeTasksWrite)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"task":"sleep","duration_ms":5}`
	typ, err := task.Validate([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	// The client's bytes, as a gateway stored them before payloads were
	// canonical: a repeat is compared by canonical form all the same.
	lost := &task.Record{ID: idempotentID(taskIDKey(testKeys.Secret), "alice", "lost-1"), Type: typ, State: task.Queued,
		Payload: json.RawMessage(body), Owner: "alice", CreatedAt: now, UpdatedAt: now}
	if _, err := task.NewStore(kv).Create(t.Context(), lost); err != nil {
		t.Fatal(err)
	}

	s, err := js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		r := send(t, "POST", base+"/longtask", alice, body, map[string]string{"Idempotency-Key": "lost-1"})
		if got := taskID(t, r); got != lost.ID || r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry %d: task_id %q, Idempotent-Replayed %q, want %q and true", i+1, got, r.header.Get("Idempotent-Replayed"), lost.ID)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs != 1 {
			t.Errorf("after retry %d: TASKS holds %d messages, want 1", i+1, info.State.Msgs)
		}
	}
}

// TestQueueFull: when the stream is at its limit, submission answers 429
// with Retry-After, never a silent drop.
func TestQueueFull(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns), func(c *Config) { c.Provision.MaxQueueMsgs = 2 })
	tok := token(t, auth.AllScopes...)
	for range 2 {
		taskID(t, send(t, "POST", base+"/longtask", tok, `{"task":"noop"}`, nil))
	}
	r := send(t, "POST", base+"/longtask", tok, `{"task":"noop"}`, nil)
	if r.status != http.StatusTooManyRequests || errorCode(t, r) != "rate_limited" {
		t.Fatalf("POST /longtask on a full queue = %d %s, want 429 rate_limited", r.status, r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
}

// stack is dbsvc and cachesvc on one NATS server, with the database's
// query counter.
type stack struct {
	ns      *server.Server
	queries *atomic.Int64
	cache   string // cachesvc's base URL
}

// startStack runs dbsvc (seedRows sales) and cachesvc, and waits until
// both are ready, without touching any cache key.
func startStack(t *testing.T, seedRows int) stack {
	t.Helper()
	return startStackWith(t, seedRows, nil)
}

// startStackWith is startStack with dbsvc's config changed by edit (nil:
// not changed) before it starts.
func startStackWith(t *testing.T, seedRows int, edit func(*dbsvc.Config)) stack {
	t.Helper()
	ns := testutil.StartNATS(t)
	var queries atomic.Int64
	dbLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dbCfg := dbsvc.DefaultConfig()
	dbCfg.Listener, dbCfg.DataDir, dbCfg.SeedRows, dbCfg.Queries = dbLn, t.TempDir(), seedRows, &queries
	if edit != nil {
		edit(&dbCfg)
	}
	dbNC := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return dbsvc.Run(ctx, dbCfg, dbNC, testutil.QuietLog()) })
	cacheLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cCfg := cachesvc.DefaultConfig()
	cCfg.JWT = testKeys
	cCfg.Listener = cacheLn
	cNC := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return cachesvc.Run(ctx, cCfg, cNC, testutil.QuietLog()) })
	testutil.Eventually(t, 30*time.Second, func() error {
		if err := ready(t, "http://"+dbLn.Addr().String()); err != nil {
			return fmt.Errorf("dbsvc: %w", err)
		}
		if err := ready(t, "http://"+cacheLn.Addr().String()); err != nil {
			return fmt.Errorf("cachesvc: %w", err)
		}
		return nil
	})
	return stack{ns: ns, queries: &queries, cache: "http://" + cacheLn.Addr().String()}
}

// TestColdKeyOneQuery: 200 concurrent requests for one cold key, spread
// over two gateways, cost the database exactly one query (singleflight in
// each gateway, the KV lease between them).
func TestColdKeyOneQuery(t *testing.T) {
	t.Parallel()
	st := startStack(t, 20000)
	// The /data query over 20,000 rows is slow on purpose, so that the 200
	// requests overlap it; under -race on a busy 2-core machine it has
	// taken more than the tests' usual 2 s request timeout, and a 503 for
	// that timeout says nothing about the query count this test is about.
	// 8 s: under the test client's 10 s, so a timeout still shows as the
	// gateway's JSON error.
	slowDB := func(c *Config) { c.RequestTimeout = 8 * time.Second }
	bases := []string{startGateway(t, testutil.Connect(t, st.ns), slowDB), startGateway(t, testutil.Connect(t, st.ns), slowDB)}
	tok := token(t, auth.ScopeDataRead, auth.ScopeItemsRead)
	for _, path := range []string{"/data", "/items/5", "/items/99999"} {
		before := st.queries.Load()
		const n = 200
		results := make(chan string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				req, _ := http.NewRequest(http.MethodGet, bases[i%2]+path, nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				res, err := client.Do(req)
				if err != nil {
					results <- err.Error()
					return
				}
				body, _ := io.ReadAll(io.LimitReader(res.Body, 300))
				res.Body.Close()
				results <- fmt.Sprintf("%d %s", res.StatusCode, bytes.TrimSpace(body))
			})
		}
		wg.Wait()
		close(results)
		want := http.StatusOK
		if path == "/items/99999" {
			want = http.StatusNotFound // not-found is cached like a value
		}
		for r := range results {
			if !strings.HasPrefix(r, strconv.Itoa(want)+" ") {
				t.Fatalf("a concurrent GET %s = %s, want %d", path, r, want)
			}
		}
		if got := st.queries.Load() - before; got != 1 {
			t.Errorf("database queries for %d concurrent cold GET %s over 2 gateways = %d, want 1", n, path, got)
		}
	}
}

// itemBody reads an item response.
func itemBody(t *testing.T, r result) dbsvc.Item {
	t.Helper()
	var it dbsvc.Item
	if err := json.Unmarshal(r.body, &it); err != nil {
		t.Fatalf("item body %q: %v", r.body, err)
	}
	return it
}

// TestItems drives /items: reads through the tiers (X-Cache), writes that
// invalidate on every gateway, deletes, lists, and bad input.
func TestItems(t *testing.T) {
	t.Parallel()
	st := startStack(t, 2000)
	gwA := startGateway(t, testutil.Connect(t, st.ns))
	gwB := startGateway(t, testutil.Connect(t, st.ns))
	tok := token(t, auth.ScopeItemsRead, auth.ScopeItemsWrite)

	r := get(t, gwA+"/items/7", tok)
	if r.status != 200 || r.header.Get("X-Cache") != "miss" || itemBody(t, r).ID != 7 {
		t.Fatalf("first GET /items/7 = %d %s X-Cache %q, want 200, item 7, miss", r.status, r.body, r.header.Get("X-Cache"))
	}
	// Both gateways come to serve it from their near-cache.
	for _, base := range []string{gwA, gwB} {
		testutil.Eventually(t, 10*time.Second, func() error {
			if r := get(t, base+"/items/7", tok); r.header.Get("X-Cache") != "local" {
				return fmt.Errorf("GET %s/items/7 X-Cache = %q, want local", base, r.header.Get("X-Cache"))
			}
			return nil
		})
	}
	// A write through A: afterwards neither gateway serves the old item.
	for i := range 3 {
		name := fmt.Sprintf("renamed %d", i)
		body := fmt.Sprintf(`{"name":%q,"price_cents":%d,"stock":5}`, name, 100+i)
		r := send(t, http.MethodPut, gwA+"/items/7", tok, body, nil)
		if r.status != 200 || itemBody(t, r).Name != name {
			t.Fatalf("PUT /items/7 = %d %s, want 200 with the new name", r.status, r.body)
		}
		for _, base := range []string{gwB, gwA} {
			if it := itemBody(t, get(t, base+"/items/7", tok)); it.Name != name || it.PriceCents != int64(100+i) {
				t.Fatalf("GET %s/items/7 right after PUT = %+v, want name %q", base, it, name)
			}
		}
	}
	// Delete: 204, then 404 everywhere; a second delete is 404.
	if r := send(t, http.MethodDelete, gwB+"/items/8", tok, "", nil); r.status != http.StatusNoContent {
		t.Fatalf("DELETE /items/8 = %d %s, want 204", r.status, r.body)
	}
	for _, base := range []string{gwA, gwB} {
		if r := get(t, base+"/items/8", tok); r.status != 404 || errorCode(t, r) != "not_found" {
			t.Errorf("GET %s/items/8 after DELETE = %d %s, want 404 not_found", base, r.status, r.body)
		}
	}
	if r := send(t, http.MethodDelete, gwA+"/items/8", tok, "", nil); r.status != 404 {
		t.Errorf("second DELETE /items/8 = %d, want 404", r.status)
	}
	// The list pages by id.
	var page dbsvc.ItemPage
	r = get(t, gwA+"/items?after_id=5&limit=3", tok)
	if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 || len(page.Items) != 3 || page.Items[0].ID != 6 || page.NextAfterID != 9 {
		t.Errorf("GET /items?after_id=5&limit=3 = %d %s, want items 6, 7, 9 (8 deleted) and next_after_id 9", r.status, r.body)
	}

	bad := []struct {
		method, path, body string
		status             int
	}{
		{"GET", "/items/0", "", 400},
		{"GET", "/items/-1", "", 400},
		{"GET", "/items/abc", "", 400},
		{"GET", "/items/99999999999999999999", "", 400},
		{"GET", "/items?limit=abc", "", 400},
		{"GET", "/items?limit=1000", "", 400},
		{"GET", "/items?after_id=-1", "", 400},
		{"PUT", "/items/7", `{"name":"x","price_cents":1,"stock":1,"extra":1}`, 400},
		{"PUT", "/items/7", `{"name":"x","price_cents":1,"stock":1} {}`, 400},
		{"PUT", "/items/7", `{"name":"","price_cents":1,"stock":1}`, 400},
		{"PUT", "/items/7", `{"name":"x","price_cents":-1,"stock":1}`, 400},
		{"PUT", "/items/7", `{"name":"x","price_cents":"1","stock":1}`, 400},
		{"PUT", "/items/7", `not json`, 400},
		{"PUT", "/items/7", ``, 400},
		{"PUT", "/items/7", `{"name":"` + strings.Repeat("x", 70000) + `"}`, 413},
		{"PUT", "/items/99999", `{"name":"x","price_cents":1,"stock":1}`, 404},
		{"DELETE", "/items/x", "", 400},
		{"POST", "/items/7", "", 405},
	}
	for _, b := range bad {
		r := send(t, b.method, gwA+b.path, tok, b.body, nil)
		if r.status != b.status {
			t.Errorf("%s %s %.40q = %d %s, want %d", b.method, b.path, b.body, r.status, r.body, b.status)
			continue
		}
		errorCode(t, r) // a JSON error body
	}
	if r := send(t, http.MethodPut, gwA+"/items/7", token(t, auth.ScopeItemsRead), `{"name":"x","price_cents":1,"stock":1}`, nil); r.status != 403 {
		t.Errorf("PUT without items:write = %d, want 403", r.status)
	}
}

// TestInjectLatency: --inject-latency slows the API, not the health checks
// (the balancer must see a slow gateway as healthy), and a bad value is
// refused.
func TestInjectLatency(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	const delay = 150 * time.Millisecond
	base := startGateway(t, testutil.Connect(t, ns), func(c *Config) { c.InjectLatency = delay })
	tok := token(t, auth.ScopeDataRead)
	start := time.Now()
	if r := get(t, base+"/healthz", ""); r.status != 200 || time.Since(start) >= delay {
		t.Errorf("GET /healthz = %d after %v, want 200 before %v", r.status, time.Since(start), delay)
	}
	start = time.Now()
	get(t, base+"/data", tok) // no dbsvc here: the answer does not matter, its delay does
	if took := time.Since(start); took < delay {
		t.Errorf("GET /data answered after %v, want at least the injected %v", took, delay)
	}
	bad := DefaultConfig()
	bad.ID, bad.JWT, bad.InjectLatency = "gw", testKeys, -time.Second
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "--inject-latency") {
		t.Errorf("Validate() with --inject-latency -1s = %v, want an error naming it", err)
	}
}
