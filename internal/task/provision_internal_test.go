package task

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/testutil"
)

// TestProvisionedStreamsNeedNoUpdate: after Provision, every stream reads
// back as wanted, so the next role to start skips the update (concurrent
// identical updates race inside nats-server).
func TestProvisionedStreamsNeedNoUpdate(t *testing.T) {
	t.Parallel()
	js, err := jetstream.New(testutil.Connect(t, testutil.StartNATS(t)))
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []ProvisionConfig{DefaultProvisionConfig(), {Replicas: 1, MaxQueueMsgs: 10, MaxQueueBytes: 1 << 20}} {
		if _, err := Provision(t.Context(), js, cfg); err != nil {
			t.Fatalf("Provision(%+v) = %v", cfg, err)
		}
		for _, want := range streamConfigs(cfg) {
			s, err := js.Stream(t.Context(), want.Name)
			if err != nil {
				t.Fatalf("Stream(%s) = %v", want.Name, err)
			}
			if !sameStreamConfig(s.CachedInfo().Config, want) {
				t.Errorf("stream %s after Provision(%+v) differs from what Provision wants:\n got %+v\nwant %+v", want.Name, cfg, s.CachedInfo().Config, want)
			}
		}
	}
}
