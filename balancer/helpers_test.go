package balancer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/auth/authtest"
	"github.com/scalelab/scalelab/internal/testutil"
)

// testLogger logs at debug level into the test's output, so a failing test
// shows the access log and the balancer's warnings.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig returns a valid config over backends, with a short dial timeout
// so that a test hitting an unreachable address fails fast. Active checks
// and passive ejection are off, so that the pool does not change under a
// test that is not about them; withHealth turns them on.
func testConfig(backends ...string) Config {
	cfg := DefaultConfig()
	cfg.Backends = backends
	cfg.DialTimeout = time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.HealthInterval = 0
	cfg.EjectAfter = 0
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.JWT = testKeys
	if e := os.Getenv(testEngineEnv); e != "" {
		cfg.Engine = e
	}
	return cfg
}

// withHealth turns on fast active checks (every 20 ms, two in a row
// decide) and passive ejection after three failures for 100 ms (growing to
// 1 s), so that health tests take milliseconds.
func withHealth(cfg Config) Config {
	cfg.HealthInterval = 20 * time.Millisecond
	cfg.HealthTimeout = 500 * time.Millisecond
	cfg.HealthyThreshold = 2
	cfg.UnhealthyThreshold = 2
	cfg.EjectAfter = 3
	cfg.EjectBackoff = 100 * time.Millisecond
	cfg.EjectBackoffMax = time.Second
	return cfg
}

// testKeys are the keys of testConfig, which verify adminToken's tokens.
var testKeys = auth.Keys{Secret: []byte(authtest.Secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}

// adminToken returns a token that testKeys verify, with scopes.
func adminToken(t testing.TB, scopes ...string) string {
	t.Helper()
	tok, _, err := testKeys.Issue("ops", scopes, time.Hour, time.Now())
	if err != nil {
		t.Fatalf("Issue() = %v", err)
	}
	return tok
}

// adminURLs maps the base URL of each balancer the tests run to the base
// URL of its admin listener (see adminOf).
var adminURLs sync.Map

// adminOf returns the base URL of the admin listener of the balancer at
// base, which runBalancer started, so that tests keep one handle on a
// balancer and reach its /-/ routes through this.
func adminOf(t testing.TB, base string) string {
	t.Helper()
	a, ok := adminURLs.Load(base)
	if !ok {
		t.Fatalf("no admin listener known for %s", base)
	}
	return a.(string)
}

// runBalancer runs Run on a fresh 127.0.0.1 port, and its admin listener
// on another (see adminOf), with a context the caller can cancel. It
// returns the balancer's base URL, the cancel function and a channel that
// receives Run's result.
func runBalancer(t testing.TB, cfg Config) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	return runBalancerWith(t, cfg, nil)
}

// runBalancerWith is runBalancer with the DNS lookup of --discover
// replaced by lookup (nil: the real resolver).
func runBalancerWith(t testing.TB, cfg Config, lookup lookupFunc) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg.Listener = ln
	base := "http://" + ln.Addr().String()
	if cfg.AdminListener == nil {
		aln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		cfg.AdminListener = aln
	}
	adminURLs.Store(base, "http://"+cfg.AdminListener.Addr().String())
	if lookup == nil {
		lookup = resolverLookup()
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	log := testLogger(t)
	go func() { errc <- run(ctx, cfg, log, lookup) }()
	return base, cancel, errc
}

// startBalancer runs the balancer for the rest of the test and checks, at
// cleanup, that Run shut down cleanly.
func startBalancer(t testing.TB, cfg Config) string {
	t.Helper()
	return startBalancerWith(t, cfg, nil)
}

// startBalancerWith is startBalancer with the DNS lookup replaced.
func startBalancerWith(t testing.TB, cfg Config, lookup lookupFunc) string {
	t.Helper()
	base, cancel, errc := runBalancerWith(t, cfg, lookup)
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return base
}

// newClient returns a client that does not follow redirects, so that tests
// see exactly what the balancer answered.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends req and returns the response with its body read.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return res, body
}

// get sends a GET to url.
func get(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	return do(t, c, newRequest(t, http.MethodGet, url, nil))
}

func newRequest(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	return req
}

// echo is what echoBackend saw of a request.
type echo struct {
	Backend    string      `json:"backend"`
	Method     string      `json:"method"`
	Path       string      `json:"path"`
	RawQuery   string      `json:"raw_query"`
	Host       string      `json:"host"`
	Body       string      `json:"body"`
	Header     http.Header `json:"header"`
	RemoteAddr string      `json:"remote_addr"`
}

// echoBackend starts a gateway stand-in that answers with the echo of the
// request, X-Served-By: name, and the status asked for in X-Want-Status
// (200 by default).
func echoBackend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := http.StatusOK
		if s := r.Header.Get("X-Want-Status"); s != "" {
			status, _ = strconv.Atoi(s)
		}
		w.Header().Set("X-Served-By", name)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(echo{
			Backend:    name,
			Method:     r.Method,
			Path:       r.URL.Path,
			RawQuery:   r.URL.RawQuery,
			Host:       r.Host,
			Body:       string(body),
			Header:     r.Header,
			RemoteAddr: r.RemoteAddr,
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// decodeEcho decodes an echoBackend response body.
func decodeEcho(t *testing.T, body []byte) echo {
	t.Helper()
	var e echo
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("decode echo %q: %v", body, err)
	}
	return e
}

// deadURL returns the URL of a port nobody listens on: connecting to it is
// refused at once.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return "http://" + addr
}

// statusBody is the body of GET /-/balancer.
type statusBody struct {
	Policy   string          `json:"policy"`
	Discover string          `json:"discover"`
	Ready    int             `json:"ready"`
	Backends []BackendStatus `json:"backends"`
}

// balancerStatus returns GET /-/balancer from the admin listener of the
// balancer at base.
func balancerStatus(t *testing.T, c *http.Client, base string) statusBody {
	t.Helper()
	res, body := get(t, c, adminOf(t, base)+"/-/balancer")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /-/balancer = %d, want 200", res.StatusCode)
	}
	var s statusBody
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("decode /-/balancer %q: %v", body, err)
	}
	return s
}

// backendOf returns the entry of url in s; ok is false when it is not
// there.
func (s statusBody) backendOf(url string) (BackendStatus, bool) {
	for _, b := range s.Backends {
		if b.URL == url {
			return b, true
		}
	}
	return BackendStatus{}, false
}

// waitState polls GET /-/balancer until the backend url is in state.
func waitState(t *testing.T, c *http.Client, base, url, state string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		s := balancerStatus(t, c, base)
		b, ok := s.backendOf(url)
		if !ok {
			return fmt.Errorf("/-/balancer lists no %s: %+v", url, s.Backends)
		}
		if b.State != state {
			return fmt.Errorf("%s is %s, want %s", url, b.State, state)
		}
		return nil
	})
}

// scrape returns GET /-/metrics from the admin listener of the balancer
// at base.
func scrape(t *testing.T, c *http.Client, base string) string {
	t.Helper()
	res, body := get(t, c, adminOf(t, base)+"/-/metrics")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /-/metrics = %d, want 200", res.StatusCode)
	}
	return string(body)
}

// killable is a gateway stand-in that can be killed hard (listener and
// every connection closed at once, as when its process dies) and started
// again on the same address.
type killable struct {
	t       *testing.T
	addr    string
	handler http.Handler

	mu  sync.Mutex
	srv *http.Server
}

// startKillable starts a killable backend answering with h on a fresh
// 127.0.0.1 port.
func startKillable(t *testing.T, h http.Handler) *killable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	k := &killable{t: t, addr: ln.Addr().String(), handler: h}
	k.serve(ln)
	t.Cleanup(k.kill)
	return k
}

func (k *killable) url() string { return "http://" + k.addr }

func (k *killable) serve(ln net.Listener) {
	srv := &http.Server{Handler: k.handler, ReadHeaderTimeout: 5 * time.Second}
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// kill closes the listener and every connection, in flight or idle.
func (k *killable) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		_ = k.srv.Close()
		k.srv = nil
	}
}

// restart serves again on the same address.
func (k *killable) restart() {
	k.t.Helper()
	ln, err := net.Listen("tcp", k.addr)
	if err != nil {
		k.t.Fatalf("listen again on %s: %v", k.addr, err)
	}
	k.serve(ln)
}

// switchable is a /healthz that an atomic turns on and off; every other
// path answers like echoBackend would, minus the echo.
type switchable struct {
	name string
	sick atomic.Bool
	hits atomic.Int64 // requests other than /healthz
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		if s.sick.Load() {
			http.Error(w, "sick", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `{"status":"ok"}`)
		return
	}
	s.hits.Add(1)
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("X-Served-By", s.name)
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// containsLine reports whether text has line as a whole line.
func containsLine(text, line string) bool {
	return strings.HasPrefix(text, line+"\n") || strings.Contains(text, "\n"+line+"\n")
}
