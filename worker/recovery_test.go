package worker_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/internal/wire"
	"github.com/scalelab/scalelab/worker"
)

// TestCrashRecovery kills a worker mid-task (its connection closes without
// a drain, so nothing is acked or naked) and checks that another worker
// gets the task after the ack wait.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		maxAttempts  int
		wantState    task.State
		wantAttempts int
		wantCalls    []int // the Attempt of each handler call
		wantWorker   string
		wantErrSub   string
	}{
		{
			name: "redelivered and run again", maxAttempts: 3,
			wantState: task.Succeeded, wantAttempts: 2, wantCalls: []int{1, 2}, wantWorker: "B",
		},
		{
			// The only allowed attempt died with its worker: the task fails
			// rather than running a second time or staying "running".
			name: "no attempts left", maxAttempts: 1,
			wantState: task.Dead, wantAttempts: 1, wantCalls: []int{1}, wantWorker: "A",
			wantErrSub: "gave up after 1 attempts",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			var c calls
			started := make(chan string, 1)
			cfg := testConfig("A")
			cfg.AckWait = time.Second
			cfg.MaxAttempts = tt.maxAttempts
			cfg.Concurrency = 1
			cfg.ShutdownTimeout = 0
			cfg.Handlers = map[string]worker.Handler{"crashy": func(ctx context.Context, tk *worker.Task) (any, error) {
				c.add(tk)
				if tk.Attempt > 1 {
					return "recovered", nil
				}
				started <- tk.ID
				<-ctx.Done() // blocks until worker A is gone
				return nil, ctx.Err()
			}}
			a := startWorker(t, e.ns, cfg)
			id := e.submit(t, "crashy", `{"task":"crashy"}`)
			receive(t, started, 10*time.Second, "handler start on A")
			e.waitState(t, id, task.Running, 5*time.Second)

			a.nc.Close() // crash: no drain, no ack, no nak, no record update
			a.stop(t)
			if rec := e.record(t, id); rec.State != task.Running || rec.Worker != "A" {
				t.Fatalf("record after crash = %s by %q, want running by A (A could not write)", rec.State, rec.Worker)
			}

			cfg.ID = "B"
			startWorker(t, e.ns, cfg)
			rec := e.waitState(t, id, tt.wantState, 10*time.Second)
			if rec.Attempts != tt.wantAttempts || rec.Worker != tt.wantWorker || !strings.Contains(rec.Error, tt.wantErrSub) {
				t.Errorf("record = attempts %d, worker %q, error %q; want %d, %q, containing %q",
					rec.Attempts, rec.Worker, rec.Error, tt.wantAttempts, tt.wantWorker, tt.wantErrSub)
			}
			if diff := cmp.Diff(tt.wantCalls, c.of(id)); diff != "" {
				t.Errorf("handler calls by Attempt mismatch (-want +got):\n%s", diff)
			}
			e.waitStreamEmpty(t, 5*time.Second)
		})
	}
}

// TestNoTaskLost runs many tasks over two workers: each runs exactly once.
func TestNoTaskLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 50
	var c calls
	cfg := testConfig("")
	cfg.Handlers = map[string]worker.Handler{"count": func(_ context.Context, tk *worker.Task) (any, error) {
		c.add(tk)
		return "ok", nil
	}}
	for _, id := range []string{"w1", "w2"} {
		cfg.ID = id
		startWorker(t, e.ns, cfg)
		waitProcessFrom(t, e.nc, id) // both pull before the tasks arrive
	}

	ids := make([]string, 0, n+1)
	for range n {
		ids = append(ids, e.submit(t, "count", `{"task":"count"}`))
	}
	byWorker := map[string]int{}
	for _, id := range ids {
		rec := e.waitState(t, id, task.Succeeded, 20*time.Second)
		byWorker[rec.Worker]++
		if rec.Attempts != 1 {
			t.Errorf("task %s: attempts = %d, want 1", id, rec.Attempts)
		}
		if diff := cmp.Diff([]int{1}, c.of(id)); diff != "" {
			t.Errorf("task %s: handler calls by Attempt mismatch (-want +got):\n%s", id, diff)
		}
	}
	if byWorker["w1"] == 0 || byWorker["w2"] == 0 || byWorker["w1"]+byWorker["w2"] != n {
		t.Errorf("tasks by worker = %v, want %d shared by w1 and w2", byWorker, n)
	}
	e.waitStreamEmpty(t, 5*time.Second)

	// The shipped noop type too, over the same two workers.
	var noops []string
	for range 10 {
		noops = append(noops, e.submit(t, "noop", `{"task":"noop"}`))
	}
	for _, id := range noops {
		e.waitState(t, id, task.Succeeded, 10*time.Second)
	}
	e.waitStreamEmpty(t, 5*time.Second)
}

// processStopped reports nil once the worker's process service has left:
// Run stops it when shutdown starts.
func processStopped(nc *nats.Conn) func() error {
	return func() error {
		_, err := nc.Request(wire.ProcessSubject, nil, time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil
		}
		return fmt.Errorf("process request error = %v, want no responders", err)
	}
}

// waiting reports nil once the consumer holds want pull requests: one per
// idle slot of the running workers.
func waiting(t *testing.T, e *env, want int) func() error {
	return func() error {
		if n := e.consumerInfo(t).NumWaiting; n != want {
			return fmt.Errorf("consumer has %d pull requests waiting, want %d", n, want)
		}
		return nil
	}
}

// TestShutdownLetsTaskFinish cancels the worker while a task runs, with a
// grace period long enough: the task completes before Run returns, and no
// new task is taken meanwhile.
func TestShutdownLetsTaskFinish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var c calls
	started := make(chan string, 1)
	release := make(chan struct{})
	cfg := testConfig("A")
	cfg.Concurrency = 2 // one slot stays idle, pulling
	cfg.ShutdownTimeout = 30 * time.Second
	cfg.Handlers = map[string]worker.Handler{"block": blockUntil(release, started, &c)}
	a := startWorker(t, e.ns, cfg)
	waitProcessFrom(t, e.nc, "A")

	id := e.submit(t, "block", `{"task":"block"}`)
	receive(t, started, 10*time.Second, "handler start")
	testutil.Eventually(t, 10*time.Second, waiting(t, e, 1)) // the idle slot pulls
	a.cancel()
	testutil.Eventually(t, 10*time.Second, processStopped(e.nc))
	testutil.Eventually(t, 10*time.Second, waiting(t, e, 0)) // and stops pulling
	if a.stopped() {
		t.Fatal("worker.Run returned while a task was running within the grace period")
	}

	// Submitted after shutdown started: A must not take it.
	late := e.submit(t, "block", `{"task":"block"}`)

	close(release)
	a.stop(t)
	rec := e.record(t, id)
	if rec.State != task.Succeeded || rec.Attempts != 1 || rec.Worker != "A" {
		t.Errorf("record = %s, attempts %d, worker %q; want succeeded, 1, A (finished before Run returned)",
			rec.State, rec.Attempts, rec.Worker)
	}
	if got := e.record(t, late).State; got != task.Queued {
		t.Errorf("late task state = %s, want %s (not taken during shutdown)", got, task.Queued)
	}
	if got := c.of(late); len(got) != 0 {
		t.Errorf("late task handler calls = %v, want none on the stopping worker", got)
	}

	cfg.ID = "B"
	startWorker(t, e.ns, cfg)
	rec = e.waitState(t, late, task.Succeeded, 10*time.Second)
	if rec.Worker != "B" || rec.Attempts != 1 {
		t.Errorf("late task = worker %q, attempts %d; want B, 1", rec.Worker, rec.Attempts)
	}
}

// TestShutdownRequeuesInterruptedTask cancels the worker while a task runs
// longer than the grace period: the task is interrupted, its record goes back
// to queued, and it is naked so another worker starts it at once rather than
// after the (long) ack wait.
func TestShutdownRequeuesInterruptedTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var c calls
	started := make(chan string, 1)
	cfg := testConfig("A")
	cfg.Concurrency = 2
	cfg.AckWait = 30 * time.Second // a redelivery by ack wait would fail the test
	cfg.ShutdownTimeout = 100 * time.Millisecond
	cfg.Handlers = map[string]worker.Handler{"stubborn": func(ctx context.Context, tk *worker.Task) (any, error) {
		c.add(tk)
		if tk.Attempt > 1 {
			return "finished elsewhere", nil
		}
		started <- tk.ID
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	a := startWorker(t, e.ns, cfg)
	id := e.submit(t, "stubborn", `{"task":"stubborn"}`)
	receive(t, started, 10*time.Second, "handler start")

	begin := time.Now()
	a.stop(t)
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("worker.Run returned %v after cancel, want about the 100ms grace period", took)
	}
	rec := e.record(t, id)
	if rec.State != task.Queued || rec.Attempts != 1 || rec.Error == "" {
		t.Errorf("record after shutdown = %s, attempts %d, error %q; want queued, 1, a reason", rec.State, rec.Attempts, rec.Error)
	}

	cfg.ID = "B"
	begin = time.Now()
	startWorker(t, e.ns, cfg)
	rec = e.waitState(t, id, task.Succeeded, 10*time.Second) // well before the 30s ack wait
	t.Logf("picked up and finished by B %v after it started", time.Since(begin))
	if rec.Worker != "B" || rec.Attempts != 2 {
		t.Errorf("record = worker %q, attempts %d; want B, 2", rec.Worker, rec.Attempts)
	}
	if diff := cmp.Diff([]int{1, 2}, c.of(id)); diff != "" {
		t.Errorf("handler calls by Attempt mismatch (-want +got):\n%s", diff)
	}
	e.waitStreamEmpty(t, 5*time.Second)
}

// TestDeliveriesThatNeverRanCostNoAttempt: a task whose first deliveries
// were handed back before any worker ran it (in production: a record that
// could not be written while NATS failed over, a pull lost with a worker
// that stopped) still has all its attempts. With one attempt allowed and
// two deliveries naked unrun, it runs once and succeeds, attempts 1; it
// is not buried as if two runs had died with their workers.
func TestDeliveriesThatNeverRanCostNoAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig("A")
	cfg.MaxAttempts = 1
	// A first worker creates the durable consumer, then leaves.
	first := startWorker(t, e.ns, cfg)
	var cons jetstream.Consumer
	testutil.Eventually(t, 10*time.Second, func() (err error) {
		cons, err = e.js.Consumer(t.Context(), task.Stream, task.QueueConsumer(task.DefaultQueue))
		return err
	})
	first.stop(t)

	id := e.submit(t, "noop", `{"task":"noop"}`)
	for range 2 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("Next() = %v", err)
		}
		if err := msg.Nak(); err != nil {
			t.Fatalf("Nak() = %v", err)
		}
	}

	cfg.ID = "B"
	startWorker(t, e.ns, cfg)
	rec := e.waitState(t, id, task.Succeeded, 30*time.Second)
	if rec.Attempts != 1 || rec.Worker != "B" {
		t.Errorf("record = attempts %d, worker %q; want 1, B", rec.Attempts, rec.Worker)
	}
}
