package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
)

// Handler runs one task. Its result is stored in the task record as JSON.
// Returning an error retries the task with back-off, unless the error is
// Permanent or the attempts are used up.
type Handler func(ctx context.Context, t *Task) (any, error)

// Task is what a handler sees of the task it runs.
type Task struct {
	ID    string
	Type  string
	Queue string
	// Payload is the body posted to /longtask, in the canonical form the
	// gateway stored after validating it (task.Parse). Handlers read it
	// with the same strict reader (strictjson.DecodeBody, as
	// task.DecodeSleep does), so a worker never reads a payload otherwise
	// than the gateway did.
	Payload []byte
	Attempt int // 1 on the first delivery
	// progress records progress in the task record; set by the worker.
	progress func(percent int, message string)
}

// Progress records how far the task is, 0–100 %, with a short message.
// Failures to record progress are logged, never fatal to the task.
func (t *Task) Progress(percent int, message string) {
	if t.progress != nil {
		t.progress(min(max(percent, 0), 100), message)
	}
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps err so the task fails at once instead of being retried.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err was wrapped by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// builtinHandlers returns the shipped task types (task.BuiltinTypes).
func builtinHandlers(cfg Config, js jetstream.JetStream) map[string]Handler {
	return map[string]Handler{
		"noop":   func(context.Context, *Task) (any, error) { return map[string]string{"status": "done"}, nil },
		"report": reportHandler(cfg.ReportDuration),
		"sleep":  sleepHandler,
		"tally":  tallyHandler(js, cfg.ID),
	}
}

// reportSteps is how many progress updates the report task makes.
const reportSteps = 5

// reportHandler is the lab's long task: it works for d, reporting progress
// in steps, and returns a small summary.
func reportHandler(d time.Duration) Handler {
	return func(ctx context.Context, t *Task) (any, error) {
		start := time.Now()
		step := d / reportSteps
		for i := 1; i <= reportSteps; i++ {
			if err := sleepCtx(ctx, step); err != nil {
				return nil, err
			}
			t.Progress(i*100/reportSteps, fmt.Sprintf("section %d of %d written", i, reportSteps))
		}
		return map[string]any{
			"report":      "quarterly summary",
			"sections":    reportSteps,
			"duration_ms": time.Since(start).Milliseconds(),
		}, nil
	}
}

// sleepHandler sleeps for the payload's duration_ms (sleepFor).
func sleepHandler(ctx context.Context, t *Task) (any, error) {
	d, err := sleepFor(ctx, t)
	if err != nil {
		return nil, err
	}
	return map[string]int64{"slept_ms": d.Milliseconds()}, nil
}

// sleepFor sleeps for the payload's duration_ms, read as the gateway read
// it (task.DecodeSleep): a payload it refuses fails for good.
func sleepFor(ctx context.Context, t *Task) (time.Duration, error) {
	d, err := task.DecodeSleep(t.Payload)
	if err != nil {
		return 0, Permanent(err)
	}
	return d, sleepCtx(ctx, d)
}

// tallyHandler sleeps as sleepHandler does (sleepFor), then records the run on
// task.ExecStream and returns only once the stream has acknowledged it:
// its one effect is that record, as a real handler's would be its write.
// A run that could not record fails (and is retried), so every run that
// succeeded is on the stream, and a second record of a task is a task
// that ran twice: the count a chaos run reports as executed more than
// once, from the handler's side rather than from the task record.
func tallyHandler(js jetstream.JetStream, workerID string) Handler {
	return func(ctx context.Context, t *Task) (any, error) {
		d, err := sleepFor(ctx, t)
		if err != nil {
			return nil, err
		}
		again, err := task.RecordExec(ctx, js, task.Exec{Task: t.ID, Attempt: t.Attempt, Worker: workerID, At: time.Now().UTC()})
		if err != nil {
			return nil, err
		}
		return map[string]any{"slept_ms": d.Milliseconds(), "ran_before": again}, nil
	}
}

// sleepCtx waits for d or until ctx ends, whichever is first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
