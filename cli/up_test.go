package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// syncBuffer is a bytes.Buffer safe to write from run's goroutines while
// the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// run runs the program as main does, on an empty stdin.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return Run(ctx, args, getenv, strings.NewReader(""), stdout, stderr)
}

// runStdin runs the program as main does, with stdin as its input.
func runStdin(ctx context.Context, stdin string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return Run(ctx, args, getenv, strings.NewReader(stdin), stdout, stderr)
}

// upRun is a running `scalelab up` started by startUp.
type upRun struct {
	base   string // balancer URL
	token  string
	cache  string            // cachesvc URL
	nats   string            // NATS URL
	admin  map[string]string // the operator's environment, as the banner prints it
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error
	// adminURL is the balancer's admin listener, as the banner prints it.
	adminURL string
}

var (
	balancerLine = regexp.MustCompile(`balancer\s+(http://\S+)`)
	adminLine    = regexp.MustCompile(`(?m)^\s+admin\s+(http://\S+)`)
	tokenLine    = regexp.MustCompile(`export TOKEN=(\S+)`)
	cacheLine    = regexp.MustCompile(`cachesvc\s+(http://\S+)/cache`)
	natsLine     = regexp.MustCompile(`nats\s+(nats://\S+)`)
	natsEnvLine  = regexp.MustCompile(`export (NATS_CONTEXT=\S+ SCALELAB_NATS_USER=\S+ SCALELAB_NATS_PASSWORD=\S+)`)
)

// startUp runs `scalelab up` in-process on random ports over dir and
// waits until its API answers through the balancer. At cleanup the test
// fails if NATS refused any role anything: every role connects with its
// least-privilege user, so a violation means the permission table
// (natsconf/permissions.go) misses a subject the role really uses.
func startUp(t *testing.T, dir string, extra ...string) *upRun {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	p := &upRun{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	args := append([]string{"up", "--data", dir,
		"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--gateway-addrs", "127.0.0.1:0,127.0.0.1:0",
		"--dbsvc-addr", "127.0.0.1:0", "--cachesvc-addr", "127.0.0.1:0",
		"--nats-port", "-1", "--nats-http-port", "0",
		"--seed-rows", "20000", "--report-duration", "200ms", "--shutdown-timeout", "2s",
		"--log-format", "json", "--log-level", "debug",
	}, extra...)
	go func() { p.done <- run(ctx, args, env(nil), p.stdout, p.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
		}
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(strings.ToLower(line), "violation") {
				t.Errorf("NATS permission violation during the run: %s", line)
			}
		}
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr (tail):\n%s", p.stdout, tail(p.stderr.String(), 6000))
		}
	})
	testutil.Eventually(t, 60*time.Second, func() error {
		select {
		case err := <-p.done:
			t.Fatalf("run returned early: %v\nstderr:\n%s", err, tail(p.stderr.String(), 4000))
		default:
		}
		out := p.stdout.String()
		b, tok := balancerLine.FindStringSubmatch(out), tokenLine.FindStringSubmatch(out)
		c, n, ne := cacheLine.FindStringSubmatch(out), natsLine.FindStringSubmatch(out), natsEnvLine.FindStringSubmatch(out)
		a := adminLine.FindStringSubmatch(out)
		if b == nil || a == nil || tok == nil || c == nil || n == nil || ne == nil {
			return fmt.Errorf("no banner yet")
		}
		p.base, p.adminURL, p.token, p.cache, p.nats = b[1], a[1], tok[1], c[1], n[1]
		p.admin = map[string]string{}
		for _, kv := range strings.Fields(ne[1]) {
			k, v, _ := strings.Cut(kv, "=")
			p.admin[k] = v
		}
		return nil
	})
	testutil.Eventually(t, 60*time.Second, func() error {
		res := p.do(t, "GET", "/readyz", "", nil)
		if res.status != http.StatusOK {
			return fmt.Errorf("GET /readyz = %d", res.status)
		}
		return nil
	})
	return p
}

// stop cancels run and checks that it returns nil (a clean drain).
func (p *upRun) stop(t *testing.T) {
	t.Helper()
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("run() after cancel = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run() did not return 30s after cancel")
	}
	p.done <- nil // for the cleanup
}

type response struct {
	status   int
	header   http.Header
	body     []byte
	servedBy string
}

var client = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// do sends a request and fails the test if it cannot be sent.
func (p *upRun) do(t *testing.T, method, path, auth string, body []byte) response {
	t.Helper()
	r, err := p.try(t, method, path, auth, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// try sends a request; it is for polls, where a refused connection only
// means "not yet".
func (p *upRun) try(t *testing.T, method, path, auth string, body []byte) (response, error) {
	t.Helper()
	return p.tryWith(t, method, path, auth, body, nil)
}

// tryWith is try with the headers of header added, or replacing the
// Content-Type try sets.
func (p *upRun) tryWith(t *testing.T, method, path, auth string, body []byte, header map[string]string) (response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, p.base+path, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b, servedBy: res.Header.Get("X-Served-By")}, nil
}

func decodeJSON[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

// TestUpEndToEnd is the lab's walk-through, through the balancer of a
// real `scalelab up`: token → /data twice (the second cached) → /process →
// /longtask → poll the task until it succeeded.
func TestUpEndToEnd(t *testing.T) {
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token

	// /data: a miss, then a hit.
	type dataResp struct {
		Cached bool            `json:"cached"`
		Data   json.RawMessage `json:"data"`
	}
	first := p.do(t, "GET", "/data", bearer, nil)
	if first.status != http.StatusOK {
		t.Fatalf("GET /data = %d %s, want 200", first.status, first.body)
	}
	d1 := decodeJSON[dataResp](t, first)
	if d1.Cached {
		t.Errorf("first GET /data cached = true, want false")
	}
	second := p.do(t, "GET", "/data", "Bearer "+p.token, nil)
	d2 := decodeJSON[dataResp](t, second)
	if !d2.Cached {
		t.Errorf("second GET /data cached = false, want true")
	}
	if !bytes.Equal(d1.Data, d2.Data) {
		t.Errorf("cached data differs from the database's:\n%s\n%s", d1.Data, d2.Data)
	}
	var report struct {
		Message     string `json:"message"`
		RowsScanned int64  `json:"rows_scanned"`
	}
	if err := json.Unmarshal(d1.Data, &report); err != nil || report.RowsScanned < 20000 {
		t.Errorf("data = %s (err %v), want a report over >= 20000 rows", d1.Data, err)
	}
	if first.header.Get("X-Request-ID") == "" {
		t.Errorf("no X-Request-ID in the response")
	}

	// The lab's bare "Authorization: <token>" works too.
	proc := p.do(t, "GET", "/process", p.token, nil)
	if proc.status != http.StatusOK {
		t.Fatalf("GET /process = %d %s, want 200", proc.status, proc.body)
	}
	if got := decodeJSON[map[string]any](t, proc)["message"]; got != "Business logic executed" {
		t.Errorf("GET /process message = %q, want %q", got, "Business logic executed")
	}

	// Round robin: consecutive requests alternate between the 2 gateways.
	var served []string
	for range 6 {
		r := p.do(t, "GET", "/process", bearer, nil)
		if r.servedBy == "" {
			t.Fatalf("GET /process: no X-Served-By")
		}
		served = append(served, r.servedBy)
	}
	for i := 2; i < len(served); i++ {
		if served[i] != served[i-2] || served[i] == served[i-1] {
			t.Fatalf("X-Served-By sequence = %q, want two gateways alternating", served)
		}
	}

	// /longtask → 202 → poll until succeeded.
	sub := p.do(t, "POST", "/longtask", bearer, []byte(`{"task":"report"}`))
	if sub.status != http.StatusAccepted {
		t.Fatalf("POST /longtask = %d %s, want 202", sub.status, sub.body)
	}
	queued := decodeJSON[struct {
		Status    string `json:"status"`
		TaskID    string `json:"task_id"`
		StatusURL string `json:"status_url"`
	}](t, sub)
	if queued.Status != "Task queued" || queued.TaskID == "" || queued.StatusURL != "/tasks/"+queued.TaskID {
		t.Fatalf("POST /longtask body = %s", sub.body)
	}
	var rec struct {
		State    string          `json:"state"`
		Attempts int             `json:"attempts"`
		Progress int             `json:"progress"`
		Result   json.RawMessage `json:"result"`
		Worker   string          `json:"worker"`
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		r := p.do(t, "GET", queued.StatusURL, bearer, nil)
		if r.status != http.StatusOK {
			return fmt.Errorf("GET %s = %d %s", queued.StatusURL, r.status, r.body)
		}
		rec = decodeJSON[struct {
			State    string          `json:"state"`
			Attempts int             `json:"attempts"`
			Progress int             `json:"progress"`
			Result   json.RawMessage `json:"result"`
			Worker   string          `json:"worker"`
		}](t, r)
		if rec.State != "succeeded" {
			return fmt.Errorf("task state = %q", rec.State)
		}
		return nil
	})
	if rec.Attempts != 1 || rec.Progress != 100 || len(rec.Result) == 0 || rec.Worker == "" {
		t.Errorf("task record = %+v, want 1 attempt, 100%% progress, a result and a worker", rec)
	}
	// The lab's "watch the worker logs": a started and a completed line
	// for the task, each with the request id that came back from POST
	// /longtask (it travelled through NATS). The completed line is written
	// just after the record, so poll for it.
	rid := sub.header.Get("X-Request-ID")
	for _, msg := range []string{"task started", "task completed"} {
		testutil.Eventually(t, 5*time.Second, func() error {
			for _, line := range strings.Split(p.stderr.String(), "\n") {
				if strings.Contains(line, `"msg":"`+msg+`"`) && strings.Contains(line, `"task_id":"`+queued.TaskID+`"`) &&
					strings.Contains(line, `"request_id":"`+rid+`"`) {
					return nil
				}
			}
			return fmt.Errorf("no %q log line with task_id %s and request_id %s", msg, queued.TaskID, rid)
		})
	}

	p.stop(t)
}

// TestUpRejectsBadInput sends what a careless or hostile client would:
// every answer is a 4xx with the JSON error body, never a 5xx.
func TestUpRejectsBadInput(t *testing.T) {
	p := startUp(t, t.TempDir())
	otherKey := auth.Keys{Secret: []byte(strings.Repeat("k", 32)), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	wrongKey, _, _ := otherKey.Issue("dev", auth.AllScopes, time.Hour, time.Now())
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	claims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"sub":"dev","iss":"scalelab","aud":"scalelab-api","exp":%d,"scope":"data:read"}`, time.Now().Add(time.Hour).Unix())))
	algNone := header + "." + claims + "."
	parts := strings.Split(p.token, ".")
	tampered := parts[0] + "." + claims + "." + parts[2]
	hs384, _ := jwt.NewWithClaims(jwt.SigningMethodHS384, jwt.MapClaims{"sub": "dev", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("x"))

	tests := []struct {
		name         string
		method, path string
		auth         string
		body         string
		wantStatus   int
		wantCode     string
	}{
		{"no token", "GET", "/data", "", "", 401, "unauthorized"},
		{"garbage token", "GET", "/data", "Bearer not.a.jwt", "", 401, "unauthorized"},
		{"wrong scheme", "GET", "/data", "Basic dXNlcjpwYXNz", "", 401, "unauthorized"},
		{"alg none", "GET", "/data", "Bearer " + algNone, "", 401, "unauthorized"},
		{"other key", "GET", "/data", "Bearer " + wrongKey, "", 401, "unauthorized"},
		{"tampered claims", "GET", "/data", "Bearer " + tampered, "", 401, "unauthorized"},
		{"HS384", "GET", "/data", "Bearer " + hs384, "", 401, "unauthorized"},
		{"malformed JSON", "POST", "/longtask", "Bearer " + p.token, `{"task":`, 400, "invalid"},
		{"not an object", "POST", "/longtask", "Bearer " + p.token, `[1,2]`, 400, "invalid"},
		{"no task type", "POST", "/longtask", "Bearer " + p.token, `{}`, 400, "invalid"},
		{"unknown task type", "POST", "/longtask", "Bearer " + p.token, `{"task":"rm -rf"}`, 400, "invalid"},
		{"sleep too long", "POST", "/longtask", "Bearer " + p.token, `{"task":"sleep","duration_ms":99999999999}`, 400, "invalid"},
		{"body too large", "POST", "/longtask", "Bearer " + p.token, `{"task":"noop","pad":"` + strings.Repeat("x", 200<<10) + `"}`, 413, "too_large"},
		{"bad task id", "GET", "/tasks/..%2Fetc", "Bearer " + p.token, "", 400, "invalid"},
		{"unknown task id", "GET", "/tasks/nosuchtask", "Bearer " + p.token, "", 404, "not_found"},
		{"unknown route", "GET", "/nope", "Bearer " + p.token, "", 404, "not_found"},
		{"wrong method", "DELETE", "/data", "Bearer " + p.token, "", 405, "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.body != "" {
				body = []byte(tt.body)
			}
			r := p.do(t, tt.method, tt.path, tt.auth, body)
			if r.status != tt.wantStatus {
				t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.wantStatus)
			}
			var e struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code != tt.wantCode || e.Error.Message == "" {
				t.Errorf("body = %s, want a JSON error with code %q", r.body, tt.wantCode)
			}
		})
	}
	p.stop(t)
}

// TestUpRestartKeepsQueuedTasks stops `up` with tasks queued and checks
// that a second `up` on the same data directory runs them all.
func TestUpRestartKeepsQueuedTasks(t *testing.T) {
	dir := t.TempDir()
	p := startUp(t, dir, "--workers", "1", "--worker-concurrency", "1")
	var ids []string
	for range 5 {
		r := p.do(t, "POST", "/longtask", "Bearer "+p.token, []byte(`{"task":"sleep","duration_ms":300}`))
		if r.status != http.StatusAccepted {
			t.Fatalf("POST /longtask = %d %s", r.status, r.body)
		}
		ids = append(ids, decodeJSON[map[string]string](t, r)["task_id"])
	}
	last := p.do(t, "GET", "/tasks/"+ids[len(ids)-1], "Bearer "+p.token, nil)
	if st := decodeJSON[map[string]any](t, last)["state"]; st != "queued" {
		t.Fatalf("last task state before stop = %v, want queued", st)
	}
	p.stop(t)

	p = startUp(t, dir)
	for _, id := range ids {
		testutil.Eventually(t, 30*time.Second, func() error {
			r := p.do(t, "GET", "/tasks/"+id, "Bearer "+p.token, nil)
			if st := decodeJSON[map[string]any](t, r)["state"]; st != "succeeded" {
				return fmt.Errorf("task %s state = %v", id, st)
			}
			return nil
		})
	}
	p.stop(t)
}

// TestUpDelayedTask: a task with a delay waits, queued with its run_at,
// and runs once the time has come.
func TestUpDelayedTask(t *testing.T) {
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token
	submitted := time.Now()
	r := p.do(t, "POST", "/longtask", bearer, []byte(`{"task":"noop","delay":"2s"}`))
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /longtask with delay = %d %s, want 202", r.status, r.body)
	}
	id := decodeJSON[map[string]string](t, r)["task_id"]
	type record struct {
		State     string     `json:"state"`
		RunAt     *time.Time `json:"run_at"`
		StartedAt *time.Time `json:"started_at"`
	}
	rec := decodeJSON[record](t, p.do(t, "GET", "/tasks/"+id, bearer, nil))
	if rec.State != "queued" || rec.RunAt == nil || rec.RunAt.Sub(submitted) < 1900*time.Millisecond {
		t.Fatalf("delayed task right after submit = %+v, want queued with run_at about 2s ahead", rec)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		rec = decodeJSON[record](t, p.do(t, "GET", "/tasks/"+id, bearer, nil))
		if rec.State != "succeeded" {
			return fmt.Errorf("state = %s", rec.State)
		}
		return nil
	})
	if rec.StartedAt.Before(rec.RunAt.Add(-time.Second)) {
		t.Errorf("delayed task started at %v, before its run_at %v", rec.StartedAt, rec.RunAt)
	}
	for _, body := range []string{`{"task":"noop","delay":"soon"}`, `{"task":"noop","delay":"1s","run_at":"2030-01-01T00:00:00Z"}`, `{"task":"noop","run_at":"tomorrow"}`, `{"task":"noop","delay":"9000h"}`} {
		if r := p.do(t, "POST", "/longtask", bearer, []byte(body)); r.status != http.StatusBadRequest {
			t.Errorf("POST /longtask %s = %d %s, want 400", body, r.status, r.body)
		}
	}
	p.stop(t)
}

// TestUpTaskWait: ?wait= turns a task into a synchronous call. POST
// /longtask?wait= answers the final record when the task finishes in time
// and the usual 202 when not; GET /tasks/{id}?wait= long-polls.
func TestUpTaskWait(t *testing.T) {
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token
	type record struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	r := p.do(t, "POST", "/longtask?wait=10s", bearer, []byte(`{"task":"sleep","duration_ms":100}`))
	if rec := decodeJSON[record](t, r); r.status != http.StatusOK || rec.State != "succeeded" || rec.ID == "" {
		t.Fatalf("POST /longtask?wait=10s of a 100 ms task = %d %s, want 200 and the succeeded record", r.status, r.body)
	}
	r = p.do(t, "POST", "/longtask?wait=50ms", bearer, []byte(`{"task":"sleep","duration_ms":1500}`))
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /longtask?wait=50ms of a 1.5 s task = %d %s, want 202", r.status, r.body)
	}
	id := decodeJSON[map[string]string](t, r)["task_id"]
	start := time.Now()
	r = p.do(t, "GET", "/tasks/"+id+"?wait=10s", bearer, nil)
	if rec := decodeJSON[record](t, r); r.status != http.StatusOK || rec.State != "succeeded" {
		t.Fatalf("GET /tasks/%s?wait=10s = %d %s, want 200 and succeeded", id, r.status, r.body)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("GET ?wait=10s answered after %v: it should answer when the 1.5 s task ends", waited)
	}
	start = time.Now()
	r = p.do(t, "GET", "/tasks/"+id+"?wait=3s", bearer, nil) // already final: at once
	if r.status != http.StatusOK || time.Since(start) > time.Second {
		t.Errorf("GET ?wait=3s of a final task = %d after %v, want 200 at once", r.status, time.Since(start))
	}
	for _, q := range []string{"?wait=soon", "?wait=-1s", "?wait=1h"} {
		if r := p.do(t, "GET", "/tasks/"+id+q, bearer, nil); r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte(`"code"`)) {
			t.Errorf("GET /tasks/{id}%s = %d %s, want 400 with a JSON error", q, r.status, r.body)
		}
		if r := p.do(t, "POST", "/longtask"+q, bearer, []byte(`{"task":"noop"}`)); r.status != http.StatusBadRequest {
			t.Errorf("POST /longtask%s = %d %s, want 400", q, r.status, r.body)
		}
	}
	p.stop(t)
}

// TestUpTaskOwnership attacks another user's task through the balancer
// of `up`, with tokens from POST /auth/token for two users with the
// default scopes (tasks:read tasks:write, not tasks:admin): bob gets a 404,
// as for a missing id, on alice's task for GET, ?wait= and DELETE, and the
// task is not cancelled; the dev token (every scope, tasks:admin among
// them) sees it.
func TestUpTaskOwnership(t *testing.T) {
	p := startUp(t, t.TempDir())
	login := func(user string) string {
		if err := runStdin(t.Context(), "correct horse battery\n", []string{"users", "add", user, "--nats", p.nats, "--bcrypt-cost", cheapBcrypt}, env(maps.Clone(p.admin)), io.Discard, io.Discard); err != nil {
			t.Fatalf("users add %s = %v", user, err)
		}
		r := p.do(t, "POST", "/auth/token", "", []byte(`{"username":"`+user+`","password":"correct horse battery"}`))
		tok := decodeJSON[map[string]any](t, r)["token"]
		if r.status != http.StatusOK || tok == nil {
			t.Fatalf("POST /auth/token for %s = %d %s", user, r.status, r.body)
		}
		return "Bearer " + fmt.Sprint(tok)
	}
	alice, bob := login("alice"), login("bob")

	sub := p.do(t, "POST", "/longtask", alice, []byte(`{"task":"sleep","duration_ms":20000}`))
	if sub.status != http.StatusAccepted {
		t.Fatalf("alice's POST /longtask = %d %s", sub.status, sub.body)
	}
	id := decodeJSON[map[string]string](t, sub)["task_id"]
	for _, a := range []struct{ method, path string }{
		{"GET", "/tasks/" + id}, {"GET", "/tasks/" + id + "?wait=2s"}, {"DELETE", "/tasks/" + id},
	} {
		r := p.do(t, a.method, a.path, bob, nil)
		code := decodeJSON[map[string]map[string]any](t, r)["error"]["code"]
		if r.status != http.StatusNotFound || code != "not_found" || bytes.Contains(r.body, []byte("alice")) {
			t.Errorf("bob's %s %s = %d %s, want 404 not_found that names nobody", a.method, a.path, r.status, r.body)
		}
	}
	r := p.do(t, "GET", "/tasks/"+id, alice, nil)
	rec := decodeJSON[map[string]any](t, r)
	if r.status != http.StatusOK || rec["owner"] != "alice" || rec["state"] == "cancelled" {
		t.Errorf("alice's GET /tasks/%s = %d %s, want 200, owner alice, not cancelled", id, r.status, r.body)
	}
	if r := p.do(t, "GET", "/tasks/"+id, "Bearer "+p.token, nil); r.status != http.StatusOK {
		t.Errorf("GET /tasks/%s with the dev token (tasks:admin) = %d %s, want 200", id, r.status, r.body)
	}
	if r := p.do(t, "DELETE", "/tasks/"+id, alice, nil); r.status != http.StatusOK {
		t.Errorf("alice's DELETE /tasks/%s = %d %s, want 200", id, r.status, r.body)
	}
	p.stop(t)
}

// TestUpScalesGateways: `up --gateways 3` runs three gateways and the
// balancer spreads requests over all of them, in turn.
func TestUpScalesGateways(t *testing.T) {
	p := startUp(t, t.TempDir(), "--gateways", "3")
	seen := map[string]int{}
	for range 9 {
		r := p.do(t, "GET", "/process", "Bearer "+p.token, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET /process = %d %s", r.status, r.body)
		}
		seen[r.servedBy]++
	}
	if len(seen) != 3 {
		t.Errorf("X-Served-By over 9 requests = %v, want 3 gateways", seen)
	}
	for g, n := range seen {
		if n != 3 {
			t.Errorf("gateway %s served %d of 9, want 3 (round robin)", g, n)
		}
	}
	p.stop(t)
}

// TestUpReadYourWrites: with every gateway serving an item from its
// near-cache, a PUT through the balancer is followed by 100 reads through
// the balancer (so spread over all gateways), none showing the old item.
func TestUpReadYourWrites(t *testing.T) {
	p := startUp(t, t.TempDir(), "--gateways", "3")
	bearer := "Bearer " + p.token
	testutil.Eventually(t, 20*time.Second, func() error {
		local := map[string]bool{}
		for range 6 {
			r := p.do(t, "GET", "/items/42", bearer, nil)
			if r.status != http.StatusOK {
				return fmt.Errorf("GET /items/42 = %d %s", r.status, r.body)
			}
			if r.header.Get("X-Cache") == "local" {
				local[r.servedBy] = true
			}
		}
		if len(local) < 3 {
			return fmt.Errorf("gateways serving /items/42 from their near-cache: %v, want all 3", local)
		}
		return nil
	})
	type item struct {
		Name       string `json:"name"`
		PriceCents int64  `json:"price_cents"`
	}
	for round := range 5 {
		name := fmt.Sprintf("round %d", round)
		body := fmt.Sprintf(`{"name":%q,"price_cents":%d,"stock":1}`, name, 1000+round)
		if r := p.do(t, "PUT", "/items/42", bearer, []byte(body)); r.status != http.StatusOK {
			t.Fatalf("PUT /items/42 = %d %s", r.status, r.body)
		}
		for i := range 100 {
			r := p.do(t, "GET", "/items/42", bearer, nil)
			if it := decodeJSON[item](t, r); r.status != http.StatusOK || it.Name != name || it.PriceCents != int64(1000+round) {
				t.Fatalf("round %d, read %d after PUT: %d %+v from %s (X-Cache %s), want %q",
					round, i, r.status, it, r.servedBy, r.header.Get("X-Cache"), name)
			}
		}
	}
	p.stop(t)
}

// TestUpOperators drives, with NATS permissions on, what the roles do
// besides the API tests above and what an operator does with the
// credentials the banner prints: users add and a login, the dead-letter
// list, cancelling a running task, cachesvc's writes, deletes, stats and
// flush, and the nats CLI context.
func TestUpOperators(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	p := startUp(t, dir)
	bearer := "Bearer " + p.token

	if nc, err := nats.Connect(p.nats); err == nil {
		nc.Close()
		t.Errorf("connect to up's NATS without credentials: nil error, want refused")
	}
	if got := p.admin["SCALELAB_NATS_USER"]; got != "admin" {
		t.Errorf("banner SCALELAB_NATS_USER = %q, want admin", got)
	}
	ctxFile := p.admin["NATS_CONTEXT"]
	fi, err := os.Stat(ctxFile)
	if err != nil {
		t.Fatalf("nats context from the banner: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("nats context %s mode = %v, want 0600 (it holds a password)", ctxFile, fi.Mode().Perm())
	}
	b, err := os.ReadFile(ctxFile)
	if err != nil {
		t.Fatal(err)
	}
	var nctx struct {
		URL, User, Password string
		InboxPrefix         string `json:"inbox_prefix"`
	}
	if err := json.Unmarshal(b, &nctx); err != nil {
		t.Fatalf("nats context %s: %v", ctxFile, err)
	}
	if nctx.URL != p.nats || nctx.User != "admin" || nctx.Password != p.admin["SCALELAB_NATS_PASSWORD"] {
		t.Errorf("nats context = %+v, want url %s, user admin and the banner's password", nctx, p.nats)
	}
	// The state on disk is the owner's alone (issue #24).
	for path, want := range map[string]os.FileMode{
		dir: 0o700, filepath.Join(dir, "nats"): 0o700, filepath.Join(dir, dbsvc.DBFile): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat %s: %v", path, err)
		} else if fi.Mode().Perm() != want {
			t.Errorf("mode of %s = %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	// The context works as the nats CLI would use it: the services
	// answer admin in the context's inbox (nats micro ls).
	nc, err := nats.Connect(nctx.URL, nats.UserInfo(nctx.User, nctx.Password), nats.CustomInboxPrefix(nctx.InboxPrefix))
	if err != nil {
		t.Fatalf("connect with the nats context: %v", err)
	}
	defer nc.Close()
	for _, svc := range []string{"process", "dbsvc", "cache-client"} {
		if _, err := nc.Request("$SRV.INFO."+svc, nil, 5*time.Second); err != nil {
			t.Errorf("as the context's user: $SRV.INFO.%s = %v, want an answer", svc, err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Consumer(t.Context(), task.Stream, task.QueueConsumer(task.DefaultQueue)); err != nil {
		t.Errorf("as the context's user: consumer info TASKS workers-default = %v", err)
	}

	// users add with the banner's environment, then a login.
	admin := maps.Clone(p.admin)
	if err := runStdin(t.Context(), "correct horse battery\n", []string{"users", "add", "alice", "--nats", p.nats, "--bcrypt-cost", cheapBcrypt}, env(admin), io.Discard, io.Discard); err != nil {
		t.Fatalf("users add with the banner's credentials = %v", err)
	}
	login := p.do(t, "POST", "/auth/token", "", []byte(`{"username":"alice","password":"correct horse battery"}`))
	if login.status != http.StatusOK {
		t.Errorf("POST /auth/token = %d %s, want 200", login.status, login.body)
	}
	var out strings.Builder
	if err := run(t.Context(), []string{"tasks", "--nats", p.nats, "dlq", "ls"}, env(admin), &out, io.Discard); err != nil {
		t.Errorf("tasks dlq ls with the banner's credentials = %v", err)
	}
	if got := strings.TrimSpace(out.String()); got != "no dead tasks" {
		t.Errorf("tasks dlq ls printed %q, want %q", got, "no dead tasks")
	}
	// Without credentials the operator commands are refused.
	if err := run(t.Context(), []string{"tasks", "--nats", p.nats, "dlq", "ls"}, env(nil), io.Discard, io.Discard); err == nil {
		t.Errorf("tasks dlq ls without credentials = nil, want an error")
	}

	// Cancel a running task: the gateway's notice reaches the worker.
	sub := p.do(t, "POST", "/longtask", bearer, []byte(`{"task":"sleep","duration_ms":60000}`))
	if sub.status != http.StatusAccepted {
		t.Fatalf("POST /longtask = %d %s", sub.status, sub.body)
	}
	id := decodeJSON[map[string]string](t, sub)["task_id"]
	state := func() string {
		return fmt.Sprint(decodeJSON[map[string]any](t, p.do(t, "GET", "/tasks/"+id, bearer, nil))["state"])
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if st := state(); st != "running" {
			return fmt.Errorf("state = %s", st)
		}
		return nil
	})
	if r := p.do(t, "DELETE", "/tasks/"+id, bearer, nil); r.status != http.StatusOK {
		t.Fatalf("DELETE /tasks/%s = %d %s", id, r.status, r.body)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if st := state(); st != "cancelled" {
			return fmt.Errorf("state = %s", st)
		}
		return nil
	})

	// cachesvc, with the banner's token as the README's lines send it: a
	// write, a read, a delete broadcast to the gateways, the stats
	// gathered from them, and a flush (a purge of the bucket). Without a
	// token only the stats answer.
	cacheCalls := []struct {
		method, path, body string
		auth               string
		want               int
	}{
		{"POST", "/cache/greeting", `{"value":"anonymous"}`, "", http.StatusUnauthorized},
		{"DELETE", "/cache", "", "", http.StatusUnauthorized},
		{"POST", "/cache/greeting", `{"value":"hello"}`, bearer, http.StatusOK},
		{"GET", "/cache/greeting", "", "", http.StatusUnauthorized},
		{"GET", "/cache/greeting", "", bearer, http.StatusOK},
		{"DELETE", "/cache/greeting", "", "", http.StatusUnauthorized},
		{"DELETE", "/cache/greeting", "", bearer, http.StatusOK},
		{"GET", "/cache", "", "", http.StatusOK},
		{"DELETE", "/cache", "", bearer, http.StatusOK},
	}
	p.do(t, "GET", "/data", bearer, nil) // something in the bucket to flush
	for _, c := range cacheCalls {
		req, err := http.NewRequestWithContext(t.Context(), c.method, p.cache+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.want {
			t.Errorf("cachesvc %s %s (token: %t) = %d %s, want %d", c.method, c.path, c.auth != "", res.StatusCode, body, c.want)
		}
	}
	p.stop(t)
}
