package platform

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestRolesConnectInProcess: every role of `up` reaches the embedded NATS
// server through an in-process pipe, not a TCP socket (the server sees no
// client port). Operators still connect over TCP (TestUpOperators).
func TestRolesConnectInProcess(t *testing.T) {
	p, err := Start(t.Context(), testConfig(t), testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	if p.NATSMonitorURL == "" {
		t.Fatal("NATSMonitorURL is empty with NATSHTTPPort -1")
	}

	res, err := http.Get(p.NATSMonitorURL + "/connz?limit=1024")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var connz struct {
		Conns []struct {
			Name string `json:"name"`
			Port int    `json:"port"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(res.Body).Decode(&connz); err != nil {
		t.Fatalf("GET /connz: %v", err)
	}
	var roles []string
	for _, c := range connz.Conns {
		if !strings.HasPrefix(c.Name, "scalelab-") {
			continue
		}
		roles = append(roles, c.Name)
		if c.Port != 0 {
			t.Errorf("connection %s comes from TCP port %d, want an in-process pipe", c.Name, c.Port)
		}
	}
	slices.Sort(roles)
	for _, want := range []string{"scalelab-up", "scalelab-gateway", "scalelab-worker", "scalelab-dbsvc", "scalelab-cachesvc"} {
		if !slices.ContainsFunc(roles, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("no connection named %s* among %v", want, roles)
		}
	}
}

// testConfig is a platform on ports the kernel picks and a temporary data
// directory: one gateway, the default workers, 100 seeded rows, a test
// signing key.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.SeedRows, cfg.NATSPort, cfg.NATSHTTPPort = t.TempDir(), 100, -1, -1
	cfg.BalancerAddr, cfg.DBAddr, cfg.CacheAddr, cfg.GatewayAddrs = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Keys = auth.Keys{Secret: []byte(strings.Repeat("k", 32)), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	return cfg
}
