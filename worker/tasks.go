package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
)

// The reasons a step stops short of its work.
var (
	// errAlreadyDone stops a record update for a task that already
	// finished: a redelivery after the outcome was recorded but before
	// the ack landed.
	errAlreadyDone = errors.New("worker: task already finished")
	// errAttemptsUsed is markRunning's refusal to start a task whose
	// record already counts all its attempts.
	errAttemptsUsed = errors.New("worker: task attempts used up")
	// errCancelled is the cause of a running task's context when a client
	// cancels the task, and run's error for a task cancelled while it ran.
	errCancelled = errors.New("task cancelled")
)

// recordTimeout bounds each task record read or write.
const recordTimeout = 5 * time.Second

// recordRetries are the pauses before each new look for a task record
// that was not found: under a second in all.
var recordRetries = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}

// handle runs one delivery of a task in three steps: claim it (mark its
// record running), run its handler, and settle its message with the
// outcome. It never returns an error: every outcome is a message
// settlement.
func (r *runner) handle(msg jetstream.Msg) {
	d := r.claim(msg)
	if d == nil {
		return // claim settled the message: nothing to run
	}
	d.log.Info("task started")
	r.metrics.running.Inc()
	r.counts.running.Add(1)
	start := time.Now()
	result, err := r.run(d)
	r.metrics.running.Dec()
	r.counts.running.Add(-1)
	elapsed := time.Since(start)
	r.metrics.duration.WithLabelValues(d.env.Type).Observe(elapsed.Seconds())
	r.settle(d, d.log.With("duration_ms", elapsed.Milliseconds()), result, err)
}

// delivery is one delivery of a task as claim reads it; run and settle
// get it once claim has marked the task running.
type delivery struct {
	msg jetstream.Msg
	env task.Envelope
	// delivered is the message's delivery count (JetStream's
	// NumDelivered); attempt is the run this is by the record (see
	// markRunning), which a delivery that never ran does not count.
	delivered, attempt int
	limit              int // the task type's attempts
	// queue is the queue the task was pulled from: the queue label of its
	// outcome in scalelab_worker_tasks_total.
	queue   string
	handler Handler
	// running is the record as this worker wrote it: success writes from
	// it, without reading the record again, unless someone wrote since.
	running *task.Version
	log     *slog.Logger
}

// claim reads the task from msg and marks its record running. It returns
// nil when the delivery must not run, having settled msg: a malformed
// message, an unknown type, attempts used up, a task already finished or
// whose record is missing, or a record it cannot write (retried later).
func (r *runner) claim(msg jetstream.Msg) *delivery {
	var env task.Envelope
	if err := json.Unmarshal(msg.Data(), &env); err != nil || !task.ValidID(env.ID) {
		// A message nobody can parse will never succeed: drop it, loudly.
		r.log.Error("malformed task message dropped", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("malformed task message")
		return nil
	}
	d := &delivery{msg: msg, env: env, delivered: 1, limit: r.cfg.maxAttempts(env.Type), queue: env.QueueOrDefault()}
	if queue, _, ok := task.SplitSubject(msg.Subject()); ok {
		d.queue = queue // the queue it was pulled from, whatever the envelope says
	}
	if meta, err := msg.Metadata(); err == nil {
		d.delivered = int(meta.NumDelivered)
	}
	d.attempt = d.delivered // until the record says which run this is
	d.log = r.log.With("task_id", env.ID, "task_type", env.Type, "delivery", d.delivered,
		"request_id", msg.Headers().Get(reqid.Header))

	h, ok := r.handlers[env.Type]
	if !ok {
		// A queue's consumer hands any of its tasks to any worker serving
		// the queue, and workers of other programs may serve other types
		// on it: hand the task back, for one of them, at no cost to its
		// attempts. A type nobody serves stays queued, visible as such.
		delay := handBackDelay(d.delivered)
		d.log.Warn("no handler here for this task type; handed back to the queue", "queue", env.QueueOrDefault(), "retry_in", delay)
		_ = msg.NakWithDelay(delay)
		return nil
	}
	d.handler = h

	var err error
	d.running, err = r.markRunning(d)
	switch {
	case err == nil:
		d.log = d.log.With("attempt", d.attempt)
		return d
	case errors.Is(err, errAttemptsUsed):
		// Every attempt the task had started and died with its worker
		// (it was running, and no outcome was recorded): don't run it
		// again.
		r.bury(d, d.attempt, fmt.Errorf("gave up after %d attempts (the last one died with its worker)", d.limit), d.log)
	case errors.Is(err, errAlreadyDone):
		d.log.Info("task already finished, dropping duplicate delivery")
		_ = msg.Ack()
	case errors.Is(err, task.ErrNotFound):
		d.log.Error("task record missing (expired?), dropping task")
		_ = msg.TermWithReason("task record missing")
	case errors.Is(err, context.Canceled):
		// Shutdown's grace ran out while it looked for the record: hand
		// the task back now, as for a task it interrupts.
		d.log.Info("task handed back: worker shutting down")
		_ = msg.Nak()
	case task.NoSpace(err):
		// The store is full: nothing can be recorded until space
		// returns, which the task should not wait out by the attempts'
		// backoff (up to 5 min).
		delay := storeFullDelay(d.delivered)
		d.log.Warn("task store full: task handed back until space returns", "retry_in", delay, "err", err)
		_ = msg.NakWithDelay(delay)
	default:
		d.log.Warn("cannot mark task running, retrying later", "err", err)
		_ = msg.NakWithDelay(r.backoff(d.delivered))
	}
	return nil
}

// storeFullDelay is how long a task that could not be recorded as running
// because the store is full (task.NoSpace) waits before its delivery
// number delivered is followed by another: 1 s, doubling to 30 s. So a
// task runs at most 30 s after space returns, and while the store is
// full, each queued task costs its queue a delivery (a read and a refused
// write) every 30 s.
func storeFullDelay(delivered int) time.Duration {
	return min(time.Second<<min(max(delivered-1, 0), 5), 30*time.Second)
}

// handBackDelay is how long a task of a type this worker does not serve
// waits before its delivery number delivered is followed by another: 1 s,
// doubling to 5 s, so that a type nobody serves costs its queue a
// delivery every 5 s, and one whose worker has just started waits no
// longer than that for it.
func handBackDelay(delivered int) time.Duration {
	return min(time.Second<<min(max(delivered-1, 0), 3), 5*time.Second)
}

// markRunning marks the task's record running by a new attempt and
// returns the version it wrote; d.attempt becomes that attempt's number.
// An attempt is a run the record saw start, not a delivery: a delivery
// that never got this far (its record could not be written while NATS
// failed over, its pull was lost with a worker that stopped) costs the
// task nothing, so a task is never buried without having run its
// attempts. It returns errAttemptsUsed, writing nothing, when the record
// already counts d.limit attempts (each died with its worker).
//
// A first delivery writes from the record the gateway created, which the
// message carries; a redelivery reads it, as an earlier attempt wrote
// since. The gateway writes the record before it publishes the task, so a
// task without a record is either expired or a read that missed a fresh
// write (a lagging replica): markRunning looks again after each of
// recordRetries before it returns task.ErrNotFound. It returns
// errAlreadyDone for a finished task, and context.Canceled when shutdown's
// grace runs out during that wait.
func (r *runner) markRunning(d *delivery) (*task.Version, error) {
	from := d.env.Created()
	if d.delivered > 1 {
		from = nil
	}
	for i := 0; ; i++ {
		v, err := r.updateFrom(d.env.ID, from, func(rec *task.Record) error {
			d.limit = r.cfg.attemptsOf(rec)
			switch {
			case rec.State.Terminal(), rec.Generation > d.env.Generation:
				// Finished, or a message of the task's earlier life
				// (it was retried since: Record.Generation).
				return errAlreadyDone
			case rec.Attempts >= d.limit:
				d.attempt = rec.Attempts
				return errAttemptsUsed
			}
			now := time.Now().UTC()
			rec.Attempts++
			d.attempt = rec.Attempts
			rec.State, rec.Worker, rec.StartedAt = task.Running, r.cfg.ID, &now
			return nil
		})
		if !errors.Is(err, task.ErrNotFound) || i == len(recordRetries) {
			return v, err
		}
		from = nil // a second try reads
		d.log.Warn("task record not found, looking again", "in", recordRetries[i])
		// The looks take about a second, more on a loaded machine, and the
		// handler's keepAlive has not started: without a heartbeat an ack
		// wait near its 1 s floor ran out meanwhile, and the server handed
		// the message out again while this delivery still held it (CI's
		// TestUndeliverable: delivered 3 times, want 2).
		_ = d.msg.InProgress() // best effort: a lost one is a redelivery, as before
		if err := sleepCtx(r.taskCtx, recordRetries[i]); err != nil {
			return nil, err
		}
	}
}

// run calls the handler under the task timeout, keeping the message alive
// with InProgress heartbeats so a long task is not redelivered while it
// runs. It returns the handler's result and error; a panicking handler
// fails its attempt instead of the worker, and a task cancelled while it
// ran (DELETE /tasks/{id}) returns errCancelled, whatever its handler did.
func (r *runner) run(d *delivery) (any, error) {
	ctx, cancelCause := context.WithCancelCause(r.taskCtx)
	// Released when the attempt ends: until cancelled, a child stays in
	// r.taskCtx's list of children for the worker's life, one per task
	// ever run (the soak found ~470 bytes a task). A cancel notice that
	// came first keeps its cause.
	defer cancelCause(nil)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.timeoutOf(d.running.Record))
	defer cancel()
	r.running.Store(d.env.ID, cancelCause)
	defer r.running.Delete(d.env.ID)
	go keepAlive(ctx, d.msg, max(r.cfg.AckWait/3, 100*time.Millisecond))

	result, err := callHandler(ctx, d.handler, &Task{
		ID: d.env.ID, Type: d.env.Type, Queue: d.env.QueueOrDefault(), Payload: d.env.Payload, Attempt: d.attempt,
		progress: func(pct int, text string) { r.recordProgress(d, pct, text) },
	})
	if errors.Is(context.Cause(ctx), errCancelled) {
		return nil, errCancelled
	}
	return result, err
}

// callHandler calls h, turning a panic into the attempt's error.
func callHandler(ctx context.Context, h Handler, t *Task) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			result, err = nil, fmt.Errorf("task handler panicked: %v", p)
		}
	}()
	return h(ctx, t)
}

// keepAlive resets msg's ack wait every interval until ctx ends.
func keepAlive(ctx context.Context, msg jetstream.Msg, interval time.Duration) {
	for sleepCtx(ctx, interval) == nil {
		_ = msg.InProgress()
	}
}

// recordProgress writes a handler's progress report to the task record.
// A failure is logged, never fatal to the task.
func (r *runner) recordProgress(d *delivery, pct int, text string) {
	if _, err := r.updateFrom(d.env.ID, nil, func(rec *task.Record) error {
		rec.Progress, rec.ProgressMessage = pct, text
		return nil
	}); err != nil {
		d.log.Warn("record progress", "err", err)
	}
}

// cancelRunning cancels the task id if it runs here; every worker gets
// every cancel notice, and the ones not running the task ignore it.
func (r *runner) cancelRunning(id string) {
	if cancel, ok := r.running.Load(id); ok {
		cancel.(context.CancelCauseFunc)(errCancelled)
	}
}
