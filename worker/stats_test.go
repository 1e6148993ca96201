package worker_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/internal/wire"
	"github.com/scalelab/scalelab/worker"
)

// TestProcessStatsCarryTaskCounts: `nats micro stats process` shows each
// worker's task outcomes as its endpoint's data.
func TestProcessStatsCarryTaskCounts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	startWorker(t, e.ns, testConfig("w-stats"))
	waitProcessFrom(t, e.nc, "w-stats")
	for range 3 {
		id := e.submit(t, "noop", `{"task":"noop"}`)
		e.waitState(t, id, task.Succeeded, 10*time.Second)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		resp, err := e.nc.Request("$SRV.STATS."+wire.ProcessService, nil, 2*time.Second)
		if err != nil {
			return err
		}
		var st micro.Stats
		if err := json.Unmarshal(resp.Data, &st); err != nil {
			return err
		}
		if len(st.Endpoints) != 1 {
			return fmt.Errorf("%d endpoints, want 1", len(st.Endpoints))
		}
		var got worker.TaskStats
		if err := json.Unmarshal(st.Endpoints[0].Data, &got); err != nil {
			return fmt.Errorf("endpoint data %s: %w", st.Endpoints[0].Data, err)
		}
		want := worker.TaskStats{ID: "w-stats", Succeeded: 3}
		queues := got.Queues
		got.Queues = nil
		if diff := cmp.Diff(want, got); diff != "" {
			return fmt.Errorf("TaskStats mismatch (-want +got):\n%s", diff)
		}
		// The served queues, as sampled: the built-ins, none holding a task.
		var names []string
		for _, q := range queues {
			names = append(names, q.Name)
			if q.Pending != 0 || q.InFlight != 0 || q.OldestAgeSeconds != 0 {
				return fmt.Errorf("queue %+v, want it empty", q)
			}
		}
		if !slices.Equal(names, []string{"critical", "default", "low"}) {
			return fmt.Errorf("TaskStats.Queues names %v, want critical, default, low", names)
		}
		return nil
	})
}
