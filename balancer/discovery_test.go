package balancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/testutil"
)

// fakeDNS stands in for the resolver: the one part of discovery that
// cannot run in-process.
type fakeDNS struct {
	host  string
	calls atomic.Int64

	mu    sync.Mutex
	addrs []netip.Addr
	err   error
}

func (f *fakeDNS) answer(err error, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.addrs = err, nil
	for _, a := range addrs {
		f.addrs = append(f.addrs, netip.MustParseAddr(a))
	}
}

func (f *fakeDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	defer f.calls.Add(1)
	if host != f.host {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), f.err
}

// startKillableAt is startKillable on a given address.
func startKillableAt(t *testing.T, addr string, h http.Handler) *killable {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	k := &killable{t: t, addr: ln.Addr().String(), handler: h}
	k.serve(ln)
	t.Cleanup(k.kill)
	return k
}

// TestDiscovery follows a DNS name as it gains and loses addresses, the
// way compose's service DNS does when gateways are scaled: a new address is
// checked before it gets traffic, a failed lookup keeps the last set, and a
// vanished address gets no more requests. Gateways share one port on
// different loopback addresses (127.0.0.1, 127.0.0.2), like replicas.
func TestDiscovery(t *testing.T) {
	t.Parallel()
	gw1 := startKillable(t, &switchable{name: "gw1"})
	_, port, _ := net.SplitHostPort(gw1.addr)
	gw2 := startKillableAt(t, "127.0.0.2:"+port, &switchable{name: "gw2"})
	url1, url2, url3 := gw1.url(), gw2.url(), "http://127.0.0.3:"+port // nothing listens on .3

	dns := &fakeDNS{host: "gateway"}
	dns.answer(nil, "127.0.0.1")
	cfg := withHealth(testConfig())
	cfg.Backends = nil
	cfg.Discover = "gateway:" + port
	cfg.DiscoverInterval = 20 * time.Millisecond
	base := startBalancerWith(t, cfg, dns.lookup)
	c := newClient(t)

	waitBackends := func(want map[string]string) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, func() error {
			got := map[string]string{}
			for _, b := range balancerStatus(t, c, base).Backends {
				got[b.URL] = b.State
			}
			if diff := cmp.Diff(want, got); diff != "" {
				return fmt.Errorf("backends mismatch (-want +got):\n%s", diff)
			}
			return nil
		})
	}
	waitBackends(map[string]string{url1: stateHealthy})
	if s := balancerStatus(t, c, base); s.Discover != cfg.Discover {
		t.Errorf("/-/balancer discover = %q, want %q", s.Discover, cfg.Discover)
	}
	for _, name := range servedBy(t, c, base, 3) {
		if name != "gw1" {
			t.Fatalf("served by %q, want gw1", name)
		}
	}

	// Scaled up: two more replicas, one of them not answering (yet).
	dns.answer(nil, "127.0.0.3", "127.0.0.2", "127.0.0.1")
	waitBackends(map[string]string{url1: stateHealthy, url2: stateHealthy, url3: stateUnhealthy})
	s := balancerStatus(t, c, base)
	if got := []string{s.Backends[0].URL, s.Backends[1].URL, s.Backends[2].URL}; !slices.Equal(got, []string{url1, url2, url3}) {
		t.Errorf("backends in order %q, want sorted by address", got)
	}
	counts := map[string]int{}
	for _, name := range servedBy(t, c, base, 10) {
		counts[name]++
	}
	if diff := cmp.Diff(map[string]int{"gw1": 5, "gw2": 5}, counts); diff != "" {
		t.Errorf("shares mismatch (-want +got):\n%s", diff)
	}
	if b, _ := balancerStatus(t, c, base).backendOf(url3); b.Requests != 0 {
		t.Errorf("%s got %d requests before passing a check, want 0", url3, b.Requests)
	}

	// DNS fails: the last set stays.
	dns.answer(errors.New("server misbehaving"))
	calls := dns.calls.Load()
	testutil.Eventually(t, 10*time.Second, func() error {
		if dns.calls.Load() < calls+3 {
			return errors.New("waiting for lookups")
		}
		return nil
	})
	waitBackends(map[string]string{url1: stateHealthy, url2: stateHealthy, url3: stateUnhealthy})

	// Scaled down to gw2.
	dns.answer(nil, "127.0.0.2")
	waitBackends(map[string]string{url2: stateHealthy})
	for _, name := range servedBy(t, c, base, 4) {
		if name != "gw2" {
			t.Fatalf("served by %q after gw1 left, want gw2", name)
		}
	}
	metrics := scrape(t, c, base)
	if containsLine(metrics, fmt.Sprintf(`scalelab_balancer_backend_errors_total{backend=%q} 0`, url1)) {
		t.Errorf("/-/metrics still has series of the removed %s", url1)
	}
}

// TestDiscoveryNotReadyUntilFound checks that a balancer whose name does
// not resolve yet answers 503 and is not ready, instead of failing to start.
func TestDiscoveryNotReadyUntilFound(t *testing.T) {
	t.Parallel()
	dns := &fakeDNS{host: "gateway"}
	dns.answer(&net.DNSError{Err: "no such host", Name: "gateway", IsNotFound: true})
	cfg := testConfig()
	cfg.Backends = nil
	cfg.Discover = "gateway:5000"
	cfg.DiscoverInterval = 20 * time.Millisecond
	base := startBalancerWith(t, cfg, dns.lookup)
	c := newClient(t)
	testutil.Eventually(t, 10*time.Second, func() error {
		if dns.calls.Load() == 0 {
			return errors.New("no lookup yet")
		}
		return nil
	})
	if res, _ := get(t, c, base+"/-/readyz"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /-/readyz = %d, want 503", res.StatusCode)
	}
	if res, _ := get(t, c, base+"/data"); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /data = %d, want 503", res.StatusCode)
	}
}

// TestRefusedRequestClosesWhenAsked checks that a request answered 503 at
// once, no gateway being ready, gets Connection: close and a closed
// connection when its client asked for that, and keeps the connection
// otherwise, on both engines alike.
func TestRefusedRequestClosesWhenAsked(t *testing.T) {
	t.Parallel()
	dns := &fakeDNS{host: "gateway"}
	dns.answer(&net.DNSError{Err: "no such host", Name: "gateway", IsNotFound: true})
	cfg := testConfig()
	cfg.Backends = nil
	cfg.Discover = "gateway:5000"
	cfg.DiscoverInterval = time.Hour
	base := startBalancerWith(t, cfg, dns.lookup)

	c := dialRaw(t, base)
	c.send(getReq("/kept"))
	if res, _ := c.read(http.MethodGet); res.StatusCode != http.StatusServiceUnavailable || res.Close {
		t.Fatalf("GET /kept = %d, close %v; want 503 on a kept connection", res.StatusCode, res.Close)
	}
	c.send("GET /closed HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
	res, _ := c.read(http.MethodGet)
	if res.StatusCode != http.StatusServiceUnavailable || !res.Close {
		t.Errorf("GET /closed with Connection: close = %d, close %v; want 503 with Connection: close",
			res.StatusCode, res.Close)
	}
	if n, err := c.br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer to Connection: close, read %q, %v; want EOF", n, err)
	}
}

func TestDiscoveryTargets(t *testing.T) {
	t.Parallel()
	d := &discoverer{port: "5000"}
	var addrs []netip.Addr
	for _, a := range []string{"10.0.0.2", "::ffff:10.0.0.1", "10.0.0.2", "fd00::1", "10.0.0.1"} {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	var got []string
	for _, tg := range d.targets(addrs) {
		got = append(got, tg.url.String()+" w"+strconv.Itoa(tg.weight))
	}
	want := []string{"http://10.0.0.1:5000 w1", "http://10.0.0.2:5000 w1", "http://[fd00::1]:5000 w1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets mismatch (-want +got):\n%s", diff)
	}
}
