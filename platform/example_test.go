package platform_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/platform"
)

// Start runs the whole platform in this process, as `scalelab up` does:
// an embedded NATS server and every role, each with its own NATS user. A
// program (a test, a benchmark) starts one on free ports with a secret of
// its own, uses its URLs, and stops it.
func ExampleStart() {
	cfg := platform.DefaultConfig()
	cfg.DataDir, _ = os.MkdirTemp("", "scalelab-example")
	defer os.RemoveAll(cfg.DataDir)
	cfg.BalancerAddr, cfg.AdminAddr, cfg.DBAddr, cfg.CacheAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.GatewayAddrs, cfg.NATSPort, cfg.NATSHTTPPort = "127.0.0.1:0", -1, 0
	cfg.Workers, cfg.SeedRows = 1, 100
	secret, _ := auth.RandomSecret()
	cfg.Keys = auth.Keys{Secret: []byte(secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}

	p, err := platform.Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Stop()
	fmt.Println("front door:", p.BalancerURL != "", "gateways:", len(p.GatewayURLs))
	// Output:
	// front door: true gateways: 1
}
