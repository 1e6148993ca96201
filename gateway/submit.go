package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/strictjson"
	"github.com/scalelab/scalelab/internal/task"
)

// idempotencyHeader names the header that makes a submission (POST
// /longtask) or a create (POST /items) repeatable.
const idempotencyHeader = "Idempotency-Key"

// idempotencyHeaderAlt is its older name, read when idempotencyHeader is
// absent.
const idempotencyHeaderAlt = "X-Idempotency-Key"

// replayedHeader marks the answer to a repeated keyed request: the task
// (POST /longtask) or item (POST /items) is the one the first request
// created.
const replayedHeader = "Idempotent-Replayed"

// uniqueDuplicateHeader marks the answer to a submission of a unique task
// type (task.TypeDef.Unique) that matched one made in the same window: the
// task id is the first's.
const uniqueDuplicateHeader = "Scalelab-Unique-Duplicate"

// handleSubmitTask is the lab's /longtask: validate, record, enqueue, 202.
// The record is created before the message is published, so a worker never
// sees a task without a record.
//
// The record's owner is the token's subject: only that subject (or
// tasks:admin) sees or cancels the task. Its id is task.NewID's 128 random
// bits. With an Idempotency-Key header, the id is instead a keyed hash of
// the key and the subject (idempotentID with idKey), so a repeat (same
// key, same body) returns the same task instead of a new one for as long
// as the record is kept; a reused key with a different body is a 409.
// Bodies are compared in canonical form (task.Parse), so a repeat that
// differs only in whitespace, member order or string escapes is the same.
//
// The record stores that canonical form, not the client's bytes: what the
// worker reads is what task.Parse validated.
//
// The body's type must be registered and its payload valid against the
// type's schema (task.Catalog.Resolve, against the registry as the catalog
// watches it). A task of a unique type without an Idempotency-Key gets the
// id of its unique key (task.Resolved.UniqueKey) the same way, so a second
// submission in the window finds the first's record: it answers that id,
// with uniqueDuplicateHeader, and publishes nothing unless that task is
// still queued (replay).
func handleSubmitTask(store TaskStore, queue TaskQueue, catalog *task.Catalog, idKey []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		s, err := newSubmission(c, catalog, idKey)
		if err != nil {
			return err
		}
		ctx := c.Request().Context()
		rev, err := s.create(ctx, store)
		switch {
		case errors.Is(err, task.ErrExists):
			id, err := s.replay(ctx, store, queue)
			if err != nil {
				return err
			}
			if s.unique {
				c.Response().Header().Set(uniqueDuplicateHeader, "true")
			} else {
				c.Response().Header().Set(replayedHeader, "true")
			}
			return s.accepted(c, store, id)
		case err != nil:
			return err
		}
		if err := s.publish(ctx, store, queue, rev); err != nil {
			return err
		}
		return s.accepted(c, store, s.rec.ID)
	}
}

// submission is one POST /longtask, validated: the record it asks for and
// how long the client waits for the answer. Its methods are the steps of
// handleSubmitTask, in order.
type submission struct {
	rec  *task.Record  // the record to create, under its final id
	wait time.Duration // ?wait=: 0 answers 202 at once
	// unique: the id is the type's unique key's (no Idempotency-Key), so
	// a record already under it is the same task, whatever its body.
	unique bool
}

// newSubmission reads and validates the request: the task body against
// the registry (its type, queue and schema), ?wait=, the run time and the
// Idempotency-Key. Its errors are invalid (400), except a body over the
// limit (echo's 413), a registry that does not answer and a type
// registered with a schema that does not compile (503: resolveError).
func newSubmission(c echo.Context, catalog *task.Catalog, idKey []byte) (*submission, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return nil, err // body limit: echo's 413
	}
	sub, err := task.Parse(body)
	if err != nil {
		return nil, invalidTask(err)
	}
	resolved, err := catalog.Resolve(c.Request().Context(), sub)
	if err != nil {
		return nil, resolveError(c.Response().Header(), sub.Type, err)
	}
	wait, err := taskWait(c)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	runAt, err := sub.RunAt(now)
	if err != nil {
		return nil, invalidTask(err)
	}
	owner := claimsOf(c).Subject
	id, unique, err := submissionID(c, idKey, owner, resolved.UniqueKey(now))
	if err != nil {
		return nil, err
	}
	s := &submission{wait: wait, unique: unique, rec: &task.Record{
		ID: id, Type: sub.Type, Queue: resolved.Queue, State: task.Queued, Payload: sub.Payload,
		MaxAttempts: resolved.MaxAttempts, TimeoutMS: resolved.TimeoutMS,
		RequestID: requestID(c), Owner: owner, CreatedAt: now, UpdatedAt: now,
	}}
	if !runAt.IsZero() {
		s.rec.RunAt = &runAt
	}
	return s, nil
}

// submissionID is the id of a new task of owner: random, or, with an
// Idempotency-Key, derived from the key and the owner so that a repeat
// finds the first submission's record; else, for a unique type
// (uniqueKey, task.Resolved.UniqueKey, not ""), derived from uniqueKey
// and the owner the same way, so that a submission with the same key finds
// the first's record (unique is then true). An Idempotency-Key wins: the
// client asked for that repeat, by name.
//
// A unique task is unique per owner: the owner is part of the hash, as for
// an Idempotency-Key. Were it not, a second user submitting the same
// payload would be answered with the first user's task id, which tells
// them that somebody submitted it, and when; the record itself stays
// hidden (visibleTo), but the id alone leaks. Across users, two tasks run.
func submissionID(c echo.Context, idKey []byte, owner, uniqueKey string) (id string, unique bool, err error) {
	id, err = idempotencyID(c, idKey, owner)
	switch {
	case err != nil || id != "":
		return id, false, err
	case uniqueKey != "":
		// uniqueKey starts with a NUL, which no Idempotency-Key holds: the
		// two never give the same id.
		return idempotentID(idKey, owner, uniqueKey), true, nil
	}
	return task.NewID(), false, nil
}

// idempotencyID reads the request's Idempotency-Key: "" without one, a 400
// (invalid) for one validIdempotencyKey refuses, else the key's
// idempotentID for subject under idKey, so that the subject's repeat finds
// what the first request stored, and another subject's same key does not.
// POST /longtask and POST /items read the header with it.
func idempotencyID(c echo.Context, idKey []byte, subject string) (string, error) {
	key := c.Request().Header.Get(idempotencyHeader)
	// The older X-Idempotency-Key is honoured too: the balancer retries a
	// POST that carries either (balancer.isIdempotent), so a key the
	// gateway ignored would let a retry run the request twice.
	switch alt := c.Request().Header.Get(idempotencyHeaderAlt); {
	case key == "":
		key = alt
	case alt != "" && alt != key:
		return "", apperr.New(apperr.Invalid, "%s and %s differ: send one", idempotencyHeader, idempotencyHeaderAlt)
	}
	if key == "" {
		return "", nil
	}
	if !validIdempotencyKey(key) {
		return "", apperr.New(apperr.Invalid, "%s must be 1-255 printable ASCII characters", idempotencyHeader)
	}
	return idempotentID(idKey, subject, key), nil
}

// create stores the record and returns its revision. A record already
// stored under its id (a repeated keyed submission) is task.ErrExists,
// unwrapped, for replay; a full tasks bucket or JetStream store is
// store_full (503), any other failure unavailable (503).
func (s *submission) create(ctx context.Context, store TaskStore) (uint64, error) {
	rev, err := store.Create(ctx, s.rec)
	switch {
	case err == nil, errors.Is(err, task.ErrExists):
		return rev, err
	case errors.Is(err, task.ErrFull):
		// Refused before anything is stored or queued: the client
		// gets no task id, and no task is lost.
		return 0, apperr.Wrap(err, apperr.StoreFull, "task store is full: the tasks bucket holds its limit of task records (--max-task-bytes); try again later")
	case errors.Is(err, task.ErrNoSpace):
		return 0, apperr.Wrap(err, apperr.StoreFull, task.NoSpaceMessage)
	default:
		return 0, taskStoreDown(err)
	}
}

// replay answers a repeated keyed submission with the id of the record the
// first one stored, publishing it again if it is still queued. A record of
// another owner or with another body is a 409, except for a unique task
// (s.unique), whose duplicate may differ in the members its type does not
// compare: it is the first task all the same.
func (s *submission) replay(ctx context.Context, store TaskStore, queue TaskQueue) (string, error) {
	prev, prevRev, err := store.Get(ctx, s.rec.ID)
	if err != nil {
		return "", taskStoreDown(err)
	}
	// The owner check is for a record without an owner (written before
	// owners existed, under the old unkeyed id); another subject's key
	// gives another id. Answered like a reused key: no more is said about
	// a task that is not the caller's.
	if prev.Owner != s.rec.Owner || (!s.unique && !samePayload(prev.Payload, s.rec.Payload)) {
		return "", apperr.New(apperr.Conflict, "%s was already used with a different body", idempotencyHeader)
	}
	if prev.State == task.Queued {
		// The first submission may have stored the record and failed
		// before its message went out: its Create timed out while the
		// store did write it (a NATS failover), and the client retried.
		// Publishing again is safe: the task id is the Nats-Msg-Id, so a
		// message that did go out within the dedupe window is stored once;
		// past it, the worker drops a delivery of a task that already
		// finished.
		if err := s.enqueue(ctx, queue, prev, prevRev); err != nil {
			return "", err
		}
	}
	return prev.ID, nil
}

// publish queues the new record, stored at revision rev. If the stream
// refused the message (task.Refused) the record is deleted: the client
// gets no task id with the error, so nobody polls it, and a retry with
// the same key can submit again. If the publish's outcome is unknown (it
// timed out: the server may have stored the message and lost its ack in a
// failover), the record stays: that task may run, and deleting its record
// let a keyed retry store a new "queued" record whose message the stream
// dropped as a duplicate, so it stayed queued forever (the compose drill
// saw it, a NATS node stopped under load). A retry with the same key then
// replays the record, publishing it again; a client without a key gets
// the error, and a record queued with no message is left behind.
func (s *submission) publish(ctx context.Context, store TaskStore, queue TaskQueue, rev uint64) error {
	err := s.enqueue(ctx, queue, s.rec, rev)
	if err != nil && task.Refused(err) {
		// Best effort: the bus may be down.
		_ = store.Delete(context.WithoutCancel(ctx), s.rec.ID)
	}
	return err
}

// enqueue publishes the message of rec, stored at revision rev, for when
// it asks to run. rec is s.rec or, on a replay, the record the first
// submission stored; the message carries this request's id either way.
func (s *submission) enqueue(ctx context.Context, queue TaskQueue, rec *task.Record, rev uint64) error {
	var runAt time.Time
	if rec.RunAt != nil {
		runAt = *rec.RunAt
	}
	return queue.Enqueue(ctx, envelope(rec, rev), s.rec.RequestID, runAt)
}

// accepted answers 202 with where to look for task id, or, with ?wait=,
// the final record if the task finishes in time (the synchronous way to
// run a task, for clients and benchmarks that compare the two).
func (s *submission) accepted(c echo.Context, store TaskStore, id string) error {
	type response struct {
		Status    string `json:"status"`
		TaskID    string `json:"task_id"`
		StatusURL string `json:"status_url"`
	}
	url := "/tasks/" + id
	c.Response().Header().Set(echo.HeaderLocation, url)
	if s.wait > 0 {
		owner := s.rec.Owner
		rec, err := awaitFinal(c.Request().Context(), store, id, s.wait, func(r *task.Record) bool { return r.Owner == owner })
		if err == nil && rec.State.Terminal() {
			return c.JSON(http.StatusOK, rec)
		}
	}
	return c.JSON(http.StatusAccepted, response{Status: "Task queued", TaskID: id, StatusURL: url})
}

// envelope returns the message that queues rec, stored at revision rev.
func envelope(rec *task.Record, rev uint64) task.Envelope {
	env := task.Envelope{ID: rec.ID, Type: rec.Type, Queue: rec.Queue, Payload: rec.Payload}
	if len(rec.Payload) <= task.MaxInlinePayload {
		env.Record, env.Revision = rec, rev // the worker then needs not read it
	}
	return env
}

// validIdempotencyKey accepts 1-255 printable ASCII characters.
func validIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 255 {
		return false
	}
	for i := range len(k) {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// invalidTask is the 400 of a task body that task.Parse, task.RunAt or
// task.Catalog.Resolve refused, with the message stripped of its package
// prefix.
func invalidTask(err error) error {
	return apperr.Wrap(err, apperr.Invalid, "%s", strings.TrimPrefix(err.Error(), task.ErrInvalid.Error()+": "))
}

// badSchemaRetryAfter is the Retry-After of a submission refused because
// its type's schema does not compile: until a worker registers a valid
// one, which is a deploy, not a blip.
const badSchemaRetryAfter = "30"

// resolveError answers a submission of type typ that the catalog did not
// resolve: the body's fault is a 400 (invalidTask). A schema that does not
// compile is the fault of the worker that registered it, not of the
// client: the type is unavailable until a worker registers a valid one, a
// 503 that says so (with a Retry-After of badSchemaRetryAfter, set on h),
// logged in full; not a 500, whose message the client never sees, nor a
// 400, which would blame a body nobody can fix. Anything else is the
// registry's bucket not answering: 503.
func resolveError(h http.Header, typ string, err error) error {
	switch {
	case errors.Is(err, task.ErrInvalid):
		return invalidTask(err)
	case errors.Is(err, task.ErrBadSchema):
		h.Set("Retry-After", badSchemaRetryAfter)
		return apperr.Wrap(err, apperr.Unavailable, "task type %q is registered with an invalid JSON Schema: it takes no tasks until its workers register a valid one", typ)
	}
	return apperr.Wrap(err, apperr.Unavailable, "task registry is not available")
}

// samePayload reports whether a repeated keyed submission's payload, cur
// (canonical: task.Parse), is the one the first submission stored, prev.
// prev is canonicalized too: a record stored before payloads were
// canonical holds the client's bytes, compacted, and its repeat is no
// conflict for a difference of member order.
func samePayload(prev, cur json.RawMessage) bool {
	canon, err := strictjson.Canonical(prev)
	return err == nil && bytes.Equal(canon, cur)
}
