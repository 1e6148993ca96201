package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// TestKillWorkerUnderLoad submits 200 tasks to two workers and kills one
// (its connection closes with no drain) while tasks are running: every
// task still ends succeeded, none is lost.
func TestKillWorkerUnderLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 200
	var done atomic.Int64
	cfg := testConfig("A")
	cfg.AckWait = time.Second
	cfg.ShutdownTimeout = 0
	cfg.Handlers = map[string]worker.Handler{"work": func(ctx context.Context, tk *worker.Task) (any, error) {
		select {
		case <-time.After(10 * time.Millisecond): // the work
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		done.Add(1)
		return "ok", nil
	}}
	a := startWorker(t, e.ns, cfg)
	cfg.ID = "B"
	startWorker(t, e.ns, cfg)

	ids := make([]string, 0, n)
	for range n {
		ids = append(ids, e.submit(t, "work", `{"task":"work"}`))
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if d := done.Load(); d < n/5 {
			return fmt.Errorf("%d tasks done, waiting for %d before the kill", d, n/5)
		}
		return nil
	})
	a.nc.Close() // crash mid-run: A's running tasks are neither acked nor naked
	a.stop(t)

	redelivered := 0
	for _, id := range ids {
		rec := e.waitState(t, id, task.Succeeded, 30*time.Second)
		if rec.Attempts > 1 {
			redelivered++
		}
	}
	e.waitStreamEmpty(t, 10*time.Second)
	t.Logf("%d tasks succeeded, %d of them after a redelivery", n, redelivered)
}

// TestNATSRestartKeepsQueuedTasks stops the NATS server with tasks queued
// and starts it again on the same store: a worker then runs them all.
func TestNATSRestartKeepsQueuedTasks(t *testing.T) {
	t.Parallel()
	e, restart := newRestartableEnv(t)
	const n = 20
	var ids []string
	for range n {
		ids = append(ids, e.submit(t, "noop", `{"task":"noop"}`))
	}

	restart()
	// The gateway's connection reconnects by itself; wait for it.
	testutil.Eventually(t, 10*time.Second, func() error {
		if !e.nc.IsConnected() {
			return fmt.Errorf("not reconnected yet")
		}
		return nil
	})
	// JetStream answers once it has recovered the store, which takes a
	// while on a busy machine: until then a stream lookup times out.
	testutil.Eventually(t, 30*time.Second, func() error {
		s, err := e.js.Stream(t.Context(), task.Stream)
		if err != nil {
			return fmt.Errorf("Stream(%s) = %w", task.Stream, err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			return fmt.Errorf("stream Info() = %w", err)
		}
		if info.State.Msgs != n {
			return fmt.Errorf("TASKS after restart holds %d messages, want %d", info.State.Msgs, n)
		}
		return nil
	})
	startWorker(t, e.ns, testConfig("w1"))
	for _, id := range ids {
		e.waitState(t, id, task.Succeeded, 20*time.Second)
	}
	e.waitStreamEmpty(t, 5*time.Second)
}

// A worker that lives through a NATS restart takes new tasks at once: the
// server ends its waiting pull requests as it shuts down (status 409), and
// the worker must ask again rather than wait for them to expire.
func TestWorkerPullsAgainAfterNATSRestart(t *testing.T) {
	t.Parallel()
	e, restart := newRestartableEnv(t)
	w := startWorker(t, e.ns, testConfig("w1"))
	e.waitState(t, e.submit(t, "noop", `{"task":"noop"}`), task.Succeeded, 10*time.Second)
	testutil.Eventually(t, 5*time.Second, func() error {
		if info := e.consumerInfo(t); info.NumWaiting == 0 {
			return errors.New("the worker's slots are not waiting for tasks yet")
		}
		return nil
	})

	restart()
	testutil.Eventually(t, 10*time.Second, func() error {
		if !e.nc.IsConnected() || !w.nc.IsConnected() {
			return errors.New("not reconnected yet")
		}
		return nil
	})
	// Well inside a pull's expiry (5 s): only a worker that pulled again
	// after the server ended its requests runs the task in time.
	id := e.submit(t, "noop", `{"task":"noop"}`)
	e.waitState(t, id, task.Succeeded, 3*time.Second)
}

// newRestartableEnv is newEnv on a server that restart stops and starts
// again on the same port and store directory; e.ns follows it.
func newRestartableEnv(t *testing.T) (e *env, restart func()) {
	t.Helper()
	port := freePort(t)
	dir := t.TempDir()
	ns := testutil.StartNATSAt(t, port, dir)
	nc := testutil.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e = &env{ns: ns, nc: nc, js: js}
	if e.store, err = task.Provision(t.Context(), js, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	return e, func() {
		e.ns.Shutdown()
		e.ns.WaitForShutdown()
		e.ns = testutil.StartNATSAt(t, port, dir)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
