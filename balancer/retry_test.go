package balancer

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// hangUp is a gateway stand-in that reads each request, body included, and
// closes the connection without answering: the request reached a gateway,
// which may have acted on it.
type hangUp struct {
	ln   net.Listener
	seen atomic.Int64
}

func startHangUp(t *testing.T) *hangUp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	h := &hangUp{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go h.serve()
	return h
}

func (h *hangUp) url() string { return "http://" + h.ln.Addr().String() }

func (h *hangUp) serve() {
	for {
		conn, err := h.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			h.seen.Add(1)
		}()
	}
}

// TestRetryAfterFailure checks which failed requests go to a second
// gateway: any request whose connection failed, and after the request was
// sent only idempotent ones whose body can be sent again. A POST that
// reached a gateway is never repeated.
func TestRetryAfterFailure(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", replayLimit+1)
	tests := []struct {
		name       string
		first      string // "hangup" (reads the request, drops the connection) or "refuse"
		method     string
		body       string
		header     map[string]string
		wantStatus int
		wantFirst  int64 // requests the first gateway read
		wantSecond int64 // requests the second gateway served
	}{
		{name: "POST that reached a gateway is not retried", first: "hangup", method: http.MethodPost,
			body: `{"task":"report"}`, wantStatus: http.StatusBadGateway, wantFirst: 1, wantSecond: 0},
		{name: "GET is retried", first: "hangup", method: http.MethodGet,
			wantStatus: http.StatusOK, wantFirst: 1, wantSecond: 1},
		{name: "POST with Idempotency-Key is retried", first: "hangup", method: http.MethodPost,
			body: `{"task":"report"}`, header: map[string]string{"Idempotency-Key": "k-1"},
			wantStatus: http.StatusOK, wantFirst: 1, wantSecond: 1},
		{name: "PUT is retried with its body", first: "hangup", method: http.MethodPut,
			body: `{"name":"x"}`, wantStatus: http.StatusOK, wantFirst: 1, wantSecond: 1},
		{name: "PUT too large to replay is not retried", first: "hangup", method: http.MethodPut,
			body: big, wantStatus: http.StatusBadGateway, wantFirst: 1, wantSecond: 0},
		{name: "refused POST is retried: nothing was sent", first: "refuse", method: http.MethodPost,
			body: `{"task":"report"}`, wantStatus: http.StatusOK, wantSecond: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var first string
			var hang *hangUp
			if tt.first == "hangup" {
				hang = startHangUp(t)
				first = hang.url()
			} else {
				first = deadURL(t)
			}
			var served atomic.Int64
			var gotBody atomic.Value
			second := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				gotBody.Store(string(body))
				served.Add(1)
			}))
			base := startBalancer(t, testConfig(first, second.url()))

			req := newRequest(t, tt.method, base+"/longtask", strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			res, body := do(t, newClient(t), req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d; body %s", res.StatusCode, tt.wantStatus, body)
			}
			if hang != nil {
				if got := hang.seen.Load(); got != tt.wantFirst {
					t.Errorf("first gateway read %d requests, want %d", got, tt.wantFirst)
				}
			}
			if got := served.Load(); got != tt.wantSecond {
				t.Errorf("second gateway served %d requests, want %d", got, tt.wantSecond)
			}
			if tt.wantSecond > 0 {
				if got, _ := gotBody.Load().(string); got != tt.body {
					t.Errorf("second gateway read a body of %d bytes, want the %d sent", len(got), len(tt.body))
				}
			}
		})
	}
}

// TestRetryBudget checks that retries stay within the budget when every
// gateway fails: an outage must not be multiplied by retries.
func TestRetryBudget(t *testing.T) {
	t.Parallel()
	cfg := testConfig(deadURL(t), deadURL(t))
	cfg.MaxRetries = 1
	cfg.RetryBudgetPercent = 10
	cfg.RetryBudgetMin = 5
	base := startBalancer(t, cfg)
	c := newClient(t)

	const n = 200
	for range n {
		if res, _ := get(t, c, base+"/data"); res.StatusCode != http.StatusBadGateway {
			t.Fatalf("GET /data = %d, want 502", res.StatusCode)
		}
	}
	var attempts int64
	for _, b := range balancerStatus(t, c, base).Backends {
		attempts += b.Requests
	}
	// The 10 s window may roll over during the test, which only lowers
	// what it counts; the bound holds either way.
	maxRetries := int64(cfg.RetryBudgetMin + n*cfg.RetryBudgetPercent/100)
	if retries := attempts - n; retries > maxRetries || retries < int64(cfg.RetryBudgetMin) {
		t.Errorf("retries = %d, want between %d and %d", retries, cfg.RetryBudgetMin, maxRetries)
	}
	metrics := scrape(t, c, base)
	if !strings.Contains(metrics, "scalelab_balancer_retries_denied_total ") ||
		strings.Contains(metrics, "scalelab_balancer_retries_denied_total 0\n") {
		t.Errorf("/-/metrics shows no denied retries")
	}
}

func TestRetryBudgetWindow(t *testing.T) {
	t.Parallel()
	b := newRetryBudget(20, 2)
	now := time.Unix(1000, 0)
	for range 10 {
		b.request(now)
	}
	// min 2 + 20 % of 10 requests = 4 retries.
	var allowed int
	for range 10 {
		if b.allow(now) {
			allowed++
		}
	}
	if allowed != 4 {
		t.Errorf("allowed %d retries, want 4", allowed)
	}
	// 10 s later the window has forgotten them: the minimum again.
	later := now.Add(budgetSlots * time.Second)
	allowed = 0
	for range 10 {
		if b.allow(later) {
			allowed++
		}
	}
	if allowed != 2 {
		t.Errorf("allowed %d retries in a fresh window, want 2", allowed)
	}
}

// fakeRoundTripper answers by host: an error from errs, a status from
// statuses, or 200; it notes every attempt and the body it carried.
type fakeRoundTripper struct {
	errs     map[string]error
	statuses map[string]int

	mu    sync.Mutex
	tried []string // the URL of every attempt
	read  []string // the body each attempt carried
}

func (f *fakeRoundTripper) roundTrip(_ *backend, req *fasthttp.Request, resp *fasthttp.Response, _ *exchange) error {
	host := string(req.Header.Host())
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tried = append(f.tried, "http://"+host+string(req.Header.RequestURI()))
	f.read = append(f.read, string(req.Body()))
	if err := f.errs[host]; err != nil {
		return err
	}
	status := http.StatusOK
	if s, ok := f.statuses[host]; ok {
		status = s
	}
	resp.Reset()
	resp.SetStatusCode(status)
	return nil
}

// dialErr is what a refused or timed-out connection looks like.
func dialErr(msg string) error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: errors.New(msg)}
}

func TestForwarder(t *testing.T) {
	t.Parallel()
	// Gateway c has a path prefix, which a retry must apply like SetURL.
	backendURLs := []string{"http://a:1", "http://b:2", "http://c:3/api"}
	const (
		a = "http://a:1/items/1?x=1"
		b = "http://b:2/items/1?x=1"
		c = "http://c:3/api/items/1?x=1"
	)
	refused := dialErr("connection refused")
	tests := []struct {
		name       string
		method     string
		header     http.Header
		body       string
		errs       map[string]error
		statuses   map[string]int
		maxRetries int
		cancel     bool // the client is gone
		wantTried  []string
		wantBody   string // what the last attempt read
		wantStatus int    // 0: want an error
	}{
		{name: "first gateway answers", wantTried: []string{a}, wantStatus: 200},
		{name: "refused, next answers", errs: map[string]error{"a:1": refused},
			wantTried: []string{a, b}, wantStatus: 200},
		{name: "every gateway refuses",
			errs:      map[string]error{"a:1": refused, "b:2": dialErr("i/o timeout"), "c:3": dialErr("no route to host")},
			wantTried: []string{a, b, c}},
		{name: "max retries", maxRetries: 1, errs: map[string]error{"a:1": refused, "b:2": refused},
			wantTried: []string{a, b}},
		{name: "unread POST body is sent again", method: http.MethodPost, body: "payload",
			errs:      map[string]error{"a:1": refused, "b:2": refused},
			wantTried: []string{a, b, c}, wantBody: "payload", wantStatus: 200},
		{name: "POST broken after sending is not retried", method: http.MethodPost, body: "payload",
			errs: map[string]error{"a:1": io.ErrUnexpectedEOF}, wantTried: []string{a}},
		{name: "GET broken after sending is retried", errs: map[string]error{"a:1": io.ErrUnexpectedEOF},
			wantTried: []string{a, b}, wantStatus: 200},
		{name: "PUT broken after sending is retried with its body", method: http.MethodPut, body: "payload",
			errs:      map[string]error{"a:1": io.ErrUnexpectedEOF},
			wantTried: []string{a, b}, wantBody: "payload", wantStatus: 200},
		{name: "POST with Idempotency-Key is retried", method: http.MethodPost, body: "payload",
			header: http.Header{"Idempotency-Key": {"k1"}}, errs: map[string]error{"a:1": io.ErrUnexpectedEOF},
			wantTried: []string{a, b}, wantBody: "payload", wantStatus: 200},
		{name: "an answer is not retried, 503 included", statuses: map[string]int{"a:1": 503},
			wantTried: []string{a}, wantStatus: 503},
		{name: "client gone", cancel: true, errs: map[string]error{"a:1": dialErr("operation was canceled")},
			wantTried: []string{a}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			urls, err := parseBackends(backendURLs)
			if err != nil {
				t.Fatalf("parseBackends: %v", err)
			}
			m := newMetrics(prometheus.NewRegistry())
			p := newPool(poolConfig{}, &roundRobin{}, m, nil, testLogger(t))
			var targets []target
			for _, u := range urls {
				targets = append(targets, target{url: u, weight: 1})
			}
			p.set(t.Context(), targets, true)
			t.Cleanup(p.close)
			fake := &fakeRoundTripper{errs: tt.errs, statuses: tt.statuses}
			maxRetries := 2
			if tt.maxRetries > 0 {
				maxRetries = tt.maxRetries
			}
			f := &forwarder{rt: fake, pool: p, budget: newRetryBudget(100, 100), metrics: m, log: testLogger(t)}
			f.maxRetries.Store(int32(maxRetries))

			// The request target as the client sent it.
			first := p.byLabel("http://a:1")
			ex := &exchange{requestID: "r1", uri: []byte("/items/1?x=1"), backend: first}
			if tt.cancel {
				ex.gone = true
			}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req := new(fasthttp.Request)
			req.Header.SetMethod(method)
			for k, v := range tt.header {
				req.Header.Set(k, v[0])
			}
			if tt.body != "" {
				req.SetBodyString(tt.body)
			}
			res := new(fasthttp.Response)

			err = f.forward(ex, req, res)
			switch {
			case tt.wantStatus == 0 && err == nil:
				t.Errorf("forward() = %d, want an error", res.StatusCode())
			case tt.wantStatus != 0 && err != nil:
				t.Errorf("forward() error = %v, want %d", err, tt.wantStatus)
			case err == nil && res.StatusCode() != tt.wantStatus:
				t.Errorf("forward() = %d, want %d", res.StatusCode(), tt.wantStatus)
			}
			if diff := cmp.Diff(tt.wantTried, fake.tried); diff != "" {
				t.Errorf("attempts mismatch (-want +got):\n%s", diff)
			}
			if tt.wantBody != "" {
				if got := fake.read[len(fake.read)-1]; got != tt.wantBody {
					t.Errorf("last attempt read body %q, want %q", got, tt.wantBody)
				}
			}
			// The answering backend holds the exchange until finish; the
			// others must be back to zero.
			for _, b := range *p.all.Load() {
				want := int64(0)
				if err == nil && b == ex.backend {
					want = 1
				}
				if got := b.inFlight.Load(); got != want {
					t.Errorf("%s in flight = %d, want %d", b.label, got, want)
				}
			}
			if got, want := ex.attempts, len(tt.wantTried); got != want {
				t.Errorf("exchange attempts = %d, want %d", got, want)
			}
		})
	}
}

// TestRetrySpreadsOverBackends checks that the retries of a dead backend's
// requests go to the next ready backend in order, as its requests would
// have under round robin, and never back to a backend already tried.
func TestPickRetry(t *testing.T) {
	t.Parallel()
	p := testPool(t, 4, poolConfig{}, testLogger(t))
	all := *p.all.Load()
	tests := []struct {
		name  string
		tried []int
		want  int // -1: none
	}{
		{name: "next after the first", tried: []int{0}, want: 1},
		{name: "wraps around", tried: []int{3}, want: 0},
		{name: "skips tried", tried: []int{1, 2}, want: 3},
		{name: "skips tried, wrapping", tried: []int{0, 3}, want: 1},
		{name: "none left", tried: []int{0, 1, 2, 3}, want: -1},
	}
	for _, tt := range tests {
		var tried []*backend
		for _, i := range tt.tried {
			tried = append(tried, all[i])
		}
		got := p.pickRetry(tried)
		var want *backend
		if tt.want >= 0 {
			want = all[tt.want]
		}
		if got != want {
			t.Errorf("%s: pickRetry(%v) = %v, want %v", tt.name, tt.tried, labelOf(got), labelOf(want))
		}
	}
}

func labelOf(b *backend) string {
	if b == nil {
		return "<nil>"
	}
	return b.label
}
