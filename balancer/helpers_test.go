package balancer

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// testLogger logs at debug level into the test's output, so a failing test
// shows the access log and the balancer's warnings.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig returns a valid config over backends, with a short dial timeout
// so that a test hitting an unreachable address fails fast.
func testConfig(backends ...string) Config {
	cfg := DefaultConfig()
	cfg.Backends = backends
	cfg.DialTimeout = time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

// runBalancer runs Run on a fresh 127.0.0.1 port with a context the caller
// can cancel. It returns the balancer's base URL, the cancel function and a
// channel that receives Run's result.
func runBalancer(t *testing.T, cfg Config) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg.Listener = ln
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	log := testLogger(t)
	go func() { errc <- Run(ctx, cfg, log) }()
	return "http://" + ln.Addr().String(), cancel, errc
}

// startBalancer runs the balancer for the rest of the test and checks, at
// cleanup, that Run shut down cleanly.
func startBalancer(t *testing.T, cfg Config) string {
	t.Helper()
	base, cancel, errc := runBalancer(t, cfg)
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
func echoBackend(t *testing.T, name string) *httptest.Server {
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
