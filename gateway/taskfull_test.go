package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// TestTaskBucketFull fills a tasks bucket with a small byte limit through
// POST /longtask, with no worker running: once it is full, submission
// answers 503 with a JSON error that names the cause. Then a worker starts,
// and every task that got a 202 runs to succeeded, progress and result
// recorded: the bucket refused new tasks, never an accepted one.
func TestTaskBucketFull(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	const limit = 256 << 10 // the smallest --max-task-bytes
	base := startGateway(t, testutil.Connect(t, ns), func(c *Config) { c.Provision.MaxRecordBytes = limit })
	tok := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	// About 4 KiB a record: the bucket is full after a few dozen.
	body := `{"task":"report","note":"` + strings.Repeat("x", 4000) + `"}`

	var accepted []string
	var full result
	for i := 0; ; i++ {
		if i > 200 {
			t.Fatalf("%d tasks of 4 KiB accepted into a bucket of %d bytes, want a 503 long before", i, limit)
		}
		r := send(t, "POST", base+"/longtask", tok, body, nil)
		if r.status != http.StatusAccepted {
			full = r
			break
		}
		accepted = append(accepted, taskID(t, r))
	}
	if full.status != http.StatusServiceUnavailable || errorCode(t, full) != "store_full" ||
		!strings.Contains(string(full.body), "tasks bucket") || full.header.Get("Retry-After") == "" {
		t.Fatalf("POST /longtask on a full bucket = %d %s (Retry-After %q), want 503 store_full naming the tasks bucket, with Retry-After",
			full.status, full.body, full.header.Get("Retry-After"))
	}
	if len(accepted) == 0 {
		t.Fatal("no task accepted before the bucket was full")
	}
	// The refused submission left nothing behind: only accepted tasks are
	// queued.
	wantQueued(t, ns, len(accepted))
	startQuickWorker(t, ns, "w-full", func(c *worker.Config) { c.Provision.MaxRecordBytes = limit })

	for _, id := range accepted {
		testutil.Eventually(t, 30*time.Second, func() error {
			var rec task.Record
			r := get(t, base+"/tasks/"+id+"?wait=5s", tok)
			if err := json.Unmarshal(r.body, &rec); err != nil || r.status != http.StatusOK {
				t.Fatalf("GET /tasks/%s = %d %s", id, r.status, r.body)
			}
			if rec.State != task.Succeeded {
				return &stateError{id: id, state: rec.State}
			}
			if rec.Progress != 100 || len(rec.Result) == 0 {
				t.Errorf("task %s: progress %d, result %s; want 100 and the report's summary", id, rec.Progress, rec.Result)
			}
			return nil
		})
	}
}

// wantQueued fails unless the TASKS stream holds n messages.
func wantQueued(t *testing.T, ns *server.Server, n int) {
	t.Helper()
	js, err := jetstream.New(testutil.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(t.Context()); err != nil || info.State.Msgs != uint64(n) {
		t.Fatalf("TASKS holds %v messages (%v), want the %d accepted", info.State.Msgs, err, n)
	}
}

// startQuickWorker runs a worker on ns whose report takes 50 ms and whose
// retries wait 10 ms, with its config changed by edit (nil: none).
func startQuickWorker(t *testing.T, ns *server.Server, id string, edit func(*worker.Config)) {
	t.Helper()
	cfg := worker.DefaultConfig()
	cfg.ID, cfg.ReportDuration, cfg.AckWait, cfg.RetryDelay = id, 50*time.Millisecond, 2*time.Second, 10*time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	wnc := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return worker.Run(ctx, cfg, wnc, testutil.QuietLog()) })
}

// stateError is a task not yet in the wanted state, to poll again.
type stateError struct {
	id    string
	state task.State
}

func (e *stateError) Error() string { return "task " + e.id + " is " + string(e.state) }
