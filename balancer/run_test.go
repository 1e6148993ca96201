package balancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/testutil"
)

// ignoreLatency leaves the measured latencies out of a comparison of
// backend statuses.
var ignoreLatency = cmpopts.IgnoreFields(BackendStatus{}, "P50Ms", "P99Ms")

func TestOpsRoutes(t *testing.T) {
	t.Parallel()
	gw0, gw1 := echoBackend(t, "gw0"), echoBackend(t, "gw1")
	base := startBalancer(t, testConfig(gw0.URL, gw1.URL))
	c := newClient(t)

	for _, tt := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/-/healthz", http.StatusOK, `{"status":"ok"}`},
		{"/-/readyz", http.StatusOK, `{"status":"ready"}`},
		{"/-/nope", http.StatusNotFound, `{"error":{"code":"not_found","message":"no balancer route /-/nope"}}`},
	} {
		res, body := get(t, c, base+tt.path)
		if res.StatusCode != tt.wantStatus {
			t.Errorf("GET %s = %d, want %d", tt.path, res.StatusCode, tt.wantStatus)
		}
		if got := strings.TrimSpace(string(body)); got != tt.wantBody {
			t.Errorf("GET %s body = %q, want %q", tt.path, got, tt.wantBody)
		}
	}

	const n = 4
	for range n {
		if res, _ := get(t, c, base+"/data"); res.StatusCode != http.StatusOK {
			t.Fatalf("GET /data = %d, want 200", res.StatusCode)
		}
	}
	want := statusBody{Policy: "round_robin", Ready: 2, Backends: []BackendStatus{
		{URL: gw0.URL, State: "healthy", Weight: 1, Requests: n / 2},
		{URL: gw1.URL, State: "healthy", Weight: 1, Requests: n / 2},
	}}
	var got statusBody
	testutil.Eventually(t, 5*time.Second, func() error {
		got = balancerStatus(t, c, base)
		if diff := cmp.Diff(want, got, ignoreLatency); diff != "" {
			return fmt.Errorf("/-/balancer mismatch (-want +got):\n%s", diff)
		}
		return nil
	})
	for _, b := range got.Backends {
		if b.P50Ms <= 0 || b.P99Ms < b.P50Ms {
			t.Errorf("%s latency p50 %v ms, p99 %v ms; want 0 < p50 <= p99", b.URL, b.P50Ms, b.P99Ms)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		metrics := scrape(t, c, base)
		for _, line := range []string{
			fmt.Sprintf(`scalelab_balancer_requests_total{backend=%q,code="2xx"} %d`, gw0.URL, n/2),
			fmt.Sprintf(`scalelab_balancer_requests_total{backend=%q,code="2xx"} %d`, gw1.URL, n/2),
			fmt.Sprintf(`scalelab_balancer_backend_errors_total{backend=%q} 0`, gw0.URL),
			fmt.Sprintf(`scalelab_balancer_request_seconds_count %d`, n),
			fmt.Sprintf(`scalelab_balancer_backend_state{backend=%q,state="healthy"} 1`, gw0.URL),
			fmt.Sprintf(`scalelab_balancer_backend_state{backend=%q,state="draining"} 0`, gw0.URL),
			fmt.Sprintf(`scalelab_balancer_backend_in_flight{backend=%q} 0`, gw1.URL),
			`scalelab_balancer_backends_ready 2`,
			`scalelab_balancer_retries_total{reason="connect"} 0`,
			`scalelab_balancer_retries_denied_total 0`,
		} {
			if !strings.Contains(metrics, line+"\n") {
				return fmt.Errorf("/-/metrics lacks %q", line)
			}
		}
		return nil
	})
}

// TestGracefulShutdown cancels Run, as SIGTERM does in main, while requests
// are in flight: every one must complete, new connections must be refused,
// and Run must return nil.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const inFlight = 5
	started, release := make(chan struct{}, inFlight), make(chan struct{})
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
			_, _ = io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(gw.Close)
	base, cancel, errc := runBalancer(t, testConfig(gw.URL))
	defer cancel()
	c := newClient(t)

	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, inFlight)
	for range inFlight {
		req := newRequest(t, http.MethodGet, base+"/slow", nil)
		go func() {
			res, err := c.Do(req)
			if err != nil {
				done <- result{err: err}
				return
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			done <- result{status: res.StatusCode, body: string(body), err: err}
		}()
	}
	for range inFlight {
		<-started
	}
	cancel()
	// Shutdown has begun once the listener is closed.
	addr := strings.TrimPrefix(base, "http://")
	testutil.Eventually(t, 5*time.Second, func() error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil
		}
		conn.Close()
		return errors.New("balancer still accepts connections")
	})
	select {
	case err := <-errc:
		t.Fatalf("Run() returned %v while requests were in flight", err)
	default:
	}
	close(release)

	for range inFlight {
		r := <-done
		if r.err != nil || r.status != http.StatusOK || r.body != "done" {
			t.Errorf("in-flight request = %d %q, %v; want 200 \"done\", nil", r.status, r.body, r.err)
		}
	}
	if err := <-errc; err != nil {
		t.Errorf("Run() = %v, want nil", err)
	}
}

// A connection a client dialled ahead and never used must not hold up the
// shutdown: fasthttp, like net/http, waits 5 s for such a connection.
func TestShutdownClosesSilentConns(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	cfg := testConfig(gw.URL)
	cfg.ShutdownTimeout = 4 * time.Second
	base, cancel, errc := runBalancer(t, cfg)
	defer cancel()
	addr := strings.TrimPrefix(base, "http://")
	spare, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer spare.Close()
	// One request after the spare, so the server has accepted both.
	c := newClient(t)
	res, err := c.Do(newRequest(t, http.MethodGet, base+"/x", nil))
	if err != nil {
		t.Fatalf("GET /x: %v", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	c.CloseIdleConnections()

	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run() with a silent connection open = %v after %v, want nil", err, time.Since(start))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run() did not return 10s after its context ended")
	}
	_ = spare.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := spare.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read on the spare connection after shutdown = %v, want EOF", err)
	}
}

// The balancer's own routes get a request context that ends with the
// request. fasthttpadaptor alone would pass the fasthttp.RequestCtx, which
// fasthttp reuses for the next request: a context derived from it outlived
// the request and raced with that reuse.
func TestOpsRequestContextEndsWithRequest(t *testing.T) {
	t.Parallel()
	b, err := newBalancer(testConfig("http://127.0.0.1:1"), prometheus.NewRegistry(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var seen context.Context
	b.ops.HandleFunc("GET /-/probe", func(w http.ResponseWriter, r *http.Request) {
		seen = r.Context()
		if err := seen.Err(); err != nil {
			t.Errorf("request context during the request: Err() = %v, want nil", err)
		}
	})
	var req fasthttp.Request
	req.Header.SetMethod(http.MethodGet)
	req.SetRequestURI("/-/probe")
	var rc fasthttp.RequestCtx
	rc.Init(&req, nil, nil)
	b.handle(&rc)
	if seen == nil {
		t.Fatal("the /-/probe handler did not run")
	}
	if _, ok := seen.(*fasthttp.RequestCtx); ok || seen.Err() == nil {
		t.Errorf("request context after the request: %T, Err() = %v; want a context of its own, ended", seen, seen.Err())
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg := testConfig("foo")
	cfg.Listener = ln
	err = Run(t.Context(), cfg, testLogger(t))
	if want := `balancer: --backends: "foo" is not an http(s) URL`; err == nil || err.Error() != want {
		t.Errorf("Run() = %v, want %q", err, want)
	}
	// Run owns the listener, also when it refuses to start.
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept() after Run = %v, want %v", err, net.ErrClosed)
	}
}

// BenchmarkProxy measures a small GET through the balancer to one gateway,
// next to the same GET sent to the gateway directly, so that the
// balancer's cost can be compared across changes.
func BenchmarkProxy(b *testing.B) {
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"cached":true,"data":"Fetched fresh data from DB"}`)
	}))
	defer gw.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatalf("listen: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Backends = []string{gw.URL}
	cfg.Listener = ln
	cfg.AdminAddr = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(b.Context())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			b.Errorf("Run() = %v, want nil", err)
		}
	}()

	for _, bb := range []struct{ name, url string }{
		{"direct", gw.URL + "/data"},
		{"balancer", "http://" + ln.Addr().String() + "/data"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 1024}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := c.Get(bb.url)
					if err != nil {
						b.Errorf("GET: %v", err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("GET = %d, want 200", res.StatusCode)
						return
					}
				}
			})
		})
	}
}

// TestClientGoneIsNotBackendError checks that a client hanging up while its
// gateway works is recorded as 499 and not held against the gateway.
func TestClientGoneIsNotBackendError(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	gw := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // until the balancer drops the request
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req := newRequest(t, http.MethodGet, base+"/slow", nil).WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		res, err := c.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error = %v, want %v", err, context.Canceled)
	}

	testutil.Eventually(t, 5*time.Second, func() error {
		metrics := scrape(t, c, base)
		for _, line := range []string{
			fmt.Sprintf(`scalelab_balancer_requests_total{backend=%q,code="4xx"} 1`, gw.URL),
			fmt.Sprintf(`scalelab_balancer_backend_errors_total{backend=%q} 0`, gw.URL),
		} {
			if !strings.Contains(metrics, line+"\n") {
				return fmt.Errorf("/-/metrics lacks %q", line)
			}
		}
		return nil
	})
	want := []BackendStatus{{URL: gw.URL, State: "healthy", Weight: 1, Requests: 1}}
	if diff := cmp.Diff(want, balancerStatus(t, c, base).Backends, ignoreLatency); diff != "" {
		t.Errorf("/-/balancer mismatch (-want +got):\n%s", diff)
	}
}

// TestShutdownRightAfterStart: a shutdown that comes as the balancer
// starts (a SIGTERM during a deploy) returns at once. fasthttp's shutdown
// could run before its Serve had registered the listener, and Serve then
// accepted for ever.
func TestShutdownRightAfterStart(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "a")
	for i := range 20 {
		_, cancel, errc := runBalancer(t, testConfig(gw.URL))
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("start %d: Run() = %v, want nil", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("start %d: Run did not return 10s after a cancel right after the start", i)
		}
	}
}
