package balancer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/testutil"
)

func TestRoundRobin(t *testing.T) {
	t.Parallel()
	for _, k := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d backends", k), func(t *testing.T) {
			t.Parallel()
			var names, urls []string
			for i := range k {
				name := fmt.Sprintf("gw%d", i)
				names = append(names, name)
				urls = append(urls, echoBackend(t, name).URL)
			}
			base := startBalancer(t, testConfig(urls...))
			c := newClient(t)

			const rounds = 5
			var got, want []string
			for i := range rounds * k {
				res, _ := get(t, c, base+"/data")
				if res.StatusCode != http.StatusOK {
					t.Fatalf("GET /data = %d, want 200", res.StatusCode)
				}
				got = append(got, res.Header.Get("X-Served-By"))
				want = append(want, names[i%k])
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("X-Served-By sequence mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRoundRobinConcurrent checks that the lock-free pick stays exact under
// concurrency: every backend gets the same share.
func TestRoundRobinConcurrent(t *testing.T) {
	t.Parallel()
	const k, workers, perWorker = 3, 8, 3000
	set := &readySet{}
	index := make(map[*backend]int, k)
	for i := range k {
		b := &backend{}
		set.backends = append(set.backends, b)
		index[b] = i
	}
	p := &roundRobin{}
	var counts [k]atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				counts[index[p.pick(set)]].Add(1)
			}
		})
	}
	wg.Wait()
	for i := range counts {
		if got, want := counts[i].Load(), int64(workers*perWorker/k); got != want {
			t.Errorf("backend %d picked %d times, want %d", i, got, want)
		}
	}
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)

	req := newRequest(t, http.MethodGet, base+"/data", nil)
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	res, body := do(t, c, req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /data = %d, want 200", res.StatusCode)
	}
	e := decodeEcho(t, body)
	balancerHost := strings.TrimPrefix(base, "http://")
	gwHost := strings.TrimPrefix(gw.URL, "http://")
	for _, check := range []struct{ name, got, want string }{
		{"X-Forwarded-For", strings.Join(e.Header.Values("X-Forwarded-For"), ", "), "127.0.0.1"},
		{"X-Forwarded-Host", e.Header.Get("X-Forwarded-Host"), balancerHost},
		{"X-Forwarded-Proto", e.Header.Get("X-Forwarded-Proto"), "http"},
		{"Forwarded", e.Header.Get("Forwarded"), ""},
		{"Host", e.Host, gwHost},
	} {
		if check.got != check.want {
			t.Errorf("gateway saw %s %q, want %q", check.name, check.got, check.want)
		}
	}
}

// TestEveryForwardedHeaderDropped sends, as a client would to spoof its
// address or the scheme and host a gateway sees, every kind of forwarding
// header, in any case and on several lines, and checks that the gateway
// gets none of them: only the balancer's own X-Forwarded-For, -Host and
// -Proto. TestMain runs it on both engines; the request is one the event
// loops take.
func TestEveryForwardedHeaderDropped(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	base := startBalancer(t, testConfig(gw.URL))

	c := dialRaw(t, base)
	c.send("GET /data HTTP/1.1\r\nHost: front.example\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\n" +
		"x-forwarded-for: 7.7.7.7\r\n" +
		"X-Forwarded-Host: evil.example\r\n" +
		"X-Forwarded-Proto: https\r\n" +
		"X-Forwarded-Foo: bar\r\n" +
		"x-forwarded-port: 443\r\n" +
		"X-FORWARDED-SSL: on\r\n" +
		"X-Forwarded-Prefix: /admin\r\n" +
		"Forwarded: for=6.6.6.6;proto=https\r\n" +
		"forwarded: host=evil.example\r\n" +
		"X-Forwardedness: kept\r\n" +
		"\r\n")
	res, body := c.read(http.MethodGet)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /data = %d, want 200: %s", res.StatusCode, body)
	}
	e := decodeEcho(t, body)
	got := http.Header{}
	for name, values := range e.Header {
		if isForwarded([]byte(name)) || strings.HasPrefix(name, "X-Forwarded") {
			got[name] = values
		}
	}
	want := http.Header{
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Host":  {"front.example"},
		"X-Forwarded-Proto": {"http"},
		// Not a forwarding header: only the X-Forwarded- prefix is.
		"X-Forwardedness": {"kept"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("forwarding headers the gateway saw mismatch (-want +got):\n%s", diff)
	}
}

// TestDropForwardedAllocates nothing: it runs on the event loops for any
// request that carries a forwarding header.
func TestDropForwardedAllocatesNothing(t *testing.T) {
	var h fasthttp.RequestHeader
	allocs := testing.AllocsPerRun(100, func() {
		h.Reset()
		h.SetRequestURI("/data")
		h.Set("X-Forwarded-For", "6.6.6.6")
		h.Set("X-Forwarded-Foo", "bar")
		h.Set("Forwarded", "for=6.6.6.6")
		h.Set("Accept", "*/*")
		dropForwarded(&h)
	})
	if allocs != 0 {
		t.Errorf("dropForwarded allocates %v times per request, want 0", allocs)
	}
	if h.Len() != 1 || len(h.Peek("Accept")) == 0 {
		t.Errorf("after dropForwarded, headers = %q, want only Accept", h.Header())
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)

	tests := []struct {
		name string
		sent string // "" sends none
		keep bool   // whether the sent ID must be passed on
	}{
		{name: "propagated", sent: "req-123_abc.DEF~", keep: true},
		{name: "uuid", sent: "0b6c1a7e-3f0e-4c59-9a43-8f5f3c0e2d11", keep: true},
		{name: "128 characters", sent: strings.Repeat("a", 128), keep: true},
		{name: "generated when absent"},
		{name: "too long", sent: strings.Repeat("a", 129)},
		{name: "space", sent: "has space"},
		{name: "control character", sent: "a\tb"},
		{name: "non-ASCII", sent: "café"},
		{name: "quote", sent: `a"b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, http.MethodGet, base+"/data", nil)
			if tt.sent != "" {
				req.Header.Set("X-Request-ID", tt.sent)
			}
			res, body := do(t, c, req)
			seen := decodeEcho(t, body).Header.Get("X-Request-ID")
			if tt.keep && seen != tt.sent {
				t.Errorf("gateway saw X-Request-ID %q, want %q", seen, tt.sent)
			}
			if !tt.keep && (seen == tt.sent || !reqid.Valid(seen)) {
				t.Errorf("gateway saw X-Request-ID %q, want a new sane one", seen)
			}
			if got := res.Header.Values("X-Request-ID"); !cmp.Equal(got, []string{seen}) {
				t.Errorf("client got X-Request-ID %q, want [%q]", got, seen)
			}
		})
	}
}

// TestRequestIDFromGateway checks that a gateway's own X-Request-ID reaches
// the client alone, not next to the balancer's.
func TestRequestIDFromGateway(t *testing.T) {
	t.Parallel()
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Request-ID", "from-gateway")
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))
	res, _ := get(t, newClient(t), base+"/data")
	if got, want := res.Header.Values("X-Request-ID"), []string{"from-gateway"}; !cmp.Equal(got, want) {
		t.Errorf("X-Request-ID = %q, want %q", got, want)
	}
}

func TestProxyPassesRequestAndResponse(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)

	tests := []struct {
		name       string
		method     string
		target     string // path and query, as sent
		body       string
		status     string // X-Want-Status
		wantPath   string
		wantQuery  string
		wantStatus int
	}{
		{
			name: "POST body and query", method: http.MethodPost,
			target: "/longtask?a=1&b=x%20y&c=%2F&d=", body: `{"task":"report"}`, status: "202",
			wantPath: "/longtask", wantQuery: "a=1&b=x%20y&c=%2F&d=", wantStatus: http.StatusAccepted,
		},
		{
			name: "PUT", method: http.MethodPut, target: "/items/7", body: `{"name":"x","price_cents":5,"stock":1}`,
			wantPath: "/items/7", wantStatus: http.StatusOK,
		},
		{
			name: "DELETE with error status", method: http.MethodDelete, target: "/tasks/1", status: "404",
			wantPath: "/tasks/1", wantStatus: http.StatusNotFound,
		},
		{
			// A ServeMux would answer this path with a redirect to /y/z;
			// the balancer passes it on as it came.
			name: "unclean path", method: http.MethodGet, target: "/x/../y//z",
			wantPath: "/x/../y//z", wantStatus: http.StatusOK,
		},
		{
			// The gateway's /healthz, not the balancer's (which is /-/healthz).
			name: "gateway ops path", method: http.MethodGet, target: "/healthz",
			wantPath: "/healthz", wantStatus: http.StatusOK,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, tt.method, base+tt.target, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer t0ken")
			if tt.status != "" {
				req.Header.Set("X-Want-Status", tt.status)
			}
			res, body := do(t, c, req)
			if res.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.wantStatus)
			}
			if got, want := res.Header.Get("X-Served-By"), "gw0"; got != want {
				t.Errorf("X-Served-By = %q, want %q", got, want)
			}
			e := decodeEcho(t, body)
			got := echo{Method: e.Method, Path: e.Path, RawQuery: e.RawQuery, Body: e.Body}
			want := echo{Method: tt.method, Path: tt.wantPath, RawQuery: tt.wantQuery, Body: tt.body}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("gateway saw (-want +got):\n%s", diff)
			}
			for _, h := range []string{"Content-Type", "Authorization"} {
				if got, want := e.Header.Get(h), req.Header.Get(h); got != want {
					t.Errorf("gateway saw %s %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestRedirectPassesThrough(t *testing.T) {
	t.Parallel()
	const location = "http://127.0.0.1:5000/elsewhere?x=1"
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, location, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))

	res, _ := do(t, newClient(t), newRequest(t, http.MethodPost, base+"/old", strings.NewReader("x")))
	if res.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("status = %d, want %d", res.StatusCode, http.StatusTemporaryRedirect)
	}
	if got := res.Header.Get("Location"); got != location {
		t.Errorf("Location = %q, want %q", got, location)
	}
}

// TestStreaming checks that an event stream reaches the client event by
// event, not when the gateway finishes.
func TestStreaming(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "data: second\n\n")
	}))
	t.Cleanup(gw.Close)
	t.Cleanup(func() { close(release) }) // runs before gw.Close
	base := startBalancer(t, testConfig(gw.URL))

	res, err := newClient(t).Do(newRequest(t, http.MethodGet, base+"/events", nil))
	if err != nil {
		t.Fatalf("GET /events: %v", err)
	}
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil {
		t.Fatalf("read first event: %v", err)
	}
	if want := "data: first\n"; line != want {
		t.Errorf("first line = %q, want %q", line, want)
	}
}

func TestDeadBackend(t *testing.T) {
	t.Parallel()
	dead := deadURL(t)
	live := echoBackend(t, "live")
	base := startBalancer(t, testConfig(dead, live.URL))
	c := newClient(t)

	// Every other request picks the dead gateway first; each must still be
	// served by the live one, bodies included.
	const n = 6
	for i := range n {
		method, body := http.MethodGet, ""
		if i%3 == 2 {
			method, body = http.MethodPost, fmt.Sprintf(`{"n":%d}`, i)
		}
		res, resBody := do(t, c, newRequest(t, method, base+"/data", strings.NewReader(body)))
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status = %d, want 200; body %s", i, res.StatusCode, resBody)
		}
		if got := decodeEcho(t, resBody).Body; got != body {
			t.Errorf("request %d: gateway saw body %q, want %q", i, got, body)
		}
	}

	want := []BackendStatus{
		{URL: dead, State: "healthy", Weight: 1, Requests: n / 2, Errors: n / 2},
		{URL: live.URL, State: "healthy", Weight: 1, Requests: n},
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if diff := cmp.Diff(want, balancerStatus(t, c, base).Backends, ignoreLatency); diff != "" {
			return fmt.Errorf("/-/balancer mismatch (-want +got):\n%s", diff)
		}
		return nil
	})
	metrics := scrape(t, c, base)
	for _, line := range []string{
		fmt.Sprintf(`scalelab_balancer_backend_errors_total{backend=%q} %d`, dead, n/2),
		fmt.Sprintf(`scalelab_balancer_requests_total{backend=%q,code="2xx"} %d`, live.URL, n),
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/-/metrics lacks %q", line)
		}
	}
}

// TestAllBackendsRefuse checks the answer when every gateway refuses the
// connection before the balancer knows they are down: 502 at once, in the
// house error body.
func TestAllBackendsRefuse(t *testing.T) {
	t.Parallel()
	base := startBalancer(t, testConfig(deadURL(t), deadURL(t)))
	c := newClient(t)

	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			start := time.Now()
			req := newRequest(t, method, base+"/data", strings.NewReader("payload"))
			req.Header.Set("X-Request-ID", "dead-1")
			res, body := do(t, c, req)
			if elapsed := time.Since(start); elapsed > 3*time.Second {
				t.Errorf("answer took %v, want under 3s", elapsed)
			}
			if res.StatusCode != http.StatusBadGateway {
				t.Errorf("status = %d, want 502", res.StatusCode)
			}
			if got, want := res.Header.Get("Content-Type"), "application/json; charset=utf-8"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
			if got, want := res.Header.Get("X-Request-ID"), "dead-1"; got != want {
				t.Errorf("X-Request-ID = %q, want %q", got, want)
			}
			var got struct {
				Error struct {
					Code      string `json:"code"`
					Message   string `json:"message"`
					RequestID string `json:"request_id"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("decode %q: %v", body, err)
			}
			if got.Error.Code != "unavailable" || got.Error.Message != msgBadGateway || got.Error.RequestID != "dead-1" {
				t.Errorf("body = %s, want code unavailable, message %q, request_id dead-1", body, msgBadGateway)
			}
		})
	}
}

// TestRequestIDKey checks that the key used for direct header access is
// the canonical form of reqid.Header, which http.Header stores.
func TestRequestIDKey(t *testing.T) {
	t.Parallel()
	if got := textproto.CanonicalMIMEHeaderKey(reqid.Header); got != requestIDKey {
		t.Errorf("CanonicalMIMEHeaderKey(%q) = %q, want requestIDKey %q", reqid.Header, got, requestIDKey)
	}
}

// TestMaxInFlight: with --max-inflight requests held by a gateway, the next
// one is refused at once with 503 JSON and Retry-After; once they finish,
// requests pass again.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var held atomic.Int32
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			held.Add(1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(gw.Close)
	cfg := testConfig(gw.URL)
	cfg.MaxInFlight = 2
	base := startBalancer(t, cfg)
	client := newClient(t)
	done := make(chan int, 2)
	for range 2 {
		go func() {
			res, err := client.Do(newRequest(t, http.MethodGet, base+"/slow", nil))
			if err != nil {
				done <- 0
				return
			}
			res.Body.Close()
			done <- res.StatusCode
		}()
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if n := held.Load(); n != 2 {
			return fmt.Errorf("%d requests held by the gateway, want 2", n)
		}
		return nil
	})
	res, body := do(t, client, newRequest(t, http.MethodGet, base+"/fast", nil))
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") != "1" ||
		!strings.Contains(string(body), `"code":"unavailable"`) {
		t.Errorf("request over --max-inflight = %d %q Retry-After %q, want 503 unavailable, Retry-After 1",
			res.StatusCode, body, res.Header.Get("Retry-After"))
	}
	close(release)
	for range 2 {
		if s := <-done; s != http.StatusOK {
			t.Errorf("held request = %d, want 200", s)
		}
	}
	if res, _ := do(t, client, newRequest(t, http.MethodGet, base+"/fast", nil)); res.StatusCode != http.StatusOK {
		t.Errorf("request after the held ones finished = %d, want 200", res.StatusCode)
	}
}

// TestHopByHopHeaders checks that headers about one connection are not
// passed on, in either direction, nor the headers a Connection header
// names.
func TestHopByHopHeaders(t *testing.T) {
	t.Parallel()
	var seen atomic.Value
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Clone())
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("Upgrade", "h2c")
		w.Header().Set("X-End", "kept")
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))

	req := newRequest(t, http.MethodGet, base+"/data", nil)
	req.Header.Set("Connection", "X-Foo")
	req.Header.Set("X-Foo", "1")
	req.Header.Set("Keep-Alive", "300")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Proxy-Authorization", "Basic eDp5")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Te", "trailers, deflate")
	req.Header.Set("X-End", "kept")
	res, _ := do(t, newClient(t), req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /data = %d, want 200", res.StatusCode)
	}
	got, _ := seen.Load().(http.Header)
	for _, h := range []string{"Connection", "X-Foo", "Keep-Alive", "Upgrade", "Proxy-Authorization", "Proxy-Connection"} {
		if v := got.Values(h); len(v) > 0 {
			t.Errorf("gateway saw %s %q, want none", h, v)
		}
	}
	for h, want := range map[string]string{"Te": "trailers", "X-End": "kept"} {
		if v := got.Get(h); v != want {
			t.Errorf("gateway saw %s %q, want %q", h, v, want)
		}
	}
	for _, h := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if v := res.Header.Values(h); len(v) > 0 {
			t.Errorf("client got %s %q, want none", h, v)
		}
	}
	if v := res.Header.Get("X-End"); v != "kept" {
		t.Errorf("client got X-End %q, want %q", v, "kept")
	}
}

// TestBodies checks bodies of every framing in both directions, each
// twice, so that the second exchange shows the gateway connection was
// left where the next answer starts.
func TestBodies(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789", 100_000) // 1 MB: streamed, not passed on whole
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			_, _ = io.WriteString(w, big)
		case "/chunked":
			for range 100 {
				_, _ = io.WriteString(w, big[:1000])
				http.NewResponseController(w).Flush()
			}
		case "/not-modified":
			w.WriteHeader(http.StatusNotModified)
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			_, _ = fmt.Fprint(w, len(body))
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "hello")
		}
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)

	tests := []struct {
		method, path, body string
		wantStatus         int
		wantBody           string
	}{
		{http.MethodGet, "/big", "", http.StatusOK, big},
		{http.MethodGet, "/chunked", "", http.StatusOK, big[:1000*100]},
		{http.MethodGet, "/small", "", http.StatusOK, "hello"},
		{http.MethodHead, "/small", "", http.StatusOK, ""},
		{http.MethodGet, "/not-modified", "", http.StatusNotModified, ""},
		{http.MethodPost, "/echo", big, http.StatusOK, fmt.Sprint(len(big))},
	}
	for range 2 {
		for _, tt := range tests {
			res, body := do(t, c, newRequest(t, tt.method, base+tt.path, strings.NewReader(tt.body)))
			if res.StatusCode != tt.wantStatus || string(body) != tt.wantBody {
				t.Errorf("%s %s = %d with %d bytes, want %d with %d", tt.method, tt.path, res.StatusCode, len(body),
					tt.wantStatus, len(tt.wantBody))
			}
		}
	}
	if res, _ := do(t, c, newRequest(t, http.MethodHead, base+"/small", nil)); res.ContentLength != 5 {
		t.Errorf("HEAD /small Content-Length = %d, want 5", res.ContentLength)
	}
}

// TestStaleConnection checks that a pooled connection the gateway closed
// while it was idle is not used: a POST after it is served, not answered
// with 502 (it cannot be retried once sent).
func TestStaleConnection(t *testing.T) {
	t.Parallel()
	gw := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	gw.Config.IdleTimeout = 50 * time.Millisecond
	gw.Start()
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)
	for i := range 3 {
		if i > 0 {
			time.Sleep(3 * gw.Config.IdleTimeout) // the gateway closes the idle connection
		}
		res, body := do(t, c, newRequest(t, http.MethodPost, base+"/longtask", strings.NewReader(`{"n":1}`)))
		if res.StatusCode != http.StatusOK {
			t.Errorf("POST %d = %d %s, want 200", i, res.StatusCode, body)
		}
	}
}

// TestResponseHeaderTimeout checks that a gateway that sends no answer
// fails the request after --response-header-timeout, with 502.
func TestResponseHeaderTimeout(t *testing.T) {
	t.Parallel()
	gw := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(gw.Close)
	cfg := testConfig(gw.URL)
	cfg.ResponseHeaderTimeout = 600 * time.Millisecond
	base := startBalancer(t, cfg)
	start := time.Now()
	res, _ := get(t, newClient(t), base+"/hang")
	elapsed := time.Since(start)
	if res.StatusCode != http.StatusBadGateway || elapsed < cfg.ResponseHeaderTimeout || elapsed > 5*time.Second {
		t.Errorf("GET /hang = %d after %v, want 502 after %v", res.StatusCode, elapsed, cfg.ResponseHeaderTimeout)
	}
}

// TestEarlyAnswer: a gateway that answers before it has read the whole
// body (413 for a body over its limit, as the gateways' BodyLimit does) and
// closes the connection has its answer passed on, not turned into a 502 by
// the write that then fails; the request is not retried.
func TestEarlyAnswer(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.ContentLength > 1<<10 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_, _ = io.WriteString(w, `{"error":{"code":"too_large","message":"request body is too large"}}`)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)
	for _, size := range []int{4 << 10, 1 << 20, 4 << 20} { // held whole, and larger than a socket buffer
		calls.Store(0)
		body := strings.Repeat("x", size)
		res, got := do(t, c, newRequest(t, http.MethodPost, base+"/longtask", strings.NewReader(body)))
		if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), "too_large") {
			t.Errorf("POST of %d bytes = %d %s, want the gateway's 413", size, res.StatusCode, got)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("POST of %d bytes reached the gateway %d times, want 1", size, n)
		}
	}
	if res, got := do(t, c, newRequest(t, http.MethodPost, base+"/longtask", strings.NewReader("small"))); res.StatusCode != http.StatusOK {
		t.Errorf("POST after them = %d %s, want 200", res.StatusCode, got)
	}
}

// TestRequestTooLarge: a body over the balancer's own limit gets 413 and a
// header over its limit 431, each with the house error body, and no
// gateway sees them.
func TestRequestTooLarge(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
	}))
	t.Cleanup(gw.Close)
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)
	res, body := do(t, c, newRequest(t, http.MethodPost, base+"/longtask", strings.NewReader(strings.Repeat("x", maxRequestBody+1))))
	if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), `"code":"too_large"`) {
		t.Errorf("POST over the body limit = %d %s, want 413 too_large", res.StatusCode, body)
	}
	req := newRequest(t, http.MethodGet, base+"/data", nil)
	req.Header.Set("X-Big", strings.Repeat("h", maxHeaderBytes))
	res, body = do(t, c, req)
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(string(body), `"code":"invalid"`) {
		t.Errorf("GET with a header over the limit = %d %s, want 431 invalid", res.StatusCode, body)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the gateway saw %d of these requests, want 0", n)
	}
}
