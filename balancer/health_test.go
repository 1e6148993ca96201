package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// TestKillBackendUnderLoad kills a gateway (listener and connections
// closed at once) while concurrent clients send GETs, then starts it again
// on the same address. No client may see an error: requests that hit the
// dead gateway are retried (a refused connection, or a GET broken mid-way),
// passive ejection and the health checks then take it out, and the checks
// readmit it once it is back.
func TestKillBackendUnderLoad(t *testing.T) {
	t.Parallel()
	var hits [3]atomic.Int64
	var gws [3]*killable
	var urls []string
	for i := range gws {
		gws[i] = startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				hits[i].Add(1)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
		}))
		urls = append(urls, gws[i].url())
	}
	base := startBalancer(t, withHealth(testConfig(urls...)))
	c := newClient(t)

	const clients = 8
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/data", nil)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					failed.Add(1)
					return
				}
				res, err := c.Do(req)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				_, err = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("status %d, body error %v", res.StatusCode, err))
				}
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	atLeast := func(n int64) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, func() error {
			if got := sent.Load(); got < n {
				return fmt.Errorf("%d requests sent, waiting for %d", got, n)
			}
			return nil
		})
	}

	atLeast(300)
	gws[2].kill()
	killedAt := sent.Load()
	waitState(t, c, base, urls[2], stateUnhealthy)
	atLeast(killedAt + 400)
	hitsWhileDead := hits[2].Load()

	gws[2].restart()
	waitState(t, c, base, urls[2], stateHealthy)
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := hits[2].Load(); got < hitsWhileDead+50 {
			return fmt.Errorf("restarted gateway served %d requests since its restart, want 50", got-hitsWhileDead)
		}
		return nil
	})
	atLeast(max(1200, sent.Load()+100))
	close(stop)
	wg.Wait()

	total, errs := sent.Load(), failed.Load()
	t.Logf("%d requests, killed after %d, %d errors; served %d/%d/%d",
		total, killedAt, errs, hits[0].Load(), hits[1].Load(), hits[2].Load())
	if errs != 0 {
		t.Errorf("%d of %d GETs failed, want 0; first: %v", errs, total, firstErr.Load())
	}
}

// TestAllBackendsDown checks that once the checks have found every gateway
// down, a request is answered 503 at once, in the house error body, and
// the balancer reports itself not ready.
func TestAllBackendsDown(t *testing.T) {
	t.Parallel()
	dead := []string{deadURL(t), deadURL(t)}
	base := startBalancer(t, withHealth(testConfig(dead...)))
	c := newClient(t)
	for _, u := range dead {
		waitState(t, c, base, u, stateUnhealthy)
	}

	start := time.Now()
	req := newRequest(t, http.MethodPost, base+"/longtask", nil)
	req.Header.Set("X-Request-ID", "down-1")
	res, body := do(t, c, req)
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("answer took %v, want it at once", elapsed)
	}
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status = %d, want 503", res.StatusCode)
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
	if got.Error.Code != "unavailable" || got.Error.Message != msgNoBackend || got.Error.RequestID != "down-1" {
		t.Errorf("body = %s, want code unavailable, message %q, request_id down-1", body, msgNoBackend)
	}
	if res, _ := get(t, c, base+"/-/readyz"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /-/readyz = %d, want 503", res.StatusCode)
	}
	// Nothing was sent anywhere.
	for _, b := range balancerStatus(t, c, base).Backends {
		if b.Requests != 0 {
			t.Errorf("%s got %d requests, want 0", b.URL, b.Requests)
		}
	}
}

// TestPassiveEjection checks that a gateway answering 5xx is ejected after
// EjectAfter failures in a row, even though its health checks pass, and
// readmitted when its back-off ends.
func TestPassiveEjection(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	flaky := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && failing.Load() {
			http.Error(w, "broken", http.StatusBadGateway)
			return
		}
		w.Header().Set("X-Served-By", "flaky")
	}))
	good := echoBackend(t, "good")
	cfg := withHealth(testConfig(flaky.url(), good.URL))
	cfg.EjectBackoff = 500 * time.Millisecond
	base := startBalancer(t, cfg)
	c := newClient(t)

	// Round robin: every other request meets the flaky gateway, which
	// answers 502 (passed on: an answer is not retried).
	var got502 int
	for range 2 * cfg.EjectAfter {
		res, _ := get(t, c, base+"/data")
		if res.StatusCode == http.StatusBadGateway {
			got502++
		}
	}
	if got502 != cfg.EjectAfter {
		t.Errorf("clients got %d 502s, want %d (the failures that eject)", got502, cfg.EjectAfter)
	}
	waitState(t, c, base, flaky.url(), stateEjected)
	for i, name := range servedBy(t, c, base, 10) {
		if name != "good" {
			t.Fatalf("request %d served by %q while flaky is ejected, want good", i, name)
		}
	}
	failing.Store(false)
	waitState(t, c, base, flaky.url(), stateHealthy)
	testutil.Eventually(t, 5*time.Second, func() error {
		if res, _ := get(t, c, base+"/data"); res.Header.Get("X-Served-By") != "flaky" {
			return errors.New("flaky gets no requests after readmission")
		}
		return nil
	})
	if metrics := scrape(t, c, base); !containsLine(metrics, fmt.Sprintf(`scalelab_balancer_ejections_total{backend=%q} 1`, flaky.url())) {
		t.Errorf("/-/metrics does not count one ejection of %s", flaky.url())
	}
}

func TestLatencyHist(t *testing.T) {
	t.Parallel()
	var h latencyHist
	now := time.Unix(10_000, 0)
	for i := range 100 {
		// 1 ms to 100 ms, one each.
		h.record(now, time.Duration(i+1)*time.Millisecond)
	}
	q := h.quantiles(now, 0.5, 0.99)
	within := func(got, want time.Duration) bool {
		return got >= want && float64(got) <= float64(want)*1.13
	}
	if !within(q[0], 50*time.Millisecond) || !within(q[1], 99*time.Millisecond) {
		t.Errorf("p50, p99 = %v, %v; want about 50ms, 99ms (at most 12.5%% above)", q[0], q[1])
	}
	// Two windows later the samples are forgotten.
	if q := h.quantiles(now.Add(2*latencyWindow), 0.5); q[0] != 0 {
		t.Errorf("p50 two windows later = %v, want 0", q[0])
	}
	// One window later they still count, with the new ones.
	later := now.Add(latencyWindow)
	h.record(later, time.Microsecond)
	if q := h.quantiles(later, 0.99); !within(q[0], 99*time.Millisecond) {
		t.Errorf("p99 one window later = %v, want about 99ms", q[0])
	}
}

func TestLatencyBuckets(t *testing.T) {
	t.Parallel()
	prev := -1
	for _, d := range []time.Duration{0, time.Microsecond, 7 * time.Microsecond, 8 * time.Microsecond,
		9 * time.Microsecond, 100 * time.Microsecond, time.Millisecond, time.Second, time.Hour, 1000 * time.Hour} {
		i := latencyBucket(d)
		if i < prev || i >= latencyBuckets {
			t.Errorf("latencyBucket(%v) = %d, want >= %d and < %d", d, i, prev, latencyBuckets)
		}
		if up := latencyBucketUpper(i); d < time.Hour && (up <= d || float64(up) > float64(d)*1.13+float64(time.Microsecond)) {
			t.Errorf("latencyBucketUpper(latencyBucket(%v)) = %v, want just above it", d, up)
		}
		prev = i
	}
}
