package cachesvc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/ops"
)

// Run provisions the cache bucket and serves the cache API until ctx is
// cancelled, then finishes in-flight requests and returns. The caller owns
// nc and drains it after Run returns; the API also uses it to broadcast
// invalidations to the gateways and to collect their cache stats.
func Run(ctx context.Context, cfg Config, nc *nats.Conn, log *slog.Logger) error {
	log = log.With("role", "cachesvc")
	hc := httpserver.Config{Addr: cfg.Addr, Listener: cfg.Listener, ShutdownTimeout: cfg.ShutdownTimeout}
	err := httpserver.Run(ctx, hc, log, func(ctx context.Context) (http.Handler, error) {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		var kv jetstream.KeyValue
		err = natsconn.Retry(ctx, log, "provision cache bucket", func(ctx context.Context) error {
			kv, err = provision(ctx, js, cfg, log)
			return err
		})
		if err != nil {
			return nil, err
		}
		log.Info("cache bucket ready", "bucket", cache.Bucket, "ttl", cfg.TTL, "limit_marker_ttl", limitMarkerTTL, "max_mb", cfg.MaxMB, "replicas", cfg.Replicas)
		reg := ops.NewRegistry()
		return newAPI(nc, js, kv, auth.NewVerifier(cfg.JWT), newMetrics(reg), log).routes(reg, ops.NATSReady(nc)), nil
	})
	if err != nil {
		return fmt.Errorf("cachesvc: %w", err)
	}
	return nil
}
