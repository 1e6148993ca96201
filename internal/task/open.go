package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNotProvisioned is returned by Open while a task stream or the bucket
// does not exist yet: the provisioner (admin) has not run.
var ErrNotProvisioned = errors.New("task: not provisioned (`scalelab up` provisions; elsewhere run `scalelab tasks provision` as admin)")

// Open returns a Store over the tasks bucket once the task streams and the
// bucket exist, as the gateways and workers use them. It creates and
// updates nothing: the streams belong to their provisioner (Provision, run
// by admin), and the roles' NATS users may not send STREAM.CREATE or
// STREAM.UPDATE, since an update that shrinks a stream's limits purges it.
// It returns an error wrapping ErrNotProvisioned while something is
// missing, for the caller to retry. A stream provisioned with other
// settings than cfg (the role's --max-queue and --replicas) is used as it
// is, with a warning: only the provisioner can change it.
func Open(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig, log *slog.Logger) (*Store, error) {
	for _, want := range streamConfigs(cfg) {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("open stream %s: %w", want.Name, ErrNotProvisioned)
		}
		if err != nil {
			return nil, fmt.Errorf("open stream %s: %w", want.Name, err)
		}
		if !sameStreamConfig(s.CachedInfo().Config, want) {
			log.Warn("task stream provisioned with other settings than this role's; using it as it is (only its provisioner updates it)",
				"stream", want.Name, "replicas", s.CachedInfo().Config.Replicas, "want_replicas", want.Replicas,
				"max_msgs", s.CachedInfo().Config.MaxMsgs, "want_max_msgs", want.MaxMsgs)
		}
	}
	name := "KV_" + Bucket
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	if s.CachedInfo().Config.AllowDirect {
		// Provision turns direct gets off (see leaderReads); a bucket
		// made otherwise may answer a read from a lagging replica.
		log.Warn("task bucket reads may come from a lagging replica: provision it again to read through the leader", "bucket", Bucket)
	}
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	return &Store{kv: kv}, nil
}
