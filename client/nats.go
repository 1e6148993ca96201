package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/strictjson"
	"github.com/scalelab/scalelab/internal/task"
)

// NATSClient submits and follows tasks over NATS, without the HTTP API:
// for programs inside the cluster. It writes and reads the same records
// and messages as the gateway. It is safe for concurrent use.
//
// Its connection's user needs the rights of natsconf's "client" role
// (the tasks bucket, the registry read, publishing tasks and cancel
// notices) and its inbox prefix: connect with
// nats.CustomInboxPrefix("_INBOX.client"). Records carry the owner given
// to NewNATS; unlike the HTTP API's, a NATS client reads and cancels any
// task, as its NATS user may read the whole bucket.
type NATSClient struct {
	nc    *nats.Conn
	owner string

	mu    sync.Mutex // guards the handles below, bound on first use
	js    jetstream.JetStream
	store *task.Store
	kv    jetstream.KeyValue
	reg   *task.Registry

	// resolve checks a submission body and says where its task goes:
	// resolveRegistered for now. Issue #25's registry catalog replaces
	// it at merge with task.Parse, Submission.RunAt and
	// (*task.Catalog).Resolve (which also checks the type's schema), so
	// that a NATS submission is validated exactly as POST /longtask.
	resolve func(ctx context.Context, c *NATSClient, body []byte, now time.Time) (resolved, error)
}

// NewNATS returns a client over nc that submits tasks as owner (the
// records' owner, as a token's subject is over HTTP; "" for none). It
// binds the tasks bucket and the registry on first use, so it needs the
// platform provisioned by then.
func NewNATS(nc *nats.Conn, owner string) *NATSClient {
	return &NATSClient{nc: nc, owner: owner, resolve: resolveRegistered}
}

var _ Tasks = (*NATSClient)(nil)

// resolved is a submission the platform accepts: what its record and
// message carry.
type resolved struct {
	typ, queue  string
	payload     json.RawMessage // the body in canonical form
	runAt       time.Time       // zero: now
	maxAttempts int
	timeoutMS   int64
}

// resolveRegistered is resolve until the registry's catalog
// ((*task.Catalog).Resolve) is wired here: the body in canonical form,
// the type and the queue registered, the type's queue and limits.
// It does not check the payload against the type's schema.
func resolveRegistered(ctx context.Context, c *NATSClient, body []byte, now time.Time) (resolved, error) {
	var head struct {
		Task  string `json:"task"`
		Queue string `json:"queue"`
		RunAt string `json:"run_at"`
		Delay string `json:"delay"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return resolved{}, apperr.Wrap(err, apperr.Invalid, "task body: %v", err)
	}
	payload, err := strictjson.Canonical(body)
	if err != nil {
		return resolved{}, apperr.Wrap(err, apperr.Invalid, "task body: %v", err)
	}
	if len(payload) > task.MaxPayloadBytes {
		return resolved{}, apperr.New(apperr.TooLarge, "task body is over %d bytes", task.MaxPayloadBytes)
	}
	reg, err := c.registry(ctx)
	if err != nil {
		return resolved{}, err
	}
	def, err := reg.Type(ctx, head.Task)
	if errors.Is(err, task.ErrUnknownName) {
		return resolved{}, apperr.New(apperr.Invalid, "unknown task type %q: no worker registered it", head.Task)
	}
	if err != nil {
		return resolved{}, apperr.Wrap(err, apperr.Unavailable, "task registry is not available")
	}
	r := resolved{typ: def.Name, queue: head.Queue, payload: payload, maxAttempts: def.MaxAttempts, timeoutMS: def.TimeoutMS}
	if r.queue == "" {
		r.queue = def.Queue
	}
	if r.queue != "" {
		if _, err := reg.Queue(ctx, r.queue); errors.Is(err, task.ErrUnknownName) {
			return resolved{}, apperr.New(apperr.Invalid, "unknown queue %q", r.queue)
		} else if err != nil {
			return resolved{}, apperr.Wrap(err, apperr.Unavailable, "task registry is not available")
		}
	}
	if r.runAt, err = runAt(head.RunAt, head.Delay, now); err != nil {
		return resolved{}, err
	}
	return r, nil
}

// runAt is when a task whose body says runAtText or delayText asks to
// run, as the gateway reads them (task.Submission.RunAt).
func runAt(runAtText, delayText string, now time.Time) (time.Time, error) {
	var at time.Time
	switch {
	case runAtText != "":
		t, err := time.Parse(time.RFC3339, runAtText)
		if err != nil {
			return time.Time{}, apperr.New(apperr.Invalid, `"run_at" must be an RFC 3339 time such as 2030-01-02T15:04:05Z`)
		}
		at = t
	case delayText != "":
		d, err := time.ParseDuration(delayText)
		if err != nil || d < 0 {
			return time.Time{}, apperr.New(apperr.Invalid, `"delay" must be a duration such as "90s" or "5m"`)
		}
		at = now.Add(d)
	default:
		return time.Time{}, nil
	}
	if at.Sub(now) > task.MaxDelay {
		return time.Time{}, apperr.New(apperr.Invalid, "a task can be scheduled at most %v ahead", task.MaxDelay)
	}
	if !at.After(now) {
		return time.Time{}, nil
	}
	return at.UTC(), nil
}

// bind binds the jetstream context and the tasks bucket, once.
func (c *NATSClient) bind(ctx context.Context) (jetstream.JetStream, *task.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.store != nil {
		return c.js, c.store, nil
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	kv, err := js.KeyValue(ctx, task.Bucket)
	if err != nil {
		return nil, nil, apperr.Wrap(err, apperr.Unavailable, "task store is not available: %v", err)
	}
	c.js, c.kv, c.store = js, kv, task.NewStore(kv)
	return c.js, c.store, nil
}

// registry binds the task-type registry, once.
func (c *NATSClient) registry(ctx context.Context) (*task.Registry, error) {
	js, _, err := c.bind(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg == nil {
		reg, err := task.OpenRegistry(ctx, js)
		if err != nil {
			return nil, apperr.Wrap(err, apperr.Unavailable, "task registry is not available: %v", err)
		}
		c.reg = reg
	}
	return c.reg, nil
}

// Submit creates the task's record (state queued) and publishes it, as
// POST /longtask does (see Tasks). If the publish fails, the record is
// deleted. With WithIdempotencyKey, the task id is derived from the key
// and the owner (unkeyed, unlike the gateway's: in-cluster clients are
// trusted), and a repeat returns the first task, published again while it
// is still queued.
func (c *NATSClient) Submit(ctx context.Context, typ string, payload any, opts ...SubmitOption) (*Task, error) {
	var o submitOptions
	for _, f := range opts {
		f(&o)
	}
	body, err := submissionBody(typ, payload, o)
	if err != nil {
		return nil, err
	}
	js, store, err := c.bind(ctx)
	if err != nil {
		return nil, publicError(err)
	}
	now := time.Now().UTC()
	res, err := c.resolve(ctx, c, body, now)
	if err != nil {
		return nil, publicError(err)
	}
	id := task.NewID()
	if o.idempotencyKey != "" {
		if id, err = c.idempotentID(o.idempotencyKey); err != nil {
			return nil, publicError(err)
		}
	}
	rec := &task.Record{
		ID: id, Type: res.typ, Queue: res.queue, State: task.Queued, Payload: res.payload,
		MaxAttempts: res.maxAttempts, TimeoutMS: res.timeoutMS,
		RequestID: task.NewID(), Owner: c.owner, CreatedAt: now, UpdatedAt: now,
	}
	if !res.runAt.IsZero() {
		rec.RunAt = &res.runAt
	}
	rev, err := store.Create(ctx, rec)
	switch {
	case errors.Is(err, task.ErrExists):
		return c.replay(ctx, js, store, rec)
	case errors.Is(err, task.ErrFull):
		return nil, publicError(apperr.Wrap(err, apperr.Unavailable, "task store is full: try again later"))
	case err != nil:
		return nil, publicError(apperr.Wrap(err, apperr.Unavailable, "task store is not available"))
	}
	if err := enqueue(ctx, js, rec, rev, rec.RequestID); err != nil {
		_ = store.Delete(context.WithoutCancel(ctx), rec.ID) // best effort: the bus may be down
		return nil, publicError(err)
	}
	return toTask(rec)
}

// replay answers a repeated keyed submission, cur, with the record the
// first one stored, publishing it again if it is still queued (its id is
// the message id: a message that did go out is stored once).
func (c *NATSClient) replay(ctx context.Context, js jetstream.JetStream, store *task.Store, cur *task.Record) (*Task, error) {
	prev, rev, err := store.Get(ctx, cur.ID)
	if err != nil {
		return nil, publicError(apperr.Wrap(err, apperr.Unavailable, "task store is not available"))
	}
	if prev.Owner != cur.Owner || string(prev.Payload) != string(cur.Payload) {
		return nil, &Error{Status: 409, Code: string(apperr.Conflict), Message: "the idempotency key was already used with a different payload"}
	}
	if prev.State == task.Queued {
		if err := enqueue(ctx, js, prev, rev, cur.RequestID); err != nil {
			return nil, publicError(err)
		}
	}
	return toTask(prev)
}

// enqueue publishes rec, stored at revision rev, for when it asks to run.
func enqueue(ctx context.Context, js jetstream.JetStream, rec *task.Record, rev uint64, requestID string) error {
	var at time.Time
	if rec.RunAt != nil {
		at = *rec.RunAt
	}
	return task.Enqueue(ctx, js, task.NewEnvelope(rec, rev), requestID, at)
}

// idempotentID is the task id of the owner's submissions with key.
func (c *NATSClient) idempotentID(key string) (string, error) {
	if len(key) == 0 || len(key) > 255 || strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
		return "", apperr.New(apperr.Invalid, "an idempotency key must be 1-255 printable ASCII characters")
	}
	sum := sha256.Sum256([]byte("scalelab-client-idempotency\x00" + c.owner + "\x00" + key))
	return hex.EncodeToString(sum[:task.IDBytes]), nil
}

// Get reads the task's record from the bucket.
func (c *NATSClient) Get(ctx context.Context, id string) (*Task, error) {
	if !task.ValidID(id) {
		return nil, publicError(apperr.New(apperr.Invalid, "task id must be 1-64 letters and digits"))
	}
	_, store, err := c.bind(ctx)
	if err != nil {
		return nil, publicError(err)
	}
	rec, _, err := store.Get(ctx, id)
	if err != nil {
		return nil, publicError(storeError(id, err))
	}
	return toTask(rec)
}

// Wait polls the task's record until it is final (every few milliseconds
// at first, then every 100 ms), or until ctx ends.
func (c *NATSClient) Wait(ctx context.Context, id string) (*Task, error) {
	pause := 2 * time.Millisecond
	for {
		t, err := c.Get(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if t.State.Final() {
			return t, nil
		}
		select {
		case <-ctx.Done():
			return t, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, 100*time.Millisecond)
	}
}

// errFinal stops a cancel of a task that already finished.
var errFinal = errors.New("client: task already final")

// Cancel marks the task cancelled and tells the workers, as DELETE
// /tasks/{id} does: a queued task is dropped by the worker that pulls it,
// a running one has its context cancelled.
func (c *NATSClient) Cancel(ctx context.Context, id string) (*Task, error) {
	if !task.ValidID(id) {
		return nil, publicError(apperr.New(apperr.Invalid, "task id must be 1-64 letters and digits"))
	}
	_, store, err := c.bind(ctx)
	if err != nil {
		return nil, publicError(err)
	}
	var final task.State
	rec, err := store.Update(ctx, id, func(r *task.Record) error {
		if r.State.Terminal() {
			final = r.State
			return errFinal
		}
		now := time.Now().UTC()
		r.State, r.Error, r.FinishedAt = task.Cancelled, "cancelled by client", &now
		return nil
	})
	switch {
	case errors.Is(err, errFinal):
		return nil, publicError(apperr.New(apperr.Conflict, "task %s already %s", id, final))
	case err != nil:
		return nil, publicError(storeError(id, err))
	}
	// The record says cancelled: a worker drops the task when it
	// finishes or pulls it, so the notice only saves time.
	_ = c.nc.Publish(task.CancelSubject(id), nil)
	return toTask(rec)
}

// Filter selects the tasks List returns; a zero field selects any.
type Filter struct {
	Owner string
	Type  string
	Queue string
	State State
	// Limit is the most tasks returned: 100 when 0.
	Limit int
}

// List returns tasks matching f, newest first. It reads every record of
// the tasks bucket, O(records), so it is for scripts and small
// platforms, not for a hot path: issue #26 brings GET /tasks over an
// index. A record deleted or expired while List reads is skipped.
func (c *NATSClient) List(ctx context.Context, f Filter) ([]*Task, error) {
	if _, _, err := c.bind(ctx); err != nil {
		return nil, publicError(err)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	lister, err := c.kv.ListKeys(ctx)
	if err != nil {
		return nil, publicError(apperr.Wrap(err, apperr.Unavailable, "task store is not available"))
	}
	defer func() { _ = lister.Stop() }()
	var out []*Task
	for k := range lister.Keys() {
		e, err := c.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var t Task
		if json.Unmarshal(e.Value(), &t) != nil || !f.match(&t) {
			continue
		}
		out = append(out, &t)
	}
	slices.SortFunc(out, func(a, b *Task) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out[:min(len(out), limit)], nil
}

// match reports whether f selects t.
func (f Filter) match(t *Task) bool {
	queue := t.Queue
	if queue == "" {
		queue = task.DefaultQueue
	}
	return (f.Owner == "" || t.Owner == f.Owner) && (f.Type == "" || t.Type == f.Type) &&
		(f.Queue == "" || queue == f.Queue) && (f.State == "" || t.State == f.State)
}

// storeError is the API error of a failed read or write of task id.
func storeError(id string, err error) error {
	if errors.Is(err, task.ErrNotFound) {
		return apperr.New(apperr.NotFound, "no task %s (it may have expired)", id)
	}
	return apperr.Wrap(err, apperr.Unavailable, "task store is not available")
}

// publicError is err as the *Error the HTTP API would answer: its code,
// status and public message.
func publicError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code, msg := apperr.Public(err)
	if code == apperr.Internal {
		msg = err.Error() // a local failure: the caller's own, no secret
	}
	return &Error{Status: apperr.Status(code), Code: string(code), Message: msg}
}

// toTask is rec as a Task.
func toTask(rec *task.Record) (*Task, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("client: encode task %s: %w", rec.ID, err)
	}
	var t Task
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("client: decode task %s: %w", rec.ID, err)
	}
	return &t, nil
}
