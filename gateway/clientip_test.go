package gateway

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestTrustedProxies attacks the per-IP limit with a rotating
// X-Forwarded-For. A client that reaches a gateway directly (its peer,
// 127.0.0.1, is no configured proxy) is limited by its real address
// whatever it claims. Behind a trusted proxy (here the test client's
// loopback address is configured as one) the forwarded address counts:
// each client its own bucket, the rightmost untrusted entry of a chain
// being the client.
func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	nc := testutil.Connect(t, testutil.StartNATS(t))
	limits := func(c *Config) { c.Limits = RateLimits{PerIP: 0.01, BurstIP: 3, Keys: 100} }
	direct := startGateway(t, nc, limits)
	proxied := startGateway(t, nc, limits, func(c *Config) { c.TrustedProxies = LoopbackProxies() })

	// status sends GET /data without a token: 401 within the per-IP
	// limit (it comes before authentication), 429 past it.
	status := func(base, xff string) int {
		t.Helper()
		r := send(t, http.MethodGet, base+"/data", "", "", map[string]string{"X-Forwarded-For": xff})
		return r.status
	}

	t.Run("direct client rotating X-Forwarded-For", func(t *testing.T) {
		for i := range 3 {
			if got := status(direct, fmt.Sprintf("203.0.113.%d", i+1)); got != http.StatusUnauthorized {
				t.Fatalf("request %d within the burst = %d, want 401", i+1, got)
			}
		}
		for _, xff := range []string{"203.0.113.99", "198.51.100.7, 192.0.2.1", "10.1.2.3", "::1"} {
			if got := status(direct, xff); got != http.StatusTooManyRequests {
				t.Errorf("direct request claiming X-Forwarded-For %q past its address's burst = %d, want 429", xff, got)
			}
		}
	})

	t.Run("behind a trusted proxy", func(t *testing.T) {
		// Ten clients, one request each: none is limited by the others.
		for i := range 10 {
			if got := status(proxied, fmt.Sprintf("198.51.100.%d", i+1)); got != http.StatusUnauthorized {
				t.Errorf("first request of forwarded client 198.51.100.%d = %d, want 401 (its own bucket)", i+1, got)
			}
		}
		// One client, whatever it prepends to the header itself: the
		// proxy appends the address it saw, the one that counts.
		for i := range 3 {
			if got := status(proxied, fmt.Sprintf("192.0.2.%d, 203.0.113.50", i+1)); got != http.StatusUnauthorized {
				t.Fatalf("request %d of 203.0.113.50 = %d, want 401", i+1, got)
			}
		}
		if got := status(proxied, "192.0.2.200, 203.0.113.50"); got != http.StatusTooManyRequests {
			t.Errorf("4th request of 203.0.113.50 behind a forged entry = %d, want 429", got)
		}
	})
}

// TestTrustedProxiesFlag: --trusted-proxies and SCALELAB_TRUSTED_PROXIES
// take CIDRs and bare addresses; anything else stops the gateway at start.
func TestTrustedProxiesFlag(t *testing.T) {
	t.Parallel()
	parse := func(env string, args ...string) (Config, error) {
		fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		s := envflag.New(fs, func(k string) string {
			if k == "SCALELAB_TRUSTED_PROXIES" {
				return env
			}
			return ""
		})
		cfg := DefaultConfig()
		cfg.RegisterFlags(s)
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
		return cfg, s.Err()
	}
	cfg, err := parse("")
	if err != nil || len(cfg.TrustedProxies) != 0 {
		t.Errorf("default TrustedProxies = %v, %v; want none", cfg.TrustedProxies, err)
	}
	cfg, err = parse("10.0.0.0/8, 192.168.1.1,::1")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32"), netip.MustParsePrefix("::1/128")}
	if err != nil || !cmp.Equal(cfg.TrustedProxies, want, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })) {
		t.Errorf("SCALELAB_TRUSTED_PROXIES: TrustedProxies = %v, %v; want %v", cfg.TrustedProxies, err, want)
	}
	cfg, err = parse("10.0.0.0/8", "--trusted-proxies", "172.18.0.5")
	if err != nil || len(cfg.TrustedProxies) != 1 || cfg.TrustedProxies[0] != netip.MustParsePrefix("172.18.0.5/32") {
		t.Errorf("flag over env: TrustedProxies = %v, %v; want [172.18.0.5/32]", cfg.TrustedProxies, err)
	}
	for _, bad := range []string{"balancer", "10.0.0.0/33", "10.0.0.1/8/8"} {
		if _, err := parse(bad); err == nil || !strings.Contains(err.Error(), "SCALELAB_TRUSTED_PROXIES") {
			t.Errorf("SCALELAB_TRUSTED_PROXIES=%q: err = %v, want one naming the variable", bad, err)
		}
		if _, err := parse("", "--trusted-proxies", bad); err == nil {
			t.Errorf("--trusted-proxies %q: nil error, want refused", bad)
		}
	}
}
