package cachesvc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startNATS starts an in-process nats-server with JetStream for one test and
// returns a connection to it. Both are closed when the test ends.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	return testutil.Connect(t, testutil.StartNATS(t))
}

func newJetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	return js
}

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logBuffer collects log lines for a test to look at.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// has reports whether a line has msg as its message at level.
func (b *logBuffer) has(level slog.Level, msg string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, line := range bytes.Split(b.buf.Bytes(), []byte("\n")) {
		var rec struct{ Level, Msg string }
		if json.Unmarshal(line, &rec) == nil && rec.Level == level.String() && rec.Msg == msg {
			return true
		}
	}
	return false
}

// captureLog returns a logger that writes JSON lines both to the test's
// output and to the returned buffer.
func captureLog(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	b := &logBuffer{}
	return slog.New(slog.NewJSONHandler(io.MultiWriter(t.Output(), b), &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// testKeys verify the tests' tokens.
var testKeys = auth.Keys{Secret: []byte("0123456789abcdef0123456789abcdef"), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}

// testToken returns a token of testKeys for subject tester with scopes.
func testToken(t *testing.T, scopes ...string) string {
	t.Helper()
	tok, _, err := testKeys.Issue("tester", scopes, time.Hour, time.Now())
	if err != nil {
		t.Fatalf("Issue() = %v", err)
	}
	return tok
}

// testConfig is DefaultConfig with testKeys and a TTL that differs from
// the default, so tests can tell that the configured one was used.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.TTL = 90 * time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.JWT = testKeys
	return cfg
}

// instance is a cachesvc started by startCache.
type instance struct {
	*testutil.Running
	url  string // http://127.0.0.1:port
	http *http.Client
	// auth is the Authorization header do sends: a token of testKeys with
	// cache:read and cache:write.
	auth string
}

// startCache runs cachesvc on nc with cfg on a fresh loopback port and waits
// until /readyz answers 200. It is stopped when the test ends, if stop has
// not been called, and the test fails if Run returns an error.
func startCache(t *testing.T, nc *nats.Conn, cfg Config) *instance {
	t.Helper()
	return startCacheWithLog(t, nc, cfg, testLogger(t))
}

// startCacheWithLog is startCache logging to log.
func startCacheWithLog(t *testing.T, nc *nats.Conn, cfg Config, log *slog.Logger) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	cfg.Listener = ln
	in := &instance{
		Running: testutil.Start(t, func(ctx context.Context) error { return Run(ctx, cfg, nc, log) }),
		url:     "http://" + ln.Addr().String(),
		http:    &http.Client{Timeout: 10 * time.Second},
		auth:    "Bearer " + testToken(t, auth.ScopeCacheRead, auth.ScopeCacheWrite),
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if exited, err := in.Exited(); exited {
			t.Fatalf("Run() returned early: %v", err)
		}
		resp, err := in.http.Get(in.url + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /readyz = %d", resp.StatusCode)
		}
		return nil
	})
	return in
}

// do sends a request with the instance's token and returns the status,
// the headers and the body.
func (in *instance) do(t *testing.T, method, path string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	return in.doAuth(t, in.auth, method, path, body)
}

// doAuth is do with the Authorization header authz, none when empty.
func (in *instance) doAuth(t *testing.T, authz, method, path string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, in.url+path, r)
	if err != nil {
		t.Fatalf("NewRequest(%s %s) = %v", method, path, err)
	}
	req.Header.Set("X-Request-ID", "req-test")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := in.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// doJSON is do with an expected status, decoding the JSON body into v.
func (in *instance) doJSON(t *testing.T, method, path string, body []byte, wantStatus int, v any) {
	t.Helper()
	status, h, b := in.do(t, method, path, body)
	if status != wantStatus {
		t.Fatalf("%s %s = %d %s, want %d", method, path, status, b, wantStatus)
	}
	if ct := h.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("%s %s Content-Type = %q, want application/json; charset=utf-8", method, path, ct)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s body %q is not JSON: %v", method, path, b, err)
	}
}
