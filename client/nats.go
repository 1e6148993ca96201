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

	mu          sync.Mutex // guards the handles below, bound on first use
	js          jetstream.JetStream
	store       *task.Store
	kv          jetstream.KeyValue
	cat         *task.Catalog
	stopCatalog context.CancelFunc
}

// NewNATS returns a client over nc that submits tasks as owner (the
// records' owner, as a token's subject is over HTTP; "" for none). It
// binds the tasks bucket and the registry on first use, so it needs the
// platform provisioned by then.
func NewNATS(nc *nats.Conn, owner string) *NATSClient {
	return &NATSClient{nc: nc, owner: owner}
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
	uniqueKey   string // task.Resolved.UniqueKey: "" unless the type is unique
}

// resolve checks a submission body exactly as POST /longtask does, with
// the same catalog of the registry (task.Parse, then the type, its queue
// and its schema: task.Catalog.Resolve, then the run time), and says where
// its task goes.
func (c *NATSClient) resolve(ctx context.Context, body []byte, now time.Time) (resolved, error) {
	if len(body) > task.MaxPayloadBytes {
		return resolved{}, apperr.New(apperr.TooLarge, "task body is over %d bytes", task.MaxPayloadBytes)
	}
	sub, err := task.Parse(body)
	if err != nil {
		return resolved{}, invalid(err)
	}
	cat, err := c.catalog(ctx)
	if err != nil {
		return resolved{}, err
	}
	res, err := cat.Resolve(ctx, sub)
	switch {
	case errors.Is(err, task.ErrInvalid):
		return resolved{}, invalid(err)
	case errors.Is(err, task.ErrBadSchema):
		return resolved{}, apperr.Wrap(err, apperr.Unavailable, "task type %s is registered with a schema that does not compile: %v", sub.Type, err)
	case err != nil:
		return resolved{}, apperr.Wrap(err, apperr.Unavailable, "task registry is not available")
	}
	at, err := sub.RunAt(now)
	if err != nil {
		return resolved{}, invalid(err)
	}
	return resolved{
		typ: sub.Type, queue: res.Queue, payload: sub.Payload, runAt: at,
		maxAttempts: res.MaxAttempts, timeoutMS: res.TimeoutMS, uniqueKey: res.UniqueKey(now),
	}, nil
}

// invalid is the 400 of a body that task.Parse, Catalog.Resolve or RunAt
// refused, with the message stripped of its package prefix, as the
// gateway words it.
func invalid(err error) error {
	return apperr.Wrap(err, apperr.Invalid, "%s", strings.TrimPrefix(err.Error(), task.ErrInvalid.Error()+": "))
}

// catalog opens the registry's catalog once: a watch of its bucket, kept
// until Close, so that a submission is checked from memory.
func (c *NATSClient) catalog(ctx context.Context) (*task.Catalog, error) {
	js, _, err := c.bind(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cat == nil {
		// The watch outlives this call: its context ends with Close.
		wctx, cancel := context.WithCancel(context.Background())
		cat, err := task.OpenCatalog(wctx, js)
		if err != nil {
			cancel()
			return nil, apperr.Wrap(err, apperr.Unavailable, "task registry is not available: %v", err)
		}
		c.cat, c.stopCatalog = cat, cancel
	}
	return c.cat, nil
}

// Close stops the client's watch of the task-type registry. The
// connection is the caller's: Close leaves it open.
func (c *NATSClient) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cat != nil {
		c.cat.Stop()
		c.stopCatalog()
		c.cat = nil
	}
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

// Submit creates the task's record (state queued) and publishes it, as
// POST /longtask does (see Tasks). If the publish fails, the record is
// deleted. With WithIdempotencyKey, the task id is derived from the key
// and the owner (unkeyed, unlike the gateway's: in-cluster clients are
// trusted), and a repeat returns the first task, published again while it
// is still queued. A unique type's tasks (worker.WithUnique) are unique
// among the NATS client's submissions of an owner; an HTTP submission by
// the same owner derives its id with the gateway's secret key, so the two
// paths do not find each other's task.
func (c *NATSClient) Submit(ctx context.Context, typ string, payload any, opts ...SubmitOption) (*Task, error) {
	body, o, err := submissionBody(typ, payload, opts)
	if err != nil {
		return nil, err
	}
	js, store, err := c.bind(ctx)
	if err != nil {
		return nil, publicError(err)
	}
	now := time.Now().UTC()
	res, err := c.resolve(ctx, body, now)
	if err != nil {
		return nil, publicError(err)
	}
	id := task.NewID()
	unique := false
	switch {
	case o.idempotencyKey != "":
		if id, err = c.idempotentID(o.idempotencyKey); err != nil {
			return nil, publicError(err)
		}
	case res.uniqueKey != "":
		// A unique type (task.Unique): the key's id, as the gateway's,
		// per owner; it starts with a NUL, so no idempotency key gives it.
		id, unique = c.keyID(res.uniqueKey), true
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
		return c.replay(ctx, js, store, rec, unique)
	case errors.Is(err, task.ErrFull):
		return nil, publicError(apperr.Wrap(err, apperr.StoreFull, "task store is full: try again later"))
	case errors.Is(err, task.ErrNoSpace):
		return nil, publicError(apperr.Wrap(err, apperr.StoreFull, task.NoSpaceMessage))
	case err != nil:
		return nil, publicError(apperr.Wrap(err, apperr.Unavailable, "task store is not available"))
	}
	if err := enqueue(ctx, js, rec, rev, rec.RequestID); err != nil {
		// Only a refused message is undone: one whose publish timed out
		// may be stored and run, as the gateway's (gateway/submit.go).
		if task.Refused(err) {
			_ = store.Delete(context.WithoutCancel(ctx), rec.ID) // best effort: the bus may be down
		}
		return nil, publicError(err)
	}
	return toTask(rec)
}

// replay answers a repeated keyed submission, cur, with the record the
// first one stored, publishing it again if it is still queued (its id is
// the message id: a message that did go out is stored once).
//
// A unique task's repeat (unique) may differ from the first in the members
// its type does not compare: it is no conflict.
func (c *NATSClient) replay(ctx context.Context, js jetstream.JetStream, store *task.Store, cur *task.Record, unique bool) (*Task, error) {
	prev, rev, err := store.Get(ctx, cur.ID)
	if err != nil {
		return nil, publicError(apperr.Wrap(err, apperr.Unavailable, "task store is not available"))
	}
	if prev.Owner != cur.Owner || (!unique && string(prev.Payload) != string(cur.Payload)) {
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
	return c.keyID(key), nil
}

// keyID is the task id of the owner's submissions with key.
func (c *NATSClient) keyID(key string) string {
	sum := sha256.Sum256([]byte("scalelab-client-idempotency\x00" + c.owner + "\x00" + key))
	return hex.EncodeToString(sum[:task.IDBytes])
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
	var last *Task
	for {
		t, err := c.Get(ctx, id)
		if err != nil {
			// ctx may end in the middle of a read: the record of the
			// read before is still the one the caller asked for.
			if ctx.Err() != nil {
				return last, ctx.Err()
			}
			return last, err
		}
		last = t
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
	rec, err := task.MarkCancelled(ctx, store, id, nil)
	var final *task.FinalError
	switch {
	case errors.As(err, &final):
		return nil, publicError(apperr.Wrap(err, apperr.Conflict, "%s", final))
	case err != nil:
		return nil, publicError(storeError(id, err))
	}
	// The record says cancelled: a worker drops the task when it
	// finishes or pulls it, so the notice only saves time.
	_ = c.nc.Publish(task.CancelSubject(id), nil)
	return toTask(rec)
}

// Filter selects the tasks NATSClient.List returns; a zero field selects
// any. (HTTPClient.List takes ListOptions, which also page.)
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
// platforms, not for a hot path: HTTPClient.List pages GET /tasks over
// the gateway's index. A record deleted or expired while List reads is
// skipped.
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
