package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/scalelab/scalelab/internal/task"
)

// Tasks is what both clients do: submit a task, read it, wait for it to
// finish and cancel it. *HTTPClient (New) and *NATSClient (NewNATS)
// implement it.
type Tasks interface {
	// Submit queues a task of type typ with payload, a value that
	// encodes as a JSON object (or nil for none), and returns it as
	// accepted: its ID, Type and State. The payload's members may not be
	// the reserved "task", "queue", "run_at" or "delay": they are the
	// options.
	Submit(ctx context.Context, typ string, payload any, opts ...SubmitOption) (*Task, error)
	// Get returns the task's record as it is now.
	Get(ctx context.Context, id string) (*Task, error)
	// Wait returns the task's record once it is final (State.Final), or
	// ctx's error with the last record read when ctx ends first.
	Wait(ctx context.Context, id string) (*Task, error)
	// Cancel cancels a queued or running task and returns its record,
	// now cancelled. Cancelling a finished task is a 409 (*Error, Code
	// "conflict").
	Cancel(ctx context.Context, id string) (*Task, error)
}

// State is where a task is in its life.
type State string

// The states of a task (docs/TASKS-WIRE.md).
const (
	Queued    State = "queued"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
	Dead      State = "dead"
	Cancelled State = "cancelled"
)

// Final reports whether s is an end state: a task in it never runs again.
func (s State) Final() bool {
	switch s {
	case Succeeded, Failed, Dead, Cancelled:
		return true
	}
	return false
}

// Task is a task's record, as GET /tasks/{id} answers it.
type Task struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	Queue string `json:"queue,omitempty"`
	State State  `json:"state"`
	// Attempts is how many runs of the task have started; MaxAttempts
	// and TimeoutMS are its type's limits, when its type sets them.
	Attempts        int             `json:"attempts"`
	MaxAttempts     int             `json:"max_attempts,omitempty"`
	TimeoutMS       int64           `json:"timeout_ms,omitempty"`
	Progress        int             `json:"progress"`
	ProgressMessage string          `json:"progress_message,omitempty"`
	Payload         json.RawMessage `json:"payload,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	Error           string          `json:"error,omitempty"`
	Worker          string          `json:"worker,omitempty"`
	RequestID       string          `json:"request_id,omitempty"`
	Owner           string          `json:"owner,omitempty"`
	// Generation counts the times the task was queued again after it
	// ended (Retry): 0 until its first retry.
	Generation int        `json:"generation,omitempty"`
	RunAt      *time.Time `json:"run_at,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// DecodeResult decodes the task's result into v.
func (t *Task) DecodeResult(v any) error {
	if len(t.Result) == 0 {
		return fmt.Errorf("client: task %s has no result (state %s)", t.ID, t.State)
	}
	return json.Unmarshal(t.Result, v)
}

// Error is an error the platform answered: the HTTP status and the body
// {"error":{"code","message"}}. Code is one of the API's codes: invalid
// (400), unauthorized (401), forbidden (403), not_found (404), conflict
// (409), too_large (413), rate_limited (429), unavailable (503),
// store_full (503: a submission refused because the task store or its disk
// is full; nothing was stored, retry after Retry-After), ...
type Error struct {
	Status  int
	Code    string
	Message string
	// RequestID is the id of the request that failed, when the platform
	// said it (the X-Request-ID of its logs).
	RequestID string
}

// Error returns the code and the message.
func (e *Error) Error() string {
	return fmt.Sprintf("scalelab: %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is a *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// SubmitOption sets an option of one submission.
type SubmitOption func(*submitOptions)

// submitOptions are a submission's options.
type submitOptions struct {
	queue          string
	delay          time.Duration
	runAt          time.Time
	idempotencyKey string
}

// WithQueue puts the task on queue instead of its type's (or "default").
func WithQueue(queue string) SubmitOption { return func(o *submitOptions) { o.queue = queue } }

// WithDelay runs the task d from now (at most 7 days ahead).
func WithDelay(d time.Duration) SubmitOption { return func(o *submitOptions) { o.delay = d } }

// WithRunAt runs the task at t (at most 7 days ahead). A time not after
// now runs it now.
func WithRunAt(t time.Time) SubmitOption { return func(o *submitOptions) { o.runAt = t } }

// WithIdempotencyKey makes the submission repeatable: a repeat with the
// same key and payload returns the first submission's task instead of
// queuing another; the same key with another payload is a 409. Keys are
// 1-255 printable ASCII characters. Over HTTP it is the Idempotency-Key
// header.
func WithIdempotencyKey(key string) SubmitOption {
	return func(o *submitOptions) { o.idempotencyKey = key }
}

// submissionBody is the POST /longtask body of a task of type typ with
// payload and the options opts (its queue and time), and those options.
func submissionBody(typ string, payload any, opts []SubmitOption) ([]byte, submitOptions, error) {
	var o submitOptions
	for _, f := range opts {
		f(&o)
	}
	b, err := encodeSubmission(typ, payload, o)
	return b, o, err
}

// encodeSubmission is the body {"task":typ, <payload's members>, ...} of
// a typ task with payload under options o. The payload may not have the
// members that are options (task.Reserved).
func encodeSubmission(typ string, payload any, o submitOptions) ([]byte, error) {
	members := map[string]json.RawMessage{}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("client: encode payload of %s task: %w", typ, err)
		}
		if string(b) != "null" {
			if err := json.Unmarshal(b, &members); err != nil {
				return nil, fmt.Errorf("client: the payload of a %s task must encode as a JSON object: %w", typ, err)
			}
		}
	}
	for _, k := range task.Reserved {
		if _, ok := members[k]; ok {
			return nil, fmt.Errorf("client: the payload of a %s task has member %q, which is reserved: use the options", typ, k)
		}
	}
	set := func(k string, v any) {
		b, _ := json.Marshal(v) // strings: never fails
		members[k] = b
	}
	set("task", typ)
	if o.queue != "" {
		set("queue", o.queue)
	}
	switch {
	case o.delay != 0 && !o.runAt.IsZero():
		return nil, fmt.Errorf("client: give WithDelay or WithRunAt, not both")
	case o.delay != 0:
		set("delay", o.delay.String())
	case !o.runAt.IsZero():
		set("run_at", o.runAt.UTC().Format(time.RFC3339))
	}
	return json.Marshal(members)
}
