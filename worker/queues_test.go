package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// submitTo does what submit does for a task on queue: the record and the
// envelope name the queue, and the message goes to tasks.<queue>.<typ>.
func (e *env) submitTo(t *testing.T, queue, typ string) string {
	t.Helper()
	id := task.NewID()
	now := time.Now().UTC()
	body := json.RawMessage(`{"task":"` + typ + `"}`)
	rec := &task.Record{
		ID: id, Type: typ, Queue: queue, State: task.Queued, Payload: body,
		Owner: testOwner, CreatedAt: now, UpdatedAt: now,
	}
	rev, err := e.store.Create(t.Context(), rec)
	if err != nil {
		t.Fatalf("store.Create(%s) = %v", id, err)
	}
	data, err := json.Marshal(task.Envelope{ID: id, Type: typ, Queue: queue, Payload: body, Record: rec, Revision: rev})
	if err != nil {
		t.Fatalf("json.Marshal = %v", err)
	}
	e.publishRaw(t, task.Subject(queue, typ), data, id)
	return id
}

// submitMany submits n tasks of typ on queue, a few at a time (their order
// on the queue does not matter), and returns their ids.
func (e *env) submitMany(t *testing.T, queue, typ string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			ids[i] = e.submitTo(t, queue, typ)
			return nil
		})
	}
	_ = g.Wait()
	return ids
}

// runLog records the queue of every task a handler ran, in order.
type runLog struct {
	mu     sync.Mutex
	queues []string
}

func (l *runLog) add(q string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queues = append(l.queues, q)
}

func (l *runLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.queues...)
}

// count returns how many of the first n runs were of queue.
func count(runs []string, n int, queue string) int {
	c := 0
	for _, q := range runs[:min(n, len(runs))] {
		if q == queue {
			c++
		}
	}
	return c
}

// waitRuns waits until the log holds n runs.
func waitRuns(t *testing.T, l *runLog, n int, within time.Duration) []string {
	t.Helper()
	var runs []string
	testutil.Eventually(t, within, func() error {
		if runs = l.snapshot(); len(runs) < n {
			return fmt.Errorf("%d tasks ran, want %d", len(runs), n)
		}
		return nil
	})
	return runs
}

// TestStrictPriority: one slot busy with a backlog of 1,000 low tasks;
// 10 critical tasks submitted meanwhile all run before more than a
// handful of the low ones.
func TestStrictPriority(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var log runLog
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	cfg := testConfig("strict")
	cfg.Concurrency = 1
	cfg.Queues = []worker.Queue{{Name: "critical", Weight: 1}, {Name: task.DefaultQueue, Weight: 1}, {Name: "low", Weight: 1}}
	cfg.StrictPriority = true
	var once sync.Once
	cfg.Handlers = map[string]worker.Handler{"q": func(ctx context.Context, tk *worker.Task) (any, error) {
		log.add(tk.Queue)
		// The first task holds the slot until the critical ones are queued.
		once.Do(func() {
			started <- struct{}{}
			<-release
		})
		return nil, nil
	}}
	e.submitMany(t, "low", "q", 1000)
	startWorker(t, e.ns, cfg)
	receive(t, started, 10*time.Second, "first low task")
	critical := e.submitMany(t, "critical", "q", 10)
	close(release)
	for _, id := range critical {
		e.waitState(t, id, task.Succeeded, 20*time.Second)
	}
	runs := log.snapshot()
	lastCritical := 0
	for i, q := range runs {
		if q == "critical" {
			lastCritical = i
		}
	}
	// Runs before the last critical one: the held low task, the 10
	// critical ones, and the low ones that slipped in.
	if low := count(runs, lastCritical+1, "low"); low > 5 {
		t.Errorf("%d low tasks ran before the last critical one (runs %v), want at most 5 (≥ 995 of 1,000 still pending)",
			low, runs[:lastCritical+1])
	}
}

// TestWeightedQueues: two queues weighted 3:1, each with a backlog of
// 2,000; of the first 2,000 tasks one slot runs, 3/4 come from the first.
func TestWeightedQueues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var log runLog
	cfg := testConfig("weighted")
	cfg.Concurrency = 1
	cfg.Queues = []worker.Queue{{Name: "heavy", Weight: 3}, {Name: "light", Weight: 1}}
	cfg.Handlers = map[string]worker.Handler{"q": func(ctx context.Context, tk *worker.Task) (any, error) {
		log.add(tk.Queue)
		return nil, nil
	}}
	e.submitMany(t, "heavy", "q", 2000)
	e.submitMany(t, "light", "q", 2000)
	startWorker(t, e.ns, cfg)
	runs := waitRuns(t, &log, 2000, 2*time.Minute)
	heavy := count(runs, 2000, "heavy")
	const want = 1500 // 2,000 × 3/4
	t.Logf("%d of the first 2,000 tasks came from the queue of weight 3", heavy)
	if heavy < want*9/10 || heavy > want*11/10 {
		t.Errorf("%d of the first 2,000 tasks came from the queue of weight 3, want %d ± 10 %%", heavy, want)
	}
	e.waitStreamEmpty(t, 2*time.Minute)
}

// TestUnservedQueueWaits: a task on a queue no worker serves stays queued
// (in the stream, its record "queued") while others run; a worker that
// serves the queue then runs it.
func TestUnservedQueueWaits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	startWorker(t, e.ns, testConfig("builtins"))
	waiting := e.submitTo(t, "nobody", "noop")
	e.waitState(t, e.submitTo(t, task.DefaultQueue, "noop"), task.Succeeded, 10*time.Second)
	e.waitState(t, e.submitTo(t, "critical", "noop"), task.Succeeded, 10*time.Second)
	e.waitState(t, e.submitTo(t, "low", "noop"), task.Succeeded, 10*time.Second)
	if rec := e.record(t, waiting); rec.State != task.Queued {
		t.Errorf("task on an unserved queue is %s, want %s", rec.State, task.Queued)
	}
	if n := e.streamMsgs(t); n != 1 {
		t.Errorf("stream holds %d messages, want 1 (the unserved queue's)", n)
	}
	cfg := testConfig("nobody")
	cfg.Queues = []worker.Queue{{Name: "nobody", Weight: 1}}
	startWorker(t, e.ns, cfg)
	e.waitState(t, waiting, task.Succeeded, 10*time.Second)
}

// TestLegacySubjectAndConsumer: a task queued before queues, on
// tasks.<type> and held by the old shared consumer "workers", runs once
// the provisioner has replaced that consumer: it belongs to the default
// queue.
func TestLegacySubjectAndConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// The layout before queues: one consumer on every task subject.
	_, err := e.js.CreateOrUpdateConsumer(t.Context(), task.Stream, jetstream.ConsumerConfig{
		Durable: task.Consumer, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: task.SubjectPrefix + ">",
	})
	if err != nil {
		t.Fatalf("create the legacy consumer = %v", err)
	}
	id := task.NewID()
	now := time.Now().UTC()
	rec := &task.Record{ID: id, Type: "noop", State: task.Queued, Payload: json.RawMessage(`{"task":"noop"}`),
		Owner: testOwner, CreatedAt: now, UpdatedAt: now}
	rev, err := e.store.Create(t.Context(), rec)
	if err != nil {
		t.Fatalf("store.Create = %v", err)
	}
	data, _ := json.Marshal(task.Envelope{ID: id, Type: "noop", Payload: rec.Payload, Record: rec, Revision: rev})
	e.publishRaw(t, task.SubjectPrefix+"noop", data, id)

	if _, err := task.Provision(t.Context(), e.js, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("task.Provision() again = %v", err)
	}
	if _, err := e.js.Consumer(t.Context(), task.Stream, task.Consumer); err == nil {
		t.Errorf("the legacy consumer %s survived Provision", task.Consumer)
	}
	startWorker(t, e.ns, testConfig("legacy"))
	got := e.waitState(t, id, task.Succeeded, 10*time.Second)
	if got.Queue != "" && got.Queue != task.DefaultQueue {
		t.Errorf("record queue = %q, want the default queue", got.Queue)
	}
}

// TestIdleWorkerWaitsOnEveryQueue: an idle worker with a slot per queue
// or more has a pull waiting on each queue it serves, so a task on any of
// them starts at once.
//
// Not parallel: its 2 s bound on each task is about this worker, and the
// package's parallel tests run thousands of tasks on the same 2 cores.
func TestIdleWorkerWaitsOnEveryQueue(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig("idle")
	cfg.Concurrency = 4
	startWorker(t, e.ns, cfg)
	testutil.Eventually(t, 10*time.Second, func() error {
		total := 0
		for _, q := range task.BuiltinQueues {
			c, err := e.js.Consumer(t.Context(), task.Stream, task.QueueConsumer(q))
			if err != nil {
				return err
			}
			info, err := c.Info(t.Context())
			if err != nil {
				return err
			}
			if info.NumWaiting == 0 {
				return fmt.Errorf("no pull waiting on queue %s", q)
			}
			total += info.NumWaiting
		}
		if total != cfg.Concurrency {
			return fmt.Errorf("%d pulls waiting, want one per slot (%d)", total, cfg.Concurrency)
		}
		return nil
	})
	for _, q := range task.BuiltinQueues {
		e.waitState(t, e.submitTo(t, q, "noop"), task.Succeeded, 2*time.Second)
	}
}
