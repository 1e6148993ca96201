package cachesvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
)

// limitMarkerTTL is the bucket's LimitMarkerTTL: how long the marker left
// behind by an expired key lives. Setting it at all is what matters:
//
//   - it turns on per-key TTLs, which internal/cache uses for each entry's
//     TTL plus jitter, for negative caching (a shorter TTL) and for fill
//     leases;
//   - an expiry then leaves a delete marker that KV watchers see, so each
//     gateway's near-cache drops an expired key instead of serving it
//     until its own TTL.
//
// A minute is ample for a watcher to see the marker; the bucket keeps one
// revision per key, so the marker costs one message per expired key.
const limitMarkerTTL = time.Minute

// provision creates the bucket, or updates it to the configuration below.
// If the server refuses the update (a bucket made by an older cachesvc, or
// by hand, whose settings cannot be changed in place), it logs a warning
// and keeps the existing bucket: a cache with its old settings serves
// better than none, and internal/cache falls back to the bucket's TTL when
// per-key TTLs are off. Any other error is returned, for the caller to
// retry.
func provision(ctx context.Context, js jetstream.JetStream, cfg Config, log *slog.Logger) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         cache.Bucket,
		Description:    "scalelab shared cache (cache-aside)",
		History:        1,
		TTL:            cfg.TTL,
		LimitMarkerTTL: limitMarkerTTL,
		MaxBytes:       int64(cfg.MaxMB) << 20,
		Storage:        jetstream.FileStorage,
		Replicas:       cfg.Replicas,
	})
	if err == nil {
		return leaderReads(ctx, js, kv, log), nil
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return nil, fmt.Errorf("provision bucket %s: %w", cache.Bucket, err)
	}
	// The server answered and said no; use the bucket if there is one.
	old, bindErr := js.KeyValue(ctx, cache.Bucket)
	if bindErr != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", cache.Bucket, err)
	}
	log.Warn("cache bucket exists but its settings cannot be updated: keeping it as it is", "bucket", cache.Bucket, "err", err)
	return leaderReads(ctx, js, old, log), nil
}

// leaderReads turns the bucket's direct gets off (natsconn.LeaderReads) and
// returns it bound again, so that every read goes through the stream's
// leader: PUT /items returns once the old value is deleted from the
// bucket, and a follower that has not applied the deletion yet must not
// serve the old value to the read that follows (the chaos run of issue #30
// saw it, under load, after NATS faults). If that fails it logs a warning
// and returns kv as it was: reads work, from any replica.
func leaderReads(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, log *slog.Logger) jetstream.KeyValue {
	if err := natsconn.LeaderReads(ctx, js, cache.Bucket); err != nil {
		log.Warn("cache bucket: reads may come from a lagging replica", "bucket", cache.Bucket, "err", err)
		return kv
	}
	bound, err := js.KeyValue(ctx, cache.Bucket)
	if err != nil {
		log.Warn("cache bucket: rebind after turning direct gets off", "bucket", cache.Bucket, "err", err)
		return kv
	}
	return bound
}
