package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// testLogger logs to the test's output, shown for failed tests and with -v.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// connect opens a connection to ns that is drained when the test ends.
func connect(t *testing.T, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect(%s) = %v", ns.ClientURL(), err)
	}
	t.Cleanup(func() { _ = natsconn.Close(nc, 5*time.Second) })
	return nc
}

// testConfig is a valid worker config that runs fast: short report, short
// retry delay, the shortest ack wait Validate accepts.
func testConfig(id string) worker.Config {
	cfg := worker.DefaultConfig()
	cfg.ID = id
	cfg.AckWait = 2 * time.Second
	cfg.MaxAttempts = 3
	cfg.RetryDelay = 10 * time.Millisecond
	cfg.ReportDuration = 100 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

// testWorker is a worker started by startWorker.
type testWorker struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done is closed
}

// startWorker runs worker.Run with cfg on a connection of its own. It is
// stopped when the test ends, if stop has not been called, and Run must have
// returned nil.
func startWorker(t *testing.T, ns *server.Server, cfg worker.Config) *testWorker {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: Validate() = %v", err)
	}
	w := &testWorker{nc: connect(t, ns), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	w.cancel = cancel
	log := testLogger(t)
	go func() {
		defer close(w.done)
		w.err = worker.Run(ctx, cfg, w.nc, log)
	}()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop cancels the worker and waits for Run, which must return nil.
func (w *testWorker) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case <-w.done:
	case <-time.After(15 * time.Second):
		t.Fatal("worker.Run did not return 15s after its context was cancelled")
	}
	if w.err != nil {
		t.Errorf("worker.Run() = %v, want nil", w.err)
	}
}

// stopped reports whether Run has returned.
func (w *testWorker) stopped() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// env is what the gateway has: a connection, the TASKS stream and the
// tasks bucket.
type env struct {
	ns    *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	store *task.Store
	kv    jetstream.KeyValue
}

// newEnv starts a server and provisions the stream and bucket as the
// gateway does.
func newEnv(t *testing.T) *env {
	t.Helper()
	ns := testutil.StartNATS(t)
	nc := connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	store, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig())
	if err != nil {
		t.Fatalf("task.Provision() = %v", err)
	}
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatalf("KeyValue(%s) = %v", task.Bucket, err)
	}
	return &env{ns: ns, nc: nc, js: js, store: store, kv: kv}
}

// submit does what the gateway's POST /longtask does: create a queued
// record, then publish the envelope, carrying the record and its revision,
// with the id as Nats-Msg-Id. body is the whole posted body; it becomes
// the payload. The task's owner is testOwner.
func (e *env) submit(t *testing.T, typ string, body string) string {
	t.Helper()
	id := task.NewID()
	now := time.Now().UTC()
	rec := &task.Record{
		ID: id, Type: typ, State: task.Queued, Payload: json.RawMessage(body),
		Owner: testOwner, CreatedAt: now, UpdatedAt: now,
	}
	rev, err := e.store.Create(t.Context(), rec)
	if err != nil {
		t.Fatalf("store.Create(%s) = %v", id, err)
	}
	e.publish(t, task.Envelope{ID: id, Type: typ, Payload: json.RawMessage(body), Record: rec, Revision: rev})
	return id
}

// testOwner is the owner of the tasks submit creates: every record the
// worker writes must keep it.
const testOwner = "alice"

// publish publishes env to its subject, as the gateway's queue does.
func (e *env) publish(t *testing.T, env task.Envelope) {
	t.Helper()
	data, err := json.Marshal(env)
	if err != nil {
		t.Fatalf("json.Marshal(%+v) = %v", env, err)
	}
	e.publishRaw(t, task.Subject(task.DefaultQueue, env.Type), data, env.ID)
}

// publishRaw publishes data to subject on the TASKS stream.
func (e *env) publishRaw(t *testing.T, subject string, data []byte, msgID string) {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(reqid.Header, "req-"+msgID)
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := e.js.PublishMsg(t.Context(), msg, opts...); err != nil {
		t.Fatalf("PublishMsg(%s) = %v", subject, err)
	}
}

// record returns the task record of id.
func (e *env) record(t *testing.T, id string) *task.Record {
	t.Helper()
	rec, _, err := e.store.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("store.Get(%s) = %v", id, err)
	}
	return rec
}

// waitState polls the record of id until it is in state want, and fails
// early if it reaches another terminal state.
func (e *env) waitState(t *testing.T, id string, want task.State, within time.Duration) *task.Record {
	t.Helper()
	var rec *task.Record
	testutil.Eventually(t, within, func() error {
		r, _, err := e.store.Get(t.Context(), id)
		if err != nil {
			return err
		}
		if r.State != want && r.State.Terminal() {
			t.Fatalf("task %s ended %s (error %q, attempts %d), want %s", id, r.State, r.Error, r.Attempts, want)
		}
		if r.State != want {
			return fmt.Errorf("task %s is %s, want %s", id, r.State, want)
		}
		rec = r
		return nil
	})
	return rec
}

// streamMsgs returns how many messages the TASKS stream holds.
func (e *env) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := e.js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", task.Stream, err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatalf("stream Info() = %v", err)
	}
	return info.State.Msgs
}

// waitStreamEmpty waits until every task message is settled (acked or
// terminated): the TASKS stream is a work queue, so those are removed.
func (e *env) waitStreamEmpty(t *testing.T, within time.Duration) {
	t.Helper()
	testutil.Eventually(t, within, func() error {
		if n := e.streamMsgs(t); n != 0 {
			return fmt.Errorf("stream %s holds %d messages, want 0", task.Stream, n)
		}
		return nil
	})
}

// consumerInfo returns the state of the default queue's durable consumer.
func (e *env) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := e.js.Consumer(t.Context(), task.Stream, task.QueueConsumer(task.DefaultQueue))
	if err != nil {
		t.Fatalf("Consumer(%s, %s) = %v", task.Stream, task.QueueConsumer(task.DefaultQueue), err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer Info() = %v", err)
	}
	return info
}

// calls records the deliveries a test handler saw, safe for concurrent use.
type calls struct {
	mu       sync.Mutex
	attempts map[string][]int // task id → Attempt of each call
}

func (c *calls) add(tk *worker.Task) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attempts == nil {
		c.attempts = make(map[string][]int)
	}
	c.attempts[tk.ID] = append(c.attempts[tk.ID], tk.Attempt)
}

// of returns the attempts seen for id.
func (c *calls) of(id string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.attempts[id]...)
}

// total returns how many calls were made for any task.
func (c *calls) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.attempts {
		n += len(a)
	}
	return n
}

// blockUntil returns a handler that signals started (without blocking) and
// then waits until release is closed, or until its context ends.
func blockUntil(release <-chan struct{}, started chan<- string, c *calls) worker.Handler {
	return func(ctx context.Context, tk *worker.Task) (any, error) {
		c.add(tk)
		select {
		case started <- tk.ID:
		default:
		}
		select {
		case <-release:
			return map[string]string{"released": tk.ID}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// receive waits for a value from ch.
func receive[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s: nothing after %v", what, within)
	}
	var zero T
	return zero
}
