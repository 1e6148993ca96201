package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
)

// errAlreadyDone stops a record update for a task that already finished:
// a redelivery after the outcome was recorded but before the ack landed.
var errAlreadyDone = errors.New("worker: task already finished")

// recordTimeout bounds each task record read or write.
const recordTimeout = 5 * time.Second

// handle runs one delivery of a task and settles its message: ack after the
// outcome is recorded, nak (with back-off) to retry, term when it failed for
// good. It never returns an error: every outcome is a message settlement.
func (r *runner) handle(msg jetstream.Msg) {
	var env task.Envelope
	if err := json.Unmarshal(msg.Data(), &env); err != nil || !task.ValidID(env.ID) {
		// A message nobody can parse will never succeed: drop it, loudly.
		r.log.Error("malformed task message dropped", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("malformed task message")
		return
	}
	attempt := 1
	if meta, err := msg.Metadata(); err == nil {
		attempt = int(meta.NumDelivered)
	}
	log := r.log.With("task_id", env.ID, "task_type", env.Type, "attempt", attempt,
		"request_id", msg.Headers().Get(reqid.Header))

	h, ok := r.handlers[env.Type]
	if !ok {
		r.fail(msg, env.ID, attempt, fmt.Errorf("no handler for task type %q", env.Type), log)
		return
	}
	limit := r.cfg.maxAttempts(env.Type)
	if attempt > limit {
		// The previous attempt died with its worker; don't run it again.
		r.bury(msg, env, attempt-1, fmt.Errorf("gave up after %d attempts (the last one died with its worker)", limit), log)
		return
	}

	// running is the record as this worker wrote it: success writes from
	// it, without reading the record again, unless someone wrote since. A
	// first delivery marks it running from the record the gateway created,
	// which the message carries, the same way.
	var running *task.Version
	from := env.Created()
	if attempt > 1 {
		from = nil // an earlier attempt wrote the record since
	}
	markRunning := func() error {
		var err error
		start := from
		from = nil // a second try reads
		running, err = r.updateFrom(env.ID, start, func(rec *task.Record) error {
			if rec.State.Terminal() {
				return errAlreadyDone
			}
			now := time.Now().UTC()
			rec.State, rec.Attempts, rec.Worker, rec.StartedAt = task.Running, attempt, r.cfg.ID, &now
			return nil
		})
		return err
	}
	err := markRunning()
	// The gateway writes the record before it publishes the task, so a
	// task without a record is either expired or a read that missed a
	// fresh write (a lagging replica). Look again a few times before
	// dropping it; a Nak would cost the task one of its attempts.
	for _, pause := range recordRetries {
		if !errors.Is(err, task.ErrNotFound) {
			break
		}
		log.Warn("task record not found, looking again", "in", pause)
		time.Sleep(pause)
		err = markRunning()
	}
	switch {
	case errors.Is(err, errAlreadyDone):
		log.Info("task already finished, dropping duplicate delivery")
		_ = msg.Ack()
		return
	case errors.Is(err, task.ErrNotFound):
		log.Error("task record missing (expired?), dropping task")
		_ = msg.TermWithReason("task record missing")
		return
	case err != nil:
		log.Warn("cannot mark task running, retrying later", "err", err)
		_ = msg.NakWithDelay(r.backoff(attempt))
		return
	}

	log.Info("task started")
	r.metrics.running.Inc()
	r.counts.running.Add(1)
	start := time.Now()
	result, herr, cancelled := r.run(h, msg, &Task{
		ID: env.ID, Type: env.Type, Payload: env.Payload, Attempt: attempt,
		progress: func(pct int, text string) {
			if _, err := r.update(env.ID, func(rec *task.Record) error {
				rec.Progress, rec.ProgressMessage = pct, text
				return nil
			}); err != nil {
				log.Warn("record progress", "err", err)
			}
		},
	})
	r.metrics.running.Dec()
	r.counts.running.Add(-1)
	elapsed := time.Since(start)
	r.metrics.duration.WithLabelValues(env.Type).Observe(elapsed.Seconds())
	log = log.With("duration_ms", elapsed.Milliseconds())

	switch {
	case cancelled:
		// DELETE /tasks/{id}: the record already says cancelled.
		log.Info("task cancelled while running")
		_ = msg.TermWithReason("cancelled")
		r.count(env.Type, "cancelled")
	case herr == nil:
		r.succeed(msg, env, running, result, log)
	case r.taskCtx.Err() != nil:
		// Shutdown interrupted the task: hand it back now so another
		// worker starts it at once, not after the ack wait.
		r.requeue(msg, env.ID, "interrupted by worker shutdown", 0, log)
		r.count(env.Type, "interrupted")
	case IsPermanent(herr):
		r.fail(msg, env.ID, attempt, herr, log)
	case attempt >= limit:
		r.bury(msg, env, attempt, herr, log)
	default:
		delay := r.backoff(attempt)
		log.Warn("task attempt failed, will retry", "err", herr, "retry_in", delay)
		r.requeue(msg, env.ID, herr.Error(), delay, log)
		r.count(env.Type, "retried")
	}
}

// errCancelled is the cause of a running task's context when a client
// cancels the task.
var errCancelled = errors.New("task cancelled")

// run calls the handler under the task timeout, keeping the message alive
// with InProgress heartbeats so a long task is not redelivered while it
// runs. A panicking handler fails its attempt instead of the worker.
// cancelled reports that the task was cancelled (DELETE /tasks/{id}) while
// it ran.
func (r *runner) run(h Handler, msg jetstream.Msg, t *Task) (result any, err error, cancelled bool) {
	ctx, cancelCause := context.WithCancelCause(r.taskCtx)
	ctx, cancel := context.WithTimeout(ctx, r.cfg.TaskTimeout)
	defer cancel()
	r.running.Store(t.ID, cancelCause)
	defer r.running.Delete(t.ID)
	go func() {
		tick := time.NewTicker(max(r.cfg.AckWait/3, 100*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_ = msg.InProgress()
			}
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("task handler panicked: %v", p)
		}
		cancelled = errors.Is(context.Cause(ctx), errCancelled)
	}()
	result, err = h(ctx, t)
	return result, err, false
}

// cancelRunning cancels the task id if it runs here; every worker gets
// every cancel notice, and the ones not running the task ignore it.
func (r *runner) cancelRunning(id string) {
	if cancel, ok := r.running.Load(id); ok {
		cancel.(context.CancelCauseFunc)(errCancelled)
	}
}

// bury moves a task that used up its attempts to the dead-letter stream,
// records it dead, and terminates its message. The dead letter is stored
// before the message is terminated, so a crash in between leaves a
// duplicate (deduplicated by its Nats-Msg-Id), never a loss.
func (r *runner) bury(msg jetstream.Msg, env task.Envelope, attempts int, cause error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	dead := nats.NewMsg(task.DLQSubject(env.Type))
	dead.Data = msg.Data()
	dead.Header.Set(task.HeaderTaskID, env.ID)
	dead.Header.Set(task.HeaderAttempts, strconv.Itoa(attempts))
	dead.Header.Set(task.HeaderError, truncate(cause.Error(), 1000))
	dead.Header.Set(reqid.Header, msg.Headers().Get(reqid.Header))
	msgID := fmt.Sprintf("dead-%s-%d", env.ID, attempts)
	if _, err := r.js.PublishMsg(ctx, dead, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(task.DLQStream)); err != nil {
		log.Error("store dead letter, retrying later", "err", err)
		_ = msg.NakWithDelay(r.cfg.RetryDelay)
		return
	}
	_, err := r.update(env.ID, func(rec *task.Record) error {
		if rec.State.Terminal() {
			return errAlreadyDone
		}
		now := time.Now().UTC()
		rec.State, rec.Error, rec.Attempts, rec.FinishedAt = task.Dead, cause.Error(), attempts, &now
		return nil
	})
	if err != nil && !errors.Is(err, errAlreadyDone) && !errors.Is(err, task.ErrNotFound) {
		log.Warn("record dead task", "err", err)
	}
	log.Error("task dead: attempts used up, moved to "+task.DLQStream, "err", cause)
	_ = msg.TermWithReason("attempts used up")
	r.count(env.Type, "dead")
}

func (r *runner) succeed(msg jetstream.Msg, env task.Envelope, running *task.Version, result any, log *slog.Logger) {
	raw, err := json.Marshal(result)
	if err != nil {
		r.fail(msg, env.ID, 0, Permanent(fmt.Errorf("encode result: %w", err)), log)
		return
	}
	_, err = r.updateFrom(env.ID, running, func(rec *task.Record) error {
		if rec.State.Terminal() {
			return errAlreadyDone // cancelled while it ran: cancelled is final
		}
		now := time.Now().UTC()
		rec.State, rec.Result, rec.Error, rec.Progress, rec.FinishedAt = task.Succeeded, raw, "", 100, &now
		return nil
	})
	if errors.Is(err, errAlreadyDone) {
		log.Info("task finished after it was cancelled, result dropped")
		_ = msg.Ack()
		return
	}
	if err != nil {
		// The work is done but not recorded: run it again rather than
		// report nothing. Handlers are written to be safely repeatable.
		log.Error("record task success, retrying task", "err", err)
		_ = msg.NakWithDelay(r.cfg.RetryDelay)
		return
	}
	// A plain ack, not DoubleAck: the record already says succeeded, so
	// if this ack is lost the redelivery finds the task done and is
	// dropped (handle's errAlreadyDone). Waiting for the server to confirm
	// cost every task one more message and a round trip in its slot.
	if err := msg.Ack(); err != nil {
		log.Warn("ack task", "err", err)
	}
	log.Info("task completed")
	r.count(env.Type, "succeeded")
}

// fail records a final failure and terminates the message.
func (r *runner) fail(msg jetstream.Msg, id string, attempt int, cause error, log *slog.Logger) {
	_, err := r.update(id, func(rec *task.Record) error {
		if rec.State.Terminal() {
			return errAlreadyDone
		}
		now := time.Now().UTC()
		rec.State, rec.Error, rec.FinishedAt = task.Failed, cause.Error(), &now
		if attempt > 0 {
			rec.Attempts = attempt
		}
		return nil
	})
	switch {
	case errors.Is(err, errAlreadyDone):
		log.Info("task already final (cancelled?), dropping its failed attempt", "err", cause)
	case err != nil && !errors.Is(err, task.ErrNotFound):
		log.Error("record task failure, retrying later", "err", err)
		_ = msg.NakWithDelay(r.cfg.RetryDelay)
		return
	default:
		log.Error("task failed", "err", cause)
		r.count(typeOf(msg), "failed")
	}
	_ = msg.TermWithReason(truncate(cause.Error(), 200))
}

// requeue records that the task waits for another attempt and naks it.
func (r *runner) requeue(msg jetstream.Msg, id, reason string, delay time.Duration, log *slog.Logger) {
	_, err := r.update(id, func(rec *task.Record) error {
		if rec.State.Terminal() {
			return errAlreadyDone
		}
		rec.State, rec.Error = task.Queued, reason
		return nil
	})
	if errors.Is(err, errAlreadyDone) {
		log.Info("task was cancelled, not retrying")
		_ = msg.TermWithReason("cancelled")
		return
	}
	if err != nil {
		log.Warn("record task requeue", "err", err)
	}
	if delay > 0 {
		err = msg.NakWithDelay(delay)
	} else {
		err = msg.Nak()
	}
	if err != nil {
		log.Warn("nak task", "err", err)
	}
}

func (r *runner) update(id string, fn func(*task.Record) error) (*task.Record, error) {
	v, err := r.updateFrom(id, nil, fn)
	if err != nil {
		return nil, err
	}
	return v.Record, nil
}

// updateFrom updates a record from the version this worker last wrote (see
// task.Store.UpdateFrom), under recordTimeout.
func (r *runner) updateFrom(id string, last *task.Version, fn func(*task.Record) error) (*task.Version, error) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	return r.store.UpdateFrom(ctx, id, last, fn)
}

// maxBackoff caps the delay between attempts.
const maxBackoff = 5 * time.Minute

// backoff is the delay before attempt+1: exponential from RetryDelay,
// capped at maxBackoff, with ±10 % jitter so failed tasks don't retry in
// lockstep.
func (r *runner) backoff(attempt int) time.Duration {
	d := r.cfg.RetryDelay
	// Double step by step against the cap: a shift could overflow.
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	return d - d/10 + jitter
}

func typeOf(msg jetstream.Msg) string {
	s := msg.Subject()
	if len(s) > len(task.SubjectPrefix) {
		return s[len(task.SubjectPrefix):]
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// recordRetries are the pauses before each new look for a task record
// that was not found: under a second in all.
var recordRetries = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
