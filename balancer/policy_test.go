package balancer

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/testutil"
)

// servedBy sends n GETs one after the other and returns the X-Served-By of
// each.
func servedBy(t *testing.T, c *http.Client, base string, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	for range n {
		res, body := get(t, c, base+"/data")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET /data = %d, want 200; body %s", res.StatusCode, body)
		}
		out = append(out, res.Header.Get("X-Served-By"))
	}
	return out
}

// TestRoundRobinSkipsUnhealthy checks that round robin is exact over the
// healthy backends only: one that fails its checks drops out of the turn,
// and comes back into it when it passes again.
func TestRoundRobinSkipsUnhealthy(t *testing.T) {
	t.Parallel()
	gws := []*switchable{{name: "gw0"}, {name: "gw1"}, {name: "gw2"}}
	var urls []string
	for _, gw := range gws {
		urls = append(urls, startKillable(t, gw).url())
	}
	base := startBalancer(t, withHealth(testConfig(urls...)))
	c := newClient(t)

	gws[1].sick.Store(true)
	waitState(t, c, base, urls[1], stateUnhealthy)
	got := servedBy(t, c, base, 10)
	// The turn continues from wherever the counter is: check alternation.
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] || got[i] == "gw1" {
			t.Fatalf("X-Served-By sequence %q, want gw0 and gw2 alternating", got)
		}
	}

	gws[1].sick.Store(false)
	waitState(t, c, base, urls[1], stateHealthy)
	got = servedBy(t, c, base, 9)
	counts := map[string]int{}
	for _, name := range got {
		counts[name]++
	}
	if diff := cmp.Diff(map[string]int{"gw0": 3, "gw1": 3, "gw2": 3}, counts); diff != "" {
		t.Errorf("after readmission, shares mismatch (-want +got):\n%s\nsequence %q", diff, got)
	}
}

func TestSmoothWeightedCycle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		weights []int
		want    string // one letter per pick, backend i is 'a'+i
	}{
		// nginx's own example (ngx_http_upstream_round_robin.c): a=5, b=1, c=1.
		{weights: []int{5, 1, 1}, want: "aabacaa"},
		{weights: []int{3, 1}, want: "aaba"},
		{weights: []int{1, 1, 1}, want: "abc"},
		// Divided by the gcd: 4,2 is 2,1.
		{weights: []int{4, 2}, want: "aba"},
		{weights: []int{1}, want: "a"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.weights), func(t *testing.T) {
			t.Parallel()
			var bs []*backend
			for i, w := range tt.weights {
				b := &backend{label: string(rune('a' + i))}
				b.weight.Store(int32(w))
				bs = append(bs, b)
			}
			var got strings.Builder
			for _, b := range smoothWeightedCycle(bs) {
				got.WriteString(b.label)
			}
			if got.String() != tt.want {
				t.Errorf("smoothWeightedCycle(%v) = %q, want %q", tt.weights, got.String(), tt.want)
			}
		})
	}
}

// TestWeightedRoundRobin checks the weighted policy end to end: over whole
// cycles every gateway gets exactly its weight's share.
func TestWeightedRoundRobin(t *testing.T) {
	t.Parallel()
	gw0, gw1, gw2 := echoBackend(t, "gw0"), echoBackend(t, "gw1"), echoBackend(t, "gw2")
	cfg := testConfig(gw0.URL, gw1.URL, gw2.URL)
	cfg.Policy = PolicyWeightedRoundRobin
	cfg.Weights = []int{5, 1, 1}
	base := startBalancer(t, cfg)
	c := newClient(t)

	const cycles = 4
	got := servedBy(t, c, base, 7*cycles)
	want := strings.Repeat("gw0 gw0 gw1 gw0 gw2 gw0 gw0 ", cycles)
	if diff := cmp.Diff(strings.Fields(want), got); diff != "" {
		t.Errorf("X-Served-By sequence mismatch (-want +got):\n%s", diff)
	}
	if s := balancerStatus(t, c, base); s.Backends[0].Weight != 5 || s.Policy != PolicyWeightedRoundRobin {
		t.Errorf("/-/balancer = %+v, want policy %s and weight 5 first", s, PolicyWeightedRoundRobin)
	}
}

// TestLeastConnectionsPrefersIdle holds one request on a gateway and
// checks that every later request goes to the idle one.
func TestLeastConnectionsPrefersIdle(t *testing.T) {
	t.Parallel()
	started, release := make(chan string, 1), make(chan struct{})
	gw := func(name string) string {
		return startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Served-By", name)
			if r.URL.Path == "/slow" {
				started <- name
				<-release
			}
		})).url()
	}
	cfg := testConfig(gw("gw0"), gw("gw1"))
	cfg.Policy = PolicyLeastConnections
	base := startBalancer(t, cfg)
	c := newClient(t)

	slowDone := make(chan error, 1)
	go func() {
		res, err := c.Do(newRequest(t, http.MethodGet, base+"/slow", nil))
		if err == nil {
			res.Body.Close()
		}
		slowDone <- err
	}()
	busy := <-started
	defer func() {
		close(release)
		if err := <-slowDone; err != nil {
			t.Errorf("slow request: %v", err)
		}
	}()

	got := servedBy(t, c, base, 20)
	for i, name := range got {
		if name == busy {
			t.Fatalf("request %d served by the busy %s; sequence %q", i, busy, got)
		}
	}
}

// TestPowerOfTwoSkipsEjected ejects a failing gateway and checks that p2c
// sends it nothing more while it is out.
func TestPowerOfTwoSkipsEjected(t *testing.T) {
	t.Parallel()
	bad := &switchable{name: "bad"}
	badSrv := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad.hits.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	gw0, gw1 := echoBackend(t, "gw0"), echoBackend(t, "gw1")
	cfg := testConfig(gw0.URL, badSrv.url(), gw1.URL)
	cfg.Policy = PolicyPowerOfTwo
	cfg.EjectAfter = 2
	cfg.EjectBackoff = time.Hour
	cfg.EjectBackoffMax = time.Hour
	base := startBalancer(t, cfg)
	c := newClient(t)

	testutil.Eventually(t, 10*time.Second, func() error {
		get(t, c, base+"/data")
		if b, _ := balancerStatus(t, c, base).backendOf(badSrv.url()); b.State != stateEjected {
			return fmt.Errorf("bad gateway is %s, want ejected", b.State)
		}
		return nil
	})
	before := bad.hits.Load()
	for i, name := range servedBy(t, c, base, 300) {
		if name != "gw0" && name != "gw1" {
			t.Fatalf("request %d served by %q, want gw0 or gw1", i, name)
		}
	}
	if after := bad.hits.Load(); after != before {
		t.Errorf("ejected gateway got %d requests, want 0", after-before)
	}
}

// TestPowerOfTwoPicksLessLoaded checks the choice itself: of two backends
// drawn, the one with fewer in flight wins, so a loaded backend is picked
// only when both draws are it, which two distinct draws never are.
func TestPowerOfTwoPicksLessLoaded(t *testing.T) {
	t.Parallel()
	loaded, idle := &backend{label: "loaded"}, &backend{label: "idle"}
	loaded.inFlight.Store(10)
	set := &readySet{backends: []*backend{loaded, idle}}
	for range 1000 {
		if got := (powerOfTwo{}).pick(set); got != idle {
			t.Fatalf("pick() = %s, want idle", got.label)
		}
	}
}

func TestNewPicker(t *testing.T) {
	t.Parallel()
	for _, name := range policies {
		if _, err := newPicker(name); err != nil {
			t.Errorf("newPicker(%q) = %v, want nil", name, err)
		}
	}
	if _, err := newPicker("random"); err == nil {
		t.Errorf("newPicker(%q) = nil error, want one", "random")
	}
}

// testPool is a round-robin pool of n backends, http://b0:1 and on, all
// ready, without active checks; cfg sets passive ejection, log the pool's
// logger.
func testPool(t *testing.T, n int, cfg poolConfig, log *slog.Logger) *pool {
	t.Helper()
	p := newPool(cfg, &roundRobin{}, newMetrics(prometheus.NewRegistry()), nil, log)
	var targets []target
	for i := range n {
		u, _ := url.Parse(fmt.Sprintf("http://b%d:1", i))
		targets = append(targets, target{url: u, weight: 1})
	}
	p.set(t.Context(), targets, true)
	t.Cleanup(p.close)
	return p
}

// TestPoolReadySet checks which states keep a backend out of the ready
// set, and that the ready set follows every change.
func TestPoolReadySet(t *testing.T) {
	t.Parallel()
	p := testPool(t, 3, poolConfig{}, testLogger(t))
	b0, b1, b2 := p.byLabel("http://b0:1"), p.byLabel("http://b1:1"), p.byLabel("http://b2:1")
	ready := func() []string {
		var out []string
		for _, b := range p.ready.Load().backends {
			out = append(out, b.label)
		}
		return out
	}
	p.setHealthy(b0, false, errors.New("check failed"))
	p.setDraining(b1, true)
	if diff := cmp.Diff([]string{"http://b2:1"}, ready()); diff != "" {
		t.Errorf("ready set mismatch (-want +got):\n%s", diff)
	}
	if got := []string{b0.state(), b1.state(), b2.state()}; !cmp.Equal(got, []string{stateUnhealthy, stateDraining, stateHealthy}) {
		t.Errorf("states = %q", got)
	}
	p.setHealthy(b0, true, nil)
	p.setDraining(b1, false)
	if diff := cmp.Diff([]string{"http://b0:1", "http://b1:1", "http://b2:1"}, ready()); diff != "" {
		t.Errorf("ready set after recovery mismatch (-want +got):\n%s", diff)
	}
}

// TestStatusAgreesWithReadySet: one status answer is one moment of the
// pool. A state change stores the backend's flag and then publishes the
// ready set; a status read between the two showed a backend unhealthy
// that still got new requests (CI's round-robin test saw it). Here the
// flag of b0 flips as fast as it can while status is read: every answer's
// Ready must count exactly its healthy backends.
func TestStatusAgreesWithReadySet(t *testing.T) {
	t.Parallel()
	// Not the test's logger: every flip logs a line.
	p := testPool(t, 3, poolConfig{}, slog.New(slog.DiscardHandler))
	bal := &balancer{pool: p}
	b0 := p.byLabel("http://b0:1")

	stop := make(chan struct{})
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		for healthy := false; ; healthy = !healthy {
			select {
			case <-stop:
				return
			default:
			}
			p.setHealthy(b0, healthy, errors.New("check failed"))
		}
	}()
	defer func() { close(stop); <-flipped }()
	for deadline, reads := time.Now().Add(time.Second), 0; time.Now().Before(deadline) || reads < 1000; reads++ {
		s := bal.status()
		healthy := 0
		for _, b := range s.Backends {
			if b.State == stateHealthy {
				healthy++
			}
		}
		if s.Ready != healthy {
			t.Fatalf("read %d: status says %d ready but %d healthy: %+v", reads, s.Ready, healthy, s.Backends)
		}
	}
}

func TestEjectionBackoff(t *testing.T) {
	t.Parallel()
	c := poolConfig{ejectBackoff: time.Second, ejectBackoffMax: 5 * time.Second}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := c.backoff(int32(i + 1)); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	// A huge k must not overflow.
	if got := c.backoff(1 << 30); got != 5*time.Second {
		t.Errorf("backoff(1<<30) = %v, want 5s", got)
	}
}

// TestEjectionNeverEmptiesPool checks that passive ejection keeps the last
// ready backend: when every gateway fails, their answers go to the client.
func TestEjectionNeverEmptiesPool(t *testing.T) {
	t.Parallel()
	p := testPool(t, 2, poolConfig{ejectAfter: 1, ejectBackoff: time.Hour, ejectBackoffMax: time.Hour}, testLogger(t))
	b0, b1 := p.byLabel("http://b0:1"), p.byLabel("http://b1:1")
	p.observe(b0, true)
	p.observe(b1, true)
	if got := []string{b0.state(), b1.state()}; !cmp.Equal(got, []string{stateEjected, stateHealthy}) {
		t.Errorf("states after both failed = %q, want [ejected healthy]", got)
	}
	if n := len(p.ready.Load().backends); n != 1 {
		t.Errorf("ready backends = %d, want 1", n)
	}
}
