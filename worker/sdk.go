package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/task"
)

// Worker runs the task types a program registers with Handle, against any
// scalelab NATS (`scalelab up`, or the compose stack's cluster), with the
// guarantees of the built-in types: at-least-once delivery, retries with
// back-off, the dead-letter queue, progress, cancel, heartbeats, a timeout
// and a record of every attempt. The worker role is a Worker serving the
// built-in types.
//
// A handler may run more than once for one task (at-least-once): make it
// safe to repeat.
type Worker struct {
	nc       *nats.Conn
	cfg      Config
	handlers map[string]Handler
	types    []task.TypeDef
	// builtin marks the worker role: it also serves the process service.
	builtin bool
	// started is set by Run: the handlers are fixed from then on.
	started atomic.Bool
}

// New returns a Worker that will connect through nc, a connection as a
// NATS user with the worker's rights (natsconf's "worker" user). Zero
// fields of cfg take DefaultConfig's values; an empty ID becomes the host
// name and a random suffix.
func New(nc *nats.Conn, cfg Config) *Worker {
	d := DefaultConfig()
	cfg.Concurrency = or(cfg.Concurrency, d.Concurrency)
	cfg.AckWait = or(cfg.AckWait, d.AckWait)
	cfg.MaxAttempts = or(cfg.MaxAttempts, d.MaxAttempts)
	cfg.TaskTimeout = or(cfg.TaskTimeout, d.TaskTimeout)
	cfg.RetryDelay = or(cfg.RetryDelay, d.RetryDelay)
	cfg.ReportDuration = or(cfg.ReportDuration, d.ReportDuration)
	cfg.ShutdownTimeout = or(cfg.ShutdownTimeout, d.ShutdownTimeout)
	if cfg.Provision == (task.ProvisionConfig{}) {
		cfg.Provision = d.Provision
	}
	if cfg.ID == "" {
		cfg.ID = defaultID()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Worker{nc: nc, cfg: cfg, handlers: map[string]Handler{}}
}

// or returns v, or def when v is the zero value.
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// defaultID is the host name and 4 random bytes: unique among the workers
// of a host, and readable in logs and task records.
func defaultID() string {
	host, err := os.Hostname()
	if err != nil || !task.ValidName(host) {
		host = "worker"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// TypeOption sets a property of a task type registered with Handle.
type TypeOption func(*task.TypeDef)

// WithSchema sets the JSON Schema of the type's payload: the gateway
// refuses a submission whose payload (the body without "task", "queue",
// "run_at" and "delay") it does not accept, with a 400 naming the field.
func WithSchema(schema json.RawMessage) TypeOption {
	return func(d *task.TypeDef) { d.Schema = schema }
}

// WithQueue sets the queue of the type's tasks whose submission names none.
func WithQueue(queue string) TypeOption { return func(d *task.TypeDef) { d.Queue = queue } }

// WithMaxAttempts sets how many times a task of the type runs before it is
// dead (moved to the dead-letter queue).
func WithMaxAttempts(n int) TypeOption { return func(d *task.TypeDef) { d.MaxAttempts = n } }

// WithTimeout sets how long one attempt of the type may run before its
// context is cancelled.
func WithTimeout(t time.Duration) TypeOption {
	return func(d *task.TypeDef) { d.TimeoutMS = t.Milliseconds() }
}

// WithDescription sets the type's description, shown by GET /task-types.
func WithDescription(s string) TypeOption { return func(d *task.TypeDef) { d.Description = s } }

// WithUnique makes the type's tasks unique within window: a submission
// whose payload members keys (all of them, with none) equal those of a
// task submitted in the same window returns that task's id instead of a
// new task. Windows are aligned to multiples of window since the Unix
// epoch.
func WithUnique(window time.Duration, keys ...string) TypeOption {
	return func(d *task.TypeDef) { d.Unique = &task.Unique{Keys: keys, WindowMS: window.Milliseconds()} }
}

// Handle registers h for tasks of type typ, and announces the type, with
// its options, to the task-type registry when Run starts: from then on the
// gateway accepts submissions of it. It panics, as http.Handle does, on a
// name that is not 1-64 letters, digits, '_' or '-', on options that do
// not validate, on a type registered twice, and after Run has started.
func (w *Worker) Handle(typ string, h Handler, opts ...TypeOption) {
	d := task.TypeDef{Name: typ}
	for _, o := range opts {
		o(&d)
	}
	w.handle(d, h)
}

func (w *Worker) handle(d task.TypeDef, h Handler) {
	if w.started.Load() {
		panic(fmt.Sprintf("worker: Handle(%q) after Run: register every type before Run", d.Name))
	}
	if err := d.Validate(); err != nil {
		panic(fmt.Sprintf("worker: Handle(%q): %v", d.Name, strings.TrimPrefix(err.Error(), task.ErrInvalid.Error()+": ")))
	}
	if h == nil {
		panic(fmt.Sprintf("worker: Handle(%q): nil handler", d.Name))
	}
	if _, dup := w.handlers[d.Name]; dup {
		// The worker role's test handlers replace built-ins of the same name.
		if !w.builtin {
			panic(fmt.Sprintf("worker: Handle(%q): type registered twice", d.Name))
		}
		w.types = slices.DeleteFunc(w.types, func(t task.TypeDef) bool { return t.Name == d.Name })
	}
	w.handlers[d.Name] = h
	w.types = append(w.types, d)
}

// HandleJSON registers fn for tasks of type typ whose payload decodes into
// a T (encoding/json; members T does not name, such as "task", are
// ignored). A payload that does not decode fails the task for good: no
// retry would decode it.
func HandleJSON[T any](w *Worker, typ string, fn func(ctx context.Context, t *Task, payload T) (any, error), opts ...TypeOption) {
	w.Handle(typ, func(ctx context.Context, t *Task) (any, error) {
		var p T
		if err := json.Unmarshal(t.Payload, &p); err != nil {
			return nil, Permanent(fmt.Errorf("payload of %s task: %w", typ, err))
		}
		return fn(ctx, t, p)
	}, opts...)
}

// register announces the types and queues this worker serves to the
// registry.
func (w *Worker) register(ctx context.Context, reg *task.Registry, queues []Queue) error {
	for _, q := range queues {
		if err := reg.PutQueue(ctx, q.Name); err != nil {
			return err
		}
	}
	for _, d := range w.types {
		if err := reg.PutType(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// info is what this worker announces about itself.
func (w *Worker) info(started time.Time, queues []Queue) task.WorkerInfo {
	types := make([]string, 0, len(w.types))
	for _, d := range w.types {
		types = append(types, d.Name)
	}
	slices.Sort(types)
	return task.WorkerInfo{
		ID: w.cfg.ID, Types: types, Queues: queueNames(queues), Concurrency: w.cfg.Concurrency,
		SDK: "go", StartedAt: started,
	}
}

// announce writes this worker's WorkerInfo every task.AnnounceEvery until
// ctx ends, then retires it, so GET /task-types counts it among the live
// workers exactly while it runs. A failed write is logged and tried again
// at the next tick: the registry is advisory, tasks flow without it.
func (w *Worker) announce(ctx context.Context, reg *task.Registry, queues []Queue, log *slog.Logger) error {
	info := w.info(time.Now().UTC(), queues)
	t := time.NewTicker(task.AnnounceEvery)
	defer t.Stop()
	for {
		if err := reg.Announce(ctx, info); err != nil && ctx.Err() == nil {
			log.Warn("announce worker", "err", err)
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
			defer cancel()
			if err := reg.Retire(rctx, w.cfg.ID); err != nil {
				log.Warn("retire worker", "err", err)
			}
			return nil
		case <-t.C:
		}
	}
}
