package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
)

// settle settles a delivery with the outcome of its run: ack after the
// outcome is recorded, nak (with back-off) to retry, term when it failed
// for good or was cancelled, and to the dead-letter stream when its
// attempts are used up.
func (r *runner) settle(d *delivery, log *slog.Logger, result any, err error) {
	switch {
	case errors.Is(err, errCancelled):
		// DELETE /tasks/{id}: the record already says cancelled.
		log.Info("task cancelled while running")
		_ = d.msg.TermWithReason("cancelled")
		r.count(d, cancelled)
	case err == nil:
		r.succeed(d, result, log)
	case r.taskCtx.Err() != nil:
		// Shutdown interrupted the task: hand it back now so another
		// worker starts it at once, not after the ack wait.
		r.requeue(d, "interrupted by worker shutdown", false, 0, log)
		r.count(d, interrupted)
	case IsPermanent(err):
		r.fail(d, d.attempt, err, log)
	case d.attempt >= d.limit:
		r.bury(d, d.attempt, err, log)
	default:
		delay := r.backoff(d.attempt)
		log.Warn("task attempt failed, will retry", "err", err, "retry_in", delay)
		r.requeue(d, err.Error(), true, delay, log)
		r.count(d, retried)
	}
}

// bury moves a task that used up its attempts to the dead-letter stream,
// records it dead, and terminates its message. The dead letter is stored
// before the message is terminated, so a crash in between leaves a
// duplicate (deduplicated by its Nats-Msg-Id), never a loss.
func (r *runner) bury(d *delivery, attempts int, cause error, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	letter := nats.NewMsg(task.DLQSubject(d.env.Type))
	letter.Data = d.msg.Data()
	letter.Header.Set(task.HeaderTaskID, d.env.ID)
	letter.Header.Set(task.HeaderAttempts, strconv.Itoa(attempts))
	letter.Header.Set(task.HeaderError, truncate(cause.Error(), 1000))
	letter.Header.Set(reqid.Header, d.msg.Headers().Get(reqid.Header))
	msgID := fmt.Sprintf("dead-%s-%d", d.env.ID, attempts)
	if _, err := r.js.PublishMsg(ctx, letter, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(task.DLQStream)); err != nil {
		log.Error("store dead letter, retrying later", "err", err)
		_ = d.msg.NakWithDelay(r.cfg.RetryDelay)
		return
	}
	_, err := r.updateLive(d.env.ID, nil, func(rec *task.Record, now time.Time) {
		rec.State, rec.Error, rec.Attempts, rec.FinishedAt = task.Dead, cause.Error(), attempts, &now
		rec.AddFailure(attempts, cause.Error(), now)
	})
	if err != nil && !errors.Is(err, errAlreadyDone) && !errors.Is(err, task.ErrNotFound) {
		log.Warn("record dead task", "err", err)
	}
	log.Error("task dead: attempts used up, moved to "+task.DLQStream, "err", cause)
	_ = d.msg.TermWithReason("attempts used up")
	r.count(d, dead)
}

// succeed records the task's result and acks its message. The record is
// written from the version claim wrote, without reading it again.
func (r *runner) succeed(d *delivery, result any, log *slog.Logger) {
	raw, err := json.Marshal(result)
	if err != nil {
		r.fail(d, 0, Permanent(fmt.Errorf("encode result: %w", err)), log)
		return
	}
	// errAlreadyDone: cancelled while it ran, and cancelled is final.
	_, err = r.updateLive(d.env.ID, d.running, func(rec *task.Record, now time.Time) {
		rec.State, rec.Result, rec.Error, rec.Progress, rec.FinishedAt = task.Succeeded, raw, "", 100, &now
	})
	if errors.Is(err, errAlreadyDone) {
		log.Info("task finished after it was cancelled, result dropped")
		_ = d.msg.Ack()
		return
	}
	if err != nil {
		// The work is done but not recorded: run it again rather than
		// report nothing. Handlers are written to be safely repeatable.
		log.Error("record task success, retrying task", "err", err)
		_ = d.msg.NakWithDelay(r.cfg.RetryDelay)
		return
	}
	// A plain ack, not DoubleAck: the record already says succeeded, so
	// if this ack is lost the redelivery finds the task done and is
	// dropped (handle's errAlreadyDone). Waiting for the server to confirm
	// cost every task one more message and a round trip in its slot.
	if err := d.msg.Ack(); err != nil {
		log.Warn("ack task", "err", err)
	}
	log.Info("task completed")
	r.count(d, succeeded)
}

// fail records a final failure and terminates the message. An attempt of
// 0 leaves the record's attempts as they are.
func (r *runner) fail(d *delivery, attempt int, cause error, log *slog.Logger) {
	msg := d.msg
	_, err := r.updateLive(d.env.ID, nil, func(rec *task.Record, now time.Time) {
		rec.State, rec.Error, rec.FinishedAt = task.Failed, cause.Error(), &now
		if attempt > 0 {
			rec.Attempts = attempt
		}
		rec.AddFailure(rec.Attempts, cause.Error(), now)
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
		r.count(d, failed)
	}
	_ = msg.TermWithReason(truncate(cause.Error(), 200))
}

// requeue records that the task waits for another attempt and naks it.
// failed says the attempt failed (reason is its error, kept in the
// record's failures); else it was handed back. A delay of 0 hands it back
// at once.
func (r *runner) requeue(d *delivery, reason string, failed bool, delay time.Duration, log *slog.Logger) {
	msg := d.msg
	_, err := r.updateLive(d.env.ID, nil, func(rec *task.Record, now time.Time) {
		rec.State, rec.Error = task.Queued, reason
		if failed {
			rec.AddFailure(d.attempt, reason, now)
		}
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

// updateLive updates a task that has not finished: fn gets the record and
// the time now (UTC). It returns errAlreadyDone, writing nothing, when the
// record is final (succeeded, failed, dead or cancelled): a duplicate
// delivery, or a task cancelled while it ran, must not change it.
func (r *runner) updateLive(id string, last *task.Version, fn func(rec *task.Record, now time.Time)) (*task.Version, error) {
	return r.updateFrom(id, last, func(rec *task.Record) error {
		if rec.State.Terminal() {
			return errAlreadyDone
		}
		fn(rec, time.Now().UTC())
		return nil
	})
}

// updateFrom updates a record from the version this worker last wrote (see
// task.Store.UpdateFrom), under recordTimeout.
func (r *runner) updateFrom(id string, last *task.Version, fn func(*task.Record) error) (*task.Version, error) {
	ctx, cancel := context.WithTimeout(context.Background(), recordTimeout)
	defer cancel()
	return r.store.UpdateFrom(ctx, id, last, fn)
}

// truncate cuts s to at most n bytes, for headers and term reasons.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
