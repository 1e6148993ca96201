package platform

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/scalelab/scalelab/gateway"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestBalancerForwardsClientAddress: behind `up`'s balancer (which
// reaches the gateways over Unix sockets or loopback TCP) the per-IP limit
// counts each client's own address, not the balancer's: a client from
// 127.0.0.2 that spends its burst is limited, and one from 127.0.0.3 is
// not. Were the gateways not to trust the balancer, both would share the
// balancer's bucket.
func TestBalancerForwardsClientAddress(t *testing.T) {
	cfg := testConfig(t)
	cfg.Limits = gateway.RateLimits{PerIP: 0.01, BurstIP: 2, Keys: 100}
	p, err := Start(t.Context(), cfg, testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })

	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
		}}
	}
	status := func(c *http.Client) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.BalancerURL+"/data", nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET /data: %v", err)
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		return res.StatusCode
	}
	a, b := from("127.0.0.2"), from("127.0.0.3")
	// Past the burst of every gateway: 2 each.
	limited := false
	for range 2*len(p.GatewayURLs) + 1 {
		if status(a) == http.StatusTooManyRequests {
			limited = true
		}
	}
	if !limited {
		t.Fatalf("client 127.0.0.2 never limited past the per-IP burst")
	}
	if got := status(b); got != http.StatusUnauthorized {
		t.Errorf("first request of client 127.0.0.3 = %d, want 401 (its own bucket, not 127.0.0.2's)", got)
	}
}
