package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// TestReportLifecycle follows a report task through its record: queued,
// running with growing progress, succeeded; then the message is gone.
func TestReportLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig("w1")
	// Long enough that each of the five progress steps (100ms apart) is
	// seen by the watcher, short enough for a unit test.
	cfg.ReportDuration = 500 * time.Millisecond

	// Watch every record in the bucket from before the task exists.
	watcher, err := e.kv.WatchAll(t.Context())
	if err != nil {
		t.Fatalf("WatchAll() = %v", err)
	}
	defer watcher.Stop()
	if first := receive(t, watcher.Updates(), 5*time.Second, "watch: initial values marker"); first != nil {
		t.Fatalf("watch: first update = %q, want the nil marker of an empty bucket", first.Key())
	}

	id := e.submit(t, "report", `{"task":"report"}`)
	startWorker(t, e.ns, cfg)

	var seen []task.Record
	for {
		u := receive(t, watcher.Updates(), 10*time.Second, "watch: record update")
		if u == nil || u.Key() != id || u.Operation() != jetstream.KeyValuePut {
			continue
		}
		var rec task.Record
		if err := json.Unmarshal(u.Value(), &rec); err != nil {
			t.Fatalf("json.Unmarshal(%s) = %v", u.Value(), err)
		}
		seen = append(seen, rec)
		if rec.State.Terminal() {
			break
		}
	}

	// States only move forward and progress never goes back.
	order := map[task.State]int{task.Queued: 0, task.Running: 1, task.Succeeded: 2}
	var path []task.State
	midway := false
	for i, rec := range seen {
		if _, ok := order[rec.State]; !ok {
			t.Fatalf("update %d: state %s, want queued, running or succeeded", i, rec.State)
		}
		if i > 0 {
			prev := seen[i-1]
			if order[rec.State] < order[prev.State] {
				t.Errorf("update %d: state went back from %s to %s", i, prev.State, rec.State)
			}
			if rec.Progress < prev.Progress {
				t.Errorf("update %d: progress went back from %d to %d", i, prev.Progress, rec.Progress)
			}
		}
		if rec.Owner != testOwner {
			t.Errorf("update %d (%s): owner %q, want %q: the worker must keep the submitter", i, rec.State, rec.Owner, testOwner)
		}
		if len(path) == 0 || path[len(path)-1] != rec.State {
			path = append(path, rec.State)
		}
		if rec.State == task.Running && rec.Progress > 0 && rec.Progress < 100 {
			midway = true
		}
	}
	if diff := cmp.Diff([]task.State{task.Queued, task.Running, task.Succeeded}, path); diff != "" {
		t.Errorf("state path mismatch (-want +got):\n%s", diff)
	}
	if !midway {
		t.Errorf("no running update with 0 < progress < 100 among %d updates, want progress reported while running", len(seen))
	}

	rec := e.record(t, id)
	if rec.State != task.Succeeded || rec.Attempts != 1 || rec.Progress != 100 || rec.Worker != "w1" || rec.Error != "" {
		t.Errorf("record = state %s, attempts %d, progress %d, worker %q, error %q; want succeeded, 1, 100, w1, no error",
			rec.State, rec.Attempts, rec.Progress, rec.Worker, rec.Error)
	}
	if rec.ProgressMessage != "section 5 of 5 written" {
		t.Errorf("record progress_message = %q, want %q", rec.ProgressMessage, "section 5 of 5 written")
	}
	if rec.StartedAt == nil || rec.FinishedAt == nil {
		t.Fatalf("record started_at = %v, finished_at = %v, want both set", rec.StartedAt, rec.FinishedAt)
	}
	if took := rec.FinishedAt.Sub(*rec.StartedAt); took < cfg.ReportDuration {
		t.Errorf("finished_at - started_at = %v, want at least the report duration %v", took, cfg.ReportDuration)
	}
	var result struct {
		Report   string `json:"report"`
		Sections int    `json:"sections"`
	}
	if err := json.Unmarshal(rec.Result, &result); err != nil || result.Report == "" || result.Sections != 5 {
		t.Errorf("record result = %s (decode error %v), want a report summary with 5 sections", rec.Result, err)
	}
	e.waitStreamEmpty(t, 5*time.Second)
}

// TestShippedTypes runs the sleep and noop tasks, good and bad.
func TestShippedTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		typ          string
		body         string
		wantState    task.State
		wantResult   string // JSON; compared semantically
		wantErrSub   string
		wantAttempts int
	}{
		{name: "noop", typ: "noop", body: `{"task":"noop"}`,
			wantState: task.Succeeded, wantResult: `{"status":"done"}`, wantAttempts: 1},
		{name: "sleep", typ: "sleep", body: `{"task":"sleep","duration_ms":30}`,
			wantState: task.Succeeded, wantResult: `{"slept_ms":30}`, wantAttempts: 1},
		{name: "sleep zero", typ: "sleep", body: `{"task":"sleep","duration_ms":0}`,
			wantState: task.Succeeded, wantResult: `{"slept_ms":0}`, wantAttempts: 1},
		{name: "sleep negative is permanent", typ: "sleep", body: `{"task":"sleep","duration_ms":-1}`,
			wantState: task.Failed, wantErrSub: "duration_ms", wantAttempts: 1},
		{name: "sleep not JSON is permanent", typ: "sleep", body: `"soon"`,
			wantState: task.Failed, wantErrSub: "sleep", wantAttempts: 1},
		{name: "sleep too long is permanent", typ: "sleep", body: `{"task":"sleep","duration_ms":600001}`,
			wantState: task.Failed, wantErrSub: "duration_ms", wantAttempts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			startWorker(t, e.ns, testConfig("w1"))
			id := e.submit(t, tt.typ, tt.body)
			rec := e.waitState(t, id, tt.wantState, 10*time.Second)
			if rec.Attempts != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", rec.Attempts, tt.wantAttempts)
			}
			if !strings.Contains(rec.Error, tt.wantErrSub) || (tt.wantErrSub == "") != (rec.Error == "") {
				t.Errorf("error = %q, want it to contain %q", rec.Error, tt.wantErrSub)
			}
			if tt.wantResult != "" {
				var got, want any
				if err := json.Unmarshal(rec.Result, &got); err != nil {
					t.Fatalf("json.Unmarshal(result %s) = %v", rec.Result, err)
				}
				_ = json.Unmarshal([]byte(tt.wantResult), &want)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("result mismatch (-want +got):\n%s", diff)
				}
			}
			if rec.FinishedAt == nil {
				t.Errorf("finished_at not set on a %s task", rec.State)
			}
			// Terminated or acked: either way the work queue drops it.
			e.waitStreamEmpty(t, 5*time.Second)
		})
	}
}

// TestRetries checks what each kind of handler outcome does to the task.
func TestRetries(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		// handle runs attempt n (1-based).
		handle       func(ctx context.Context, n int) (any, error)
		taskTimeout  time.Duration // 0: the default
		wantState    task.State
		wantAttempts []int // the Attempt of each call, in order
		wantErrSub   string
	}{
		{
			name: "fails twice then succeeds",
			handle: func(_ context.Context, n int) (any, error) {
				if n < 3 {
					return nil, fmt.Errorf("flake %d", n)
				}
				return "ok", nil
			},
			wantState: task.Succeeded, wantAttempts: []int{1, 2, 3},
		},
		{
			name:      "always fails",
			handle:    func(context.Context, int) (any, error) { return nil, fmt.Errorf("always: %w", errBoom) },
			wantState: task.Dead, wantAttempts: []int{1, 2, 3}, wantErrSub: "always: boom",
		},
		{
			name:      "permanent error",
			handle:    func(context.Context, int) (any, error) { return nil, worker.Permanent(errBoom) },
			wantState: task.Failed, wantAttempts: []int{1}, wantErrSub: "boom",
		},
		{
			name: "wrapped permanent error",
			handle: func(context.Context, int) (any, error) {
				return nil, fmt.Errorf("step 2: %w", worker.Permanent(errBoom))
			},
			wantState: task.Failed, wantAttempts: []int{1}, wantErrSub: "step 2: boom",
		},
		{
			name: "panics once",
			handle: func(_ context.Context, n int) (any, error) {
				if n == 1 {
					panic("kaboom")
				}
				return "ok", nil
			},
			wantState: task.Succeeded, wantAttempts: []int{1, 2},
		},
		{
			name:      "always panics",
			handle:    func(context.Context, int) (any, error) { panic("kaboom") },
			wantState: task.Dead, wantAttempts: []int{1, 2, 3}, wantErrSub: "kaboom",
		},
		{
			name: "times out",
			handle: func(ctx context.Context, _ int) (any, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			taskTimeout: 50 * time.Millisecond,
			wantState:   task.Dead, wantAttempts: []int{1, 2, 3}, wantErrSub: "deadline exceeded",
		},
		{
			name:      "result cannot be encoded",
			handle:    func(context.Context, int) (any, error) { return func() {}, nil },
			wantState: task.Failed, wantAttempts: []int{1}, wantErrSub: "encode result",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			var c calls
			cfg := testConfig("w1")
			cfg.MaxAttempts = 3
			if tt.taskTimeout > 0 {
				cfg.TaskTimeout = tt.taskTimeout
			}
			cfg.Handlers = map[string]worker.Handler{
				"custom": func(ctx context.Context, tk *worker.Task) (any, error) {
					c.add(tk)
					return tt.handle(ctx, tk.Attempt)
				},
				// A second type shows the worker is still alive afterwards.
				"after": func(context.Context, *worker.Task) (any, error) { return "alive", nil },
			}
			startWorker(t, e.ns, cfg)
			id := e.submit(t, "custom", `{"task":"custom"}`)
			rec := e.waitState(t, id, tt.wantState, 10*time.Second)

			if diff := cmp.Diff(tt.wantAttempts, c.of(id)); diff != "" {
				t.Errorf("handler calls by Attempt mismatch (-want +got):\n%s", diff)
			}
			if want := tt.wantAttempts[len(tt.wantAttempts)-1]; rec.Attempts != want {
				t.Errorf("record attempts = %d, want %d", rec.Attempts, want)
			}
			if tt.wantErrSub == "" && rec.Error != "" {
				t.Errorf("record error = %q, want none", rec.Error)
			}
			if !strings.Contains(rec.Error, tt.wantErrSub) {
				t.Errorf("record error = %q, want it to contain %q", rec.Error, tt.wantErrSub)
			}
			if rec.FinishedAt == nil {
				t.Errorf("record finished_at not set on a %s task", rec.State)
			}
			// Every failed attempt is in the record's history: all of
			// them, or all but the last when it succeeded.
			wantFailed := tt.wantAttempts
			if tt.wantState == task.Succeeded {
				wantFailed = wantFailed[:len(wantFailed)-1]
			}
			var failed []int
			for _, f := range rec.Failures {
				failed = append(failed, f.Attempt)
				if f.Error == "" || f.At.IsZero() {
					t.Errorf("failure %+v: want its error and time", f)
				}
			}
			if !slices.Equal(failed, wantFailed) {
				t.Errorf("record failures by attempt = %v, want %v", failed, wantFailed)
			}
			if n := len(rec.Failures); n > 0 && tt.wantState != task.Succeeded && rec.Failures[n-1].Error != rec.Error {
				t.Errorf("last failure %q, record error %q: want the same", rec.Failures[n-1].Error, rec.Error)
			}
			e.waitStreamEmpty(t, 5*time.Second)

			after := e.submit(t, "after", `{"task":"after"}`)
			e.waitState(t, after, task.Succeeded, 10*time.Second)
			if got := len(c.of(id)); got != len(tt.wantAttempts) {
				t.Errorf("handler calls after the task ended = %d, want %d (no redelivery)", got, len(tt.wantAttempts))
			}
		})
	}
}

// TestUndeliverable covers messages the worker must drop without running a
// handler: each is terminated, not redelivered, and the worker goes on.
func TestUndeliverable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// send publishes the bad message and returns the id of its record,
		// or "" when it has none.
		send       func(t *testing.T, e *env) string
		wantState  task.State // the record's state afterwards, if it has one
		wantErrSub string
	}{
		{
			name: "not JSON",
			send: func(t *testing.T, e *env) string {
				e.publishRaw(t, task.Subject(task.DefaultQueue, "count"), []byte("not json"), "")
				return ""
			},
		},
		{
			name: "invalid id",
			send: func(t *testing.T, e *env) string {
				e.publish(t, task.Envelope{ID: "bad.id>", Type: "count", Payload: json.RawMessage(`{}`)})
				return ""
			},
		},
		{
			name: "no record",
			send: func(t *testing.T, e *env) string {
				id := nuid.Next()
				e.publish(t, task.Envelope{ID: id, Type: "count", Payload: json.RawMessage(`{"task":"count"}`)})
				t.Cleanup(func() {
					if _, _, err := e.store.Get(context.Background(), id); !errors.Is(err, task.ErrNotFound) {
						t.Errorf("store.Get(%s) = %v, want ErrNotFound (the worker must not invent a record)", id, err)
					}
				})
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			var c calls
			cfg := testConfig("w1")
			cfg.Handlers = map[string]worker.Handler{"count": func(_ context.Context, tk *worker.Task) (any, error) {
				c.add(tk)
				return "ok", nil
			}}
			startWorker(t, e.ns, cfg)
			id := tt.send(t, e)
			e.waitStreamEmpty(t, 5*time.Second)
			if id != "" {
				rec := e.waitState(t, id, tt.wantState, 5*time.Second)
				if rec.Attempts != 1 || !strings.Contains(rec.Error, tt.wantErrSub) || rec.FinishedAt == nil {
					t.Errorf("record = attempts %d, error %q, finished_at %v; want 1, containing %q, set",
						rec.Attempts, rec.Error, rec.FinishedAt, tt.wantErrSub)
				}
			}
			if n := c.total(); n != 0 {
				t.Errorf("handler calls = %d, want 0", n)
			}
			// The worker is alive, and the bad message was never handed
			// out again.
			good := e.submit(t, "count", `{"task":"count"}`)
			e.waitState(t, good, task.Succeeded, 10*time.Second)
			e.waitStreamEmpty(t, 5*time.Second)
			ci := e.consumerInfo(t)
			if ci.NumRedelivered != 0 || ci.NumAckPending != 0 || ci.Delivered.Consumer != 2 {
				t.Errorf("consumer redelivered %d, ack pending %d, delivered %d; want 0, 0, 2",
					ci.NumRedelivered, ci.NumAckPending, ci.Delivered.Consumer)
			}
		})
	}
}

// TestUnservedTypeHandedBack: a task of a type this worker has no handler
// for is handed back to its queue (for a worker that serves it), not
// failed: its record stays queued with no attempt spent, and the worker
// goes on with the tasks it serves. Once a worker serving the type starts,
// the task runs.
func TestUnservedTypeHandedBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	count := func(_ context.Context, tk *worker.Task) (any, error) { return "ok", nil }
	cfg := testConfig("w1")
	cfg.Handlers = map[string]worker.Handler{"count": count}
	w1 := startWorker(t, e.ns, cfg)
	id := e.submit(t, "other", `{"task":"other"}`)
	good := e.submit(t, "count", `{"task":"count"}`)
	e.waitState(t, good, task.Succeeded, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for e.consumerInfo(t).NumRedelivered == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unserved task was not delivered again within 10 s")
		}
		time.Sleep(20 * time.Millisecond) // polling the consumer
	}
	if rec := e.record(t, id); rec.State != task.Queued || rec.Attempts != 0 || rec.Error != "" {
		t.Fatalf("record of an unserved task = state %s, attempts %d, error %q; want queued, 0, none", rec.State, rec.Attempts, rec.Error)
	}
	// w1 stops, so the next delivery goes to w2 (with both pulling, the
	// server picks either, and w1 would hand it back again).
	w1.stop(t)
	other := testConfig("w2")
	other.Handlers = map[string]worker.Handler{"other": count}
	startWorker(t, e.ns, other)
	if rec := e.waitState(t, id, task.Succeeded, 20*time.Second); rec.Worker != "w2" || rec.Attempts != 1 {
		t.Errorf("record = worker %q, attempts %d; want w2, 1", rec.Worker, rec.Attempts)
	}
}

// TestRetriedTaskRunsOnce: a task cancelled while queued, then retried
// before any worker pulled it, has two messages in the queue: its first
// (now of an older generation) and the retry's. It runs once.
func TestRetriedTaskRunsOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.submit(t, "count", `{"task":"count"}`)
	if _, err := task.MarkCancelled(t.Context(), e.store, id, nil); err != nil {
		t.Fatal(err)
	}
	rec, err := task.Retry(t.Context(), e.js, e.store, id, nil)
	if err != nil || rec.Generation != 1 {
		t.Fatalf("Retry = %+v, %v; want generation 1", rec, err)
	}
	if n := e.streamMsgs(t); n != 2 {
		t.Fatalf("TASKS holds %d messages, want 2 (the first and the retry's)", n)
	}
	// Two slots, and a handler that holds its slot until a second call
	// comes (or a second passes): were the older message run, the retry's
	// would be pulled by the other slot meanwhile and run too.
	var c calls
	second := make(chan struct{})
	var once sync.Once
	cfg := testConfig("w1")
	cfg.Concurrency = 2
	cfg.Handlers = map[string]worker.Handler{"count": func(ctx context.Context, tk *worker.Task) (any, error) {
		c.add(tk)
		if c.total() > 1 {
			once.Do(func() { close(second) })
			return "ok", nil
		}
		select {
		case <-second:
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		return "ok", nil
	}}
	startWorker(t, e.ns, cfg)
	e.waitState(t, id, task.Succeeded, 10*time.Second)
	e.waitStreamEmpty(t, 5*time.Second)
	if n := len(c.of(id)); n != 1 {
		t.Errorf("handler calls = %d, want 1", n)
	}
}

// TestDuplicateDelivery publishes a task whose record is already final, as
// after a redelivery that raced the ack: it is acked, not run again.
func TestDuplicateDelivery(t *testing.T) {
	t.Parallel()
	for _, state := range []task.State{task.Succeeded, task.Failed, task.Dead, task.Cancelled} {
		t.Run(string(state), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			var c calls
			cfg := testConfig("w1")
			cfg.Handlers = map[string]worker.Handler{"count": func(_ context.Context, tk *worker.Task) (any, error) {
				c.add(tk)
				return "ok", nil
			}}

			id := nuid.Next()
			now := time.Now().UTC()
			rec := &task.Record{
				ID: id, Type: "count", State: state, Attempts: 1, Progress: 100,
				Result: json.RawMessage(`{"first":true}`), Worker: "earlier",
				CreatedAt: now, UpdatedAt: now, StartedAt: &now, FinishedAt: &now,
			}
			if _, err := e.store.Create(t.Context(), rec); err != nil {
				t.Fatalf("store.Create() = %v", err)
			}
			_, revBefore, err := e.store.Get(t.Context(), id)
			if err != nil {
				t.Fatalf("store.Get() = %v", err)
			}
			e.publish(t, task.Envelope{ID: id, Type: "count", Payload: json.RawMessage(`{"task":"count"}`)})
			startWorker(t, e.ns, cfg)

			e.waitStreamEmpty(t, 5*time.Second) // acked (or terminated)
			if n := c.total(); n != 0 {
				t.Errorf("handler calls = %d, want 0 for a %s task", n, state)
			}
			got, revAfter, err := e.store.Get(t.Context(), id)
			if err != nil {
				t.Fatalf("store.Get() = %v", err)
			}
			if revAfter != revBefore {
				t.Errorf("record revision = %d, want %d (untouched)", revAfter, revBefore)
			}
			if got.State != state {
				t.Errorf("record state = %s, want %s", got.State, state)
			}

			// The handler does run for a fresh task: the count can move.
			fresh := e.submit(t, "count", `{"task":"count"}`)
			e.waitState(t, fresh, task.Succeeded, 10*time.Second)
			if n := c.total(); n != 1 {
				t.Errorf("handler calls = %d after a fresh task, want 1", n)
			}
		})
	}
}

// TestConcurrencyLimit checks that a worker runs at most Concurrency tasks
// and leaves the rest in the queue, not in a local buffer.
func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const concurrency, tasks = 3, 6
	var running, peak atomic.Int32
	release := make(chan struct{})
	cfg := testConfig("w1")
	cfg.Concurrency = concurrency
	cfg.Handlers = map[string]worker.Handler{"block": func(ctx context.Context, tk *worker.Task) (any, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}

	var ids []string
	for range tasks {
		ids = append(ids, e.submit(t, "block", `{"task":"block"}`))
	}
	startWorker(t, e.ns, cfg)

	testutil.Eventually(t, 10*time.Second, func() error {
		if n := running.Load(); n != concurrency {
			return fmt.Errorf("%d handlers running, want %d", n, concurrency)
		}
		ci := e.consumerInfo(t)
		if ci.NumAckPending != concurrency || ci.NumPending != tasks-concurrency {
			return fmt.Errorf("consumer ack pending %d, pending %d; want %d, %d",
				ci.NumAckPending, ci.NumPending, concurrency, tasks-concurrency)
		}
		return nil
	})
	states := map[task.State]int{}
	for _, id := range ids {
		states[e.record(t, id).State]++
	}
	if diff := cmp.Diff(map[task.State]int{task.Running: concurrency, task.Queued: tasks - concurrency}, states); diff != "" {
		t.Errorf("record states while blocked mismatch (-want +got):\n%s", diff)
	}

	close(release)
	for _, id := range ids {
		e.waitState(t, id, task.Succeeded, 10*time.Second)
	}
	if p := peak.Load(); p != concurrency {
		t.Errorf("peak concurrent handlers = %d, want %d", p, concurrency)
	}
}

// TestLongTaskNotRedelivered checks the InProgress heartbeats: a task that
// runs for more than twice the ack wait is not handed to a second worker.
func TestLongTaskNotRedelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var c calls
	cfg := testConfig("")
	cfg.AckWait = time.Second
	cfg.Handlers = map[string]worker.Handler{"long": func(ctx context.Context, tk *worker.Task) (any, error) {
		c.add(tk)
		timer := time.NewTimer(2500 * time.Millisecond) // the work, not a wait for the test
		defer timer.Stop()
		select {
		case <-timer.C:
			return "done", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	for _, id := range []string{"w1", "w2"} {
		cfg.ID = id
		startWorker(t, e.ns, cfg)
	}
	id := e.submit(t, "long", `{"task":"long"}`)
	rec := e.waitState(t, id, task.Succeeded, 10*time.Second)
	if diff := cmp.Diff([]int{1}, c.of(id)); diff != "" {
		t.Errorf("handler calls by Attempt mismatch (-want +got):\n%s", diff)
	}
	if rec.Attempts != 1 {
		t.Errorf("record attempts = %d, want 1", rec.Attempts)
	}
	if ci := e.consumerInfo(t); ci.NumRedelivered != 0 {
		t.Errorf("consumer NumRedelivered = %d, want 0", ci.NumRedelivered)
	}
}

// TestCancelledWhileRunning cancels a task (as DELETE /tasks/{id} will) while
// its handler runs: cancelled is final, so the outcome of the running
// attempt must not overwrite it, and the task must not run again.
func TestCancelledWhileRunning(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		result error // what the running attempt returns after the cancel
	}{
		{name: "attempt succeeds", result: nil},
		{name: "attempt fails", result: errors.New("transient")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			var c calls
			started := make(chan string, 1)
			release := make(chan struct{})
			cfg := testConfig("w1")
			cfg.Handlers = map[string]worker.Handler{"block": func(ctx context.Context, tk *worker.Task) (any, error) {
				c.add(tk)
				if tk.Attempt > 1 {
					return "ran again", nil
				}
				started <- tk.ID
				select {
				case <-release:
					return "finished", tt.result
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}}
			startWorker(t, e.ns, cfg)
			id := e.submit(t, "block", `{"task":"block"}`)
			receive(t, started, 10*time.Second, "handler start")
			if _, err := e.store.Update(t.Context(), id, func(r *task.Record) error {
				r.State = task.Cancelled
				return nil
			}); err != nil {
				t.Fatalf("store.Update(cancel) = %v", err)
			}
			close(release)
			e.waitStreamEmpty(t, 10*time.Second)
			if got := e.record(t, id).State; got != task.Cancelled {
				t.Errorf("record state = %s, want %s", got, task.Cancelled)
			}
			if diff := cmp.Diff([]int{1}, c.of(id)); diff != "" {
				t.Errorf("handler calls by Attempt mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPermanent(t *testing.T) {
	t.Parallel()
	base := errors.New("base")
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil", err: nil, want: false},
		{name: "plain", err: base, want: false},
		{name: "permanent", err: worker.Permanent(base), want: true},
		{name: "wrapped permanent", err: fmt.Errorf("ctx: %w", worker.Permanent(base)), want: true},
		{name: "joined permanent", err: errors.Join(base, worker.Permanent(base)), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := worker.IsPermanent(tt.err); got != tt.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
	p := worker.Permanent(base)
	if !errors.Is(p, base) {
		t.Errorf("errors.Is(Permanent(base), base) = false, want true")
	}
	if p.Error() != base.Error() {
		t.Errorf("Permanent(base).Error() = %q, want %q", p.Error(), base.Error())
	}
}

// TestCarriedRecord: a task message carries the record as the gateway
// created it. The worker marks the task running from it without a read,
// and when the record changed since (cancelled while queued), the
// compare-and-set fails, the worker reads the record and does not run the
// task. A message whose carried record is of another task is not trusted.
func TestCarriedRecord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ran calls
	cfg := testConfig("w1")
	cfg.Handlers = map[string]worker.Handler{"noop": func(_ context.Context, tk *worker.Task) (any, error) {
		ran.add(tk)
		return "ok", nil
	}}

	cancelled := e.submit(t, "noop", `{"task":"noop"}`)
	if _, err := e.store.Update(t.Context(), cancelled, func(r *task.Record) error {
		now := time.Now().UTC()
		r.State, r.FinishedAt = task.Cancelled, &now
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fresh := e.submit(t, "noop", `{"task":"noop"}`)
	// Another task's record in the message: the worker must read this one's.
	other := e.record(t, fresh)
	id := nuid.Next()
	now := time.Now().UTC()
	if _, err := e.store.Create(t.Context(), &task.Record{ID: id, Type: "noop", State: task.Queued, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, task.Envelope{ID: id, Type: "noop", Payload: json.RawMessage(`{"task":"noop"}`), Record: other, Revision: 1})

	startWorker(t, e.ns, cfg)
	e.waitStreamEmpty(t, 10*time.Second)
	if rec := e.record(t, cancelled); rec.State != task.Cancelled || rec.Attempts != 0 || len(ran.of(cancelled)) != 0 {
		t.Errorf("task cancelled while queued: state %s, attempts %d, ran %d times; want cancelled and never run",
			rec.State, rec.Attempts, len(ran.of(cancelled)))
	}
	for _, ok := range []string{fresh, id} {
		if rec := e.waitState(t, ok, task.Succeeded, 10*time.Second); rec.Attempts != 1 || rec.Worker != "w1" || rec.StartedAt == nil {
			t.Errorf("task %s: %+v, want succeeded by w1 in 1 attempt with a start time", ok, rec)
		}
	}
	if got := e.record(t, fresh); got.ID != fresh || string(got.Payload) != `{"task":"noop"}` {
		t.Errorf("record %s after the run = %+v, want its own id and payload kept", fresh, got)
	}
}
