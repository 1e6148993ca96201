package worker_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/worker"
)

// TestDeadLetter: a task that fails every attempt ends dead, and its
// message moves from TASKS to TASKS_DLQ with the attempts and last error.
func TestDeadLetter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig("w1")
	cfg.MaxAttempts = 5
	cfg.AttemptsByType = map[string]int{"doomed": 3} // the per-type limit wins
	var fixed atomic.Bool
	cfg.Handlers = map[string]worker.Handler{"doomed": func(context.Context, *worker.Task) (any, error) {
		if fixed.Load() {
			return "ok", nil
		}
		return nil, errors.New("disk on fire")
	}}
	startWorker(t, e.ns, cfg)
	id := e.submit(t, "doomed", `{"task":"doomed"}`)

	rec := e.waitState(t, id, task.Dead, 20*time.Second)
	if rec.Attempts != 3 || rec.Error != "disk on fire" || rec.FinishedAt == nil || rec.Owner != testOwner {
		t.Errorf("dead record = attempts %d, error %q, finished %v, owner %q; want 3, %q, set, %q", rec.Attempts, rec.Error, rec.FinishedAt, rec.Owner, "disk on fire", testOwner)
	}
	e.waitStreamEmpty(t, 10*time.Second)

	dlq, err := e.js.Stream(t.Context(), task.DLQStream)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", task.DLQStream, err)
	}
	msg, err := dlq.GetLastMsgForSubject(t.Context(), task.DLQSubject("doomed"))
	if err != nil {
		t.Fatalf("GetLastMsgForSubject(%s) = %v", task.DLQSubject("doomed"), err)
	}
	h := nats.Header(msg.Header)
	if got := h.Get(task.HeaderTaskID); got != id {
		t.Errorf("dead letter task id = %q, want %q", got, id)
	}
	if got := h.Get(task.HeaderAttempts); got != strconv.Itoa(3) {
		t.Errorf("dead letter attempts = %q, want 3", got)
	}
	if got := h.Get(task.HeaderError); got != "disk on fire" {
		t.Errorf("dead letter error = %q, want %q", got, "disk on fire")
	}

	// The operator lists the dead letters, fixes the cause, and retries.
	dead, err := task.ListDead(t.Context(), e.js)
	if err != nil || len(dead) != 1 || dead[0].ID != id || dead[0].Attempts != 3 || dead[0].Type != "doomed" || dead[0].Owner != testOwner {
		t.Fatalf("ListDead() = %+v, %v; want one dead letter for %s with 3 attempts, owned by %s", dead, err, id, testOwner)
	}
	fixed.Store(true)
	if err := task.RetryDead(t.Context(), e.js, e.store, id); err != nil {
		t.Fatalf("RetryDead(%s) = %v", id, err)
	}
	rec = e.waitState(t, id, task.Succeeded, 20*time.Second)
	if rec.Attempts != 1 || rec.Owner != testOwner {
		t.Errorf("retried task attempts = %d, owner %q; want 1 (a fresh budget), %q (kept by the retry)", rec.Attempts, rec.Owner, testOwner)
	}
	if dead, err := task.ListDead(t.Context(), e.js); err != nil || len(dead) != 0 {
		t.Errorf("ListDead() after retry = %+v, %v; want none", dead, err)
	}
	if err := task.RetryDead(t.Context(), e.js, e.store, id); !errors.Is(err, task.ErrNotFound) {
		t.Errorf("RetryDead(%s) again = %v, want ErrNotFound", id, err)
	}
}

// TestCancelRunning: a cancel notice stops the handler of a running task
// through its context, and the task is not retried.
func TestCancelRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	started := make(chan struct{}, 1)
	stopped := make(chan error, 1)
	var c calls
	cfg := testConfig("w1")
	cfg.Handlers = map[string]worker.Handler{"long": func(ctx context.Context, tk *worker.Task) (any, error) {
		c.add(tk)
		started <- struct{}{}
		<-ctx.Done()
		stopped <- context.Cause(ctx)
		return nil, ctx.Err()
	}}
	startWorker(t, e.ns, cfg)
	id := e.submit(t, "long", `{"task":"long"}`)
	receive(t, started, 10*time.Second, "handler start")

	// What the gateway's DELETE /tasks/{id} does: record, then notify.
	if _, err := e.store.Update(t.Context(), id, func(r *task.Record) error {
		r.State = task.Cancelled
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Publish(task.CancelSubject(id), nil); err != nil {
		t.Fatal(err)
	}
	cause := receive(t, stopped, 10*time.Second, "handler stop")
	if cause == nil {
		t.Errorf("handler context cause = nil, want the cancellation")
	}
	e.waitStreamEmpty(t, 10*time.Second)
	if rec, _, _ := e.store.Get(t.Context(), id); rec.State != task.Cancelled {
		t.Errorf("record state = %s, want cancelled", rec.State)
	}
	if got := c.of(id); len(got) != 1 {
		t.Errorf("handler calls = %v, want exactly one", got)
	}
}
