package natsconn

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaderReads turns direct gets off on the stream of the KV bucket, if they
// are on, so that every read of it goes through the stream's leader. nats.go
// creates buckets with direct gets on (and turns them on again with each
// CreateOrUpdateKeyValue), so any replica answers a read; on a cluster a
// follower that has not yet applied a write, or a deletion, answers with the
// value before it (nats-io/nats-server#4710). A bucket whose readers must
// see the writes they were told of (the task records; the cache, whose
// writers return once the old value is gone) reads through the leader
// instead. A client binds a bucket with or without direct gets once
// (jetstream.KeyValue), so bind after this. On one server it changes
// nothing. It returns an error if the stream cannot be read or updated.
func LeaderReads(ctx context.Context, js jetstream.JetStream, bucket string) error {
	name := "KV_" + bucket
	s, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if c := s.CachedInfo().Config; c.AllowDirect {
		c.AllowDirect = false
		if _, err := js.UpdateStream(ctx, c); err != nil {
			return fmt.Errorf("bucket %s: turn direct gets off: %w", bucket, err)
		}
	}
	return nil
}
