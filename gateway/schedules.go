package gateway

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/strictjson"
	"github.com/scalelab/scalelab/internal/task"
)

// The server's message-scheduling headers (nats-server's stream.go):
// the schedule, its target and zone on a schedule message, and on each
// tick the schedule it came from and when it fires next.
const (
	hdrSchedule         = "Nats-Schedule"
	hdrScheduleTarget   = "Nats-Schedule-Target"
	hdrScheduleTimeZone = "Nats-Schedule-Time-Zone"
	hdrScheduleTTL      = "Nats-Schedule-TTL"
	hdrScheduler        = "Nats-Scheduler"
	hdrScheduleNext     = "Nats-Schedule-Next"
)

// scheduleBook reads and writes the schedules: one message per schedule on
// task.ScheduleDefSubject in the stream task.ScheduleStream. The stream
// is admin's to provision; the book binds to it on first use.
type scheduleBook struct {
	js      jetstream.JetStream
	catalog *task.Catalog // checks a schedule's task as a submission

	mu     sync.Mutex
	stream jetstream.Stream // bound on first use
}

// newScheduleBook returns the book of the schedules over nc.
func newScheduleBook(nc *nats.Conn, catalog *task.Catalog) *scheduleBook {
	js, _ := jetstream.New(nc) // fails only on bad options
	return &scheduleBook{js: js, catalog: catalog}
}

// bind returns the stream, looking it up the first time.
func (b *scheduleBook) bind(ctx context.Context) (jetstream.Stream, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stream != nil {
		return b.stream, nil
	}
	s, err := b.js.Stream(ctx, task.ScheduleStream)
	if err != nil {
		return nil, scheduleStoreDown(err)
	}
	b.stream = s
	return s, nil
}

// storedSchedule is a schedule as read from its message: the record, the
// message's sequence and the time the server stored it.
type storedSchedule struct {
	task.Schedule
	seq      uint64
	storedAt time.Time
}

// errNoSchedule is a schedule id with no schedule: never made, deleted,
// or another subject's.
var errNoSchedule = errors.New("gateway: no such schedule")

// get reads schedule id. It returns errNoSchedule when there is none (a
// deleted schedule's subject holds a marker without Nats-Schedule).
func (b *scheduleBook) get(ctx context.Context, id string) (*storedSchedule, error) {
	s, err := b.bind(ctx)
	if err != nil {
		return nil, err
	}
	m, err := s.GetLastMsgForSubject(ctx, task.ScheduleDefSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, errNoSchedule
	}
	if err != nil {
		return nil, scheduleStoreDown(err)
	}
	if m.Header.Get(hdrSchedule) == "" {
		return nil, errNoSchedule
	}
	var sc task.Schedule
	if err := json.Unmarshal(m.Data, &sc); err != nil || sc.ID != id {
		return nil, errNoSchedule // not ours: nothing to show
	}
	return &storedSchedule{Schedule: sc, seq: m.Sequence, storedAt: m.Time}, nil
}

// MaxSchedulesPerOwner bounds the schedules of one token subject. Each
// schedule makes tasks on its own, forever: without a bound, one user
// could have the platform make thousands of tasks a second from requests
// it sent once.
const MaxSchedulesPerOwner = 100

// checkQuota refuses (429) the new schedule sc when its owner already has
// MaxSchedulesPerOwner schedules; a keyed repeat of one
// of them (it exists under sc's id) is no new schedule. Two gateways
// creating at the same moment may let an owner pass the bound by one
// each: it bounds the load, not a count.
func (b *scheduleBook) checkQuota(ctx context.Context, sc *task.Schedule) error {
	all, err := b.list(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, s := range all {
		if s.ID == sc.ID {
			return nil // a repeat: answered by replaySchedule
		}
		if s.Owner == sc.Owner {
			n++
		}
	}
	if n >= MaxSchedulesPerOwner {
		return apperr.New(apperr.RateLimited, "%s has %d schedules, the most one owner may have: delete one first", sc.Owner, n)
	}
	return nil
}

// list reads every schedule, oldest first.
func (b *scheduleBook) list(ctx context.Context) ([]*storedSchedule, error) {
	s, err := b.bind(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(task.ScheduleDefPrefix+"*"))
	if err != nil {
		return nil, scheduleStoreDown(err)
	}
	var out []*storedSchedule
	for subj := range info.State.Subjects {
		sc, err := b.get(ctx, strings.TrimPrefix(subj, task.ScheduleDefPrefix))
		if errors.Is(err, errNoSchedule) {
			continue // deleted: its marker, until it expires
		}
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b *storedSchedule) int { return cmp.Compare(a.seq, b.seq) })
	return out, nil
}

// create stores sc as a schedule message: the server fires it from then
// on. The subject must be empty (a fresh id).
func (b *scheduleBook) create(ctx context.Context, sc *task.Schedule) (*storedSchedule, error) {
	data, err := json.Marshal(sc)
	if err != nil {
		return nil, fmt.Errorf("encode schedule %s: %w", sc.ID, err)
	}
	msg := nats.NewMsg(task.ScheduleDefSubject(sc.ID))
	msg.Data = data
	msg.Header.Set(hdrSchedule, sc.Spec)
	msg.Header.Set(hdrScheduleTarget, task.ScheduleFireSubject(sc.ID))
	msg.Header.Set(hdrScheduleTTL, task.ScheduleTickTTL.String())
	if sc.TimeZone != "" {
		msg.Header.Set(hdrScheduleTimeZone, sc.TimeZone)
	}
	ack, err := b.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(task.ScheduleStream), jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		var apiErr *jetstream.APIError
		if wrongLastSeq(err) {
			return nil, errScheduleExists
		}
		if errors.As(err, &apiErr) && scheduleRefused(apiErr.ErrorCode) {
			// The server refused the schedule itself: ParseSpec should
			// have, so say what the server said.
			return nil, apperr.Wrap(err, apperr.Invalid, "the bus refused the schedule: %s", apiErr.Description)
		}
		return nil, scheduleStoreDown(err)
	}
	return &storedSchedule{Schedule: *sc, seq: ack.Sequence, storedAt: time.Now().UTC()}, nil
}

// errScheduleExists is a create under an id that has a message already: a
// repeated Idempotency-Key.
var errScheduleExists = errors.New("gateway: schedule id taken")

// wrongLastSeq reports the server refusing a publish whose expected last
// sequence on its subject is not the subject's (on one server and on a
// replicated stream).
func wrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// scheduleRefused reports one of the server's refusals of a schedule
// message: JSMessageSchedules*Err (10188-10223) and JSMessageTTLInvalidErr.
func scheduleRefused(code jetstream.ErrorCode) bool {
	switch code {
	case 10165, 10188, 10189, 10190, 10191, 10192, 10203, 10212, 10223:
		return true
	}
	return false
}

// remove deletes schedule sc, read at its sequence: a roll-up on its
// subject purges the schedule message (and with it the server's timer),
// and the marker it leaves expires after task.ScheduleTombstoneTTL. A
// schedule changed since it was read is errNoSchedule (deleted meanwhile).
//
// A roll-up rather than STREAM.PURGE with a subject filter: a gateway's
// NATS user may publish to schedules.def.*, but a purge request's filter
// is in its body, out of reach of the permission table, so a purge grant
// would let a gateway empty the whole stream.
func (b *scheduleBook) remove(ctx context.Context, sc *storedSchedule) error {
	msg := nats.NewMsg(task.ScheduleDefSubject(sc.ID))
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	_, err := b.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(task.ScheduleStream),
		jetstream.WithExpectLastSequencePerSubject(sc.seq), jetstream.WithMsgTTL(task.ScheduleTombstoneTTL))
	if wrongLastSeq(err) {
		return errNoSchedule
	}
	if err != nil {
		return scheduleStoreDown(err)
	}
	return nil
}

// view is the schedule sc as the routes answer it at now: with its next
// run (the Nats-Schedule-Next of its last tick while that is still ahead,
// exact: the server's own timer; else computed from its spec; nil when
// unknown) and, once it has fired, its last (the latest tick's time in
// the stream).
func (b *scheduleBook) view(ctx context.Context, sc *storedSchedule, now time.Time) scheduleView {
	v := scheduleView{Schedule: sc.Schedule}
	if s, err := b.bind(ctx); err == nil {
		if m, err := s.GetLastMsgForSubject(ctx, task.ScheduleFireSubject(sc.ID)); err == nil {
			last := m.Time.UTC()
			v.LastRun = &last
			if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(hdrScheduleNext)); err == nil && t.After(now) {
				t = t.UTC()
				v.NextRun = &t
				return v
			}
		}
	}
	spec, err := task.ParseSpec(sc.Spec, sc.TimeZone)
	if err != nil {
		return v
	}
	if t := spec.NextAfter(sc.storedAt, now); !t.IsZero() {
		t = t.UTC()
		v.NextRun = &t
	}
	return v
}

// scheduleView is a schedule as the routes answer it.
type scheduleView struct {
	task.Schedule
	// NextRun is when it fires next (see scheduleBook.view).
	NextRun *time.Time `json:"next_run,omitempty"`
	// LastRun is when it last fired: the time of its latest tick, kept in
	// the stream SCHEDULES until the next replaces it (or for a day).
	LastRun *time.Time `json:"last_run,omitempty"`
}

// scheduleRequest is the body of POST /schedules.
type scheduleRequest struct {
	Cron     *string         `json:"cron"`
	Every    *string         `json:"every"`
	TimeZone *string         `json:"time_zone"`
	Task     json.RawMessage `json:"task"`
	Queue    *string         `json:"queue"`
}

// resolveScheduledTask checks body, a schedule's "task", on queue (its
// own "queue" when ""), as a submission of it now would be (task.Parse,
// then the registry's catalog: the type, the queue, the payload's schema),
// and returns where its task goes and its type's limits. A tick resolves
// it again: the type's registration may have changed since.
func resolveScheduledTask(ctx context.Context, catalog *task.Catalog, body []byte, queue string) (task.Resolved, error) {
	sub, err := task.Parse(body)
	if err != nil {
		return task.Resolved{}, err
	}
	if queue != "" {
		sub.Queue = queue
	}
	return catalog.Resolve(ctx, sub)
}

// scheduledHead is the members of a task body that scheduledTask reads;
// the others are the payload's, free.
type scheduledHead struct {
	Task  string                     `json:"task"`
	Queue string                     `json:"queue"`
	RunAt *json.RawMessage           `json:"run_at"`
	Delay *json.RawMessage           `json:"delay"`
	Rest  map[string]json.RawMessage `json:",inline"`
}

// scheduledTask is what a tick needs of a schedule's task body: its type,
// its "queue" member ("" when none) and its canonical form. It reads only
// those (the body was validated when the schedule was made).
func scheduledTask(body []byte) (typ, queue string, canonical json.RawMessage, err error) {
	h, err := strictjson.DecodeBody[scheduledHead](bytes.NewReader(body))
	if err != nil {
		return "", "", nil, err
	}
	if h.RunAt != nil || h.Delay != nil {
		return "", "", nil, apperr.New(apperr.Invalid, `task: a scheduled task runs at its ticks: no "run_at" nor "delay"`)
	}
	if !task.ValidName(h.Task) {
		return "", "", nil, apperr.New(apperr.Invalid, `task: "task" must name a task type`)
	}
	canonical, err = strictjson.Canonical(body)
	if err != nil {
		return "", "", nil, apperr.Wrap(err, apperr.Invalid, "task: %v", err)
	}
	return h.Task, h.Queue, canonical, nil
}

// newSchedule reads and validates a POST /schedules body for owner.
func newSchedule(ctx context.Context, catalog *task.Catalog, body []byte, owner string) (*task.Schedule, error) {
	req, err := strictjson.DecodeBody[scheduleRequest](bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	var spec, zone string
	switch {
	case (req.Cron == nil) == (req.Every == nil):
		return nil, apperr.New(apperr.Invalid, `give exactly one of "cron" (6 fields with seconds, or @hourly…) and "every" (a duration such as "30s")`)
	case req.Every != nil:
		if req.TimeZone != nil {
			return nil, apperr.New(apperr.Invalid, `"time_zone" applies to "cron" only`)
		}
		d, err := time.ParseDuration(*req.Every)
		if err != nil || d < task.MinEvery {
			return nil, apperr.New(apperr.Invalid, `"every" must be a duration of at least %v, such as "30s" or "5m"`, task.MinEvery)
		}
		spec = "@every " + d.String()
	default:
		spec = strings.TrimSpace(*req.Cron)
		if strings.HasPrefix(spec, "@every") || strings.HasPrefix(spec, "@at") {
			return nil, apperr.New(apperr.Invalid, `"cron" takes a cron expression: for an interval use "every"`)
		}
		if req.TimeZone != nil {
			if zone = *req.TimeZone; zone == "" {
				return nil, apperr.New(apperr.Invalid, `"time_zone" must name an IANA zone such as Europe/Paris`)
			}
		}
	}
	if _, err := task.ParseSpec(spec, zone); err != nil {
		return nil, invalidTask(err)
	}
	if len(req.Task) == 0 || bytes.Equal(req.Task, []byte("null")) {
		return nil, apperr.New(apperr.Invalid, `"task" is required: a /longtask body such as {"task":"report"}`)
	}
	_, bodyQueue, canonical, err := scheduledTask(req.Task)
	if err != nil {
		return nil, err
	}
	queue := bodyQueue
	if req.Queue != nil {
		if !task.ValidName(*req.Queue) {
			return nil, apperr.New(apperr.Invalid, `"queue" must be 1-%d letters, digits, '_' or '-'`, task.MaxNameLen)
		}
		if bodyQueue != "" && bodyQueue != *req.Queue {
			return nil, apperr.New(apperr.Invalid, `"queue" %q and the task's "queue" %q differ: give one`, *req.Queue, bodyQueue)
		}
		queue = *req.Queue
	}
	if _, err := resolveScheduledTask(ctx, catalog, req.Task, queue); err != nil {
		if errors.Is(err, task.ErrInvalid) {
			return nil, apperr.Wrap(err, apperr.Invalid, "task: %s", strings.TrimPrefix(err.Error(), task.ErrInvalid.Error()+": "))
		}
		return nil, resolveError(http.Header{}, "", err)
	}
	return &task.Schedule{
		ID: task.NewID(), Owner: owner, Spec: spec, TimeZone: zone, Task: canonical, Queue: queue,
		CreatedAt: time.Now().UTC(),
	}, nil
}

// scheduleIDLabel labels the key of the ids of schedules made with an
// Idempotency-Key (see deriveIDKey).
const scheduleIDLabel = "scalelab schedule id v1"

// handleCreateSchedule is POST /schedules: validate, store the schedule
// message (the server fires it from then on), 201 with the schedule and
// its Location. The owner is the token's subject.
//
// With an Idempotency-Key (the balancer retries a POST that carries one)
// the id derives from the key and the subject (idempotencyID under
// idKey), so a repeat finds the first request's schedule: the same body
// answers it again, 201 with Idempotent-Replayed: true; another body is a
// 409; a schedule deleted since is a 404 while its marker lasts (a
// minute), after which the key makes a new one.
func handleCreateSchedule(book *scheduleBook, idKey []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err // body limit: echo's 413
		}
		ctx := c.Request().Context()
		owner := claimsOf(c).Subject
		sc, err := newSchedule(ctx, book.catalog, body, owner)
		if err != nil {
			return err
		}
		keyed, err := idempotencyID(c, idKey, owner)
		if err != nil {
			return err
		}
		if keyed != "" {
			sc.ID = keyed
		}
		if err := book.checkQuota(ctx, sc); err != nil {
			return err
		}
		stored, err := book.create(ctx, sc)
		if errors.Is(err, errScheduleExists) && keyed != "" {
			stored, err = replaySchedule(ctx, book, sc)
			if err != nil {
				return err
			}
			c.Response().Header().Set(replayedHeader, "true")
		} else if err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderLocation, "/schedules/"+stored.ID)
		return c.JSON(http.StatusCreated, book.view(ctx, stored, time.Now()))
	}
}

// replaySchedule answers a repeated keyed POST /schedules with the
// schedule the first one stored, if it asked for the same: a 409 if not,
// a 404 if it was deleted since.
func replaySchedule(ctx context.Context, book *scheduleBook, sc *task.Schedule) (*storedSchedule, error) {
	prev, err := book.get(ctx, sc.ID)
	if errors.Is(err, errNoSchedule) {
		return nil, apperr.New(apperr.NotFound, "the schedule of this %s was deleted", idempotencyHeader)
	}
	if err != nil {
		return nil, err
	}
	if prev.Owner != sc.Owner || prev.Spec != sc.Spec || prev.TimeZone != sc.TimeZone || prev.Queue != sc.Queue ||
		!bytes.Equal(prev.Task, sc.Task) {
		return nil, apperr.New(apperr.Conflict, "%s was already used with a different body", idempotencyHeader)
	}
	return prev, nil
}

// handleListSchedules is GET /schedules: the caller's schedules, or every
// schedule for tasks:admin, oldest first, each with its next run.
func handleListSchedules(book *scheduleBook) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		all, err := book.list(ctx)
		if err != nil {
			return err
		}
		claims, now := claimsOf(c), time.Now()
		out := []scheduleView{}
		for _, sc := range all {
			if scheduleVisibleTo(claims, &sc.Schedule) {
				out = append(out, book.view(ctx, sc, now))
			}
		}
		return c.JSON(http.StatusOK, map[string]any{"schedules": out})
	}
}

// handleGetSchedule is GET /schedules/{id}. Another subject's schedule is
// a 404, as a missing one is, unless the token has tasks:admin.
func handleGetSchedule(book *scheduleBook) echo.HandlerFunc {
	return func(c echo.Context) error {
		sc, err := visibleSchedule(c, book)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, book.view(c.Request().Context(), sc, time.Now()))
	}
}

// handleDeleteSchedule is DELETE /schedules/{id}: no tick after it. A tick
// that fired before it may still become a task if a gateway already took
// it. Only the owner or tasks:admin; anyone else gets the 404 of a
// missing schedule.
func handleDeleteSchedule(book *scheduleBook) echo.HandlerFunc {
	return func(c echo.Context) error {
		sc, err := visibleSchedule(c, book)
		if err != nil {
			return err
		}
		if err := book.remove(c.Request().Context(), sc); err != nil {
			return scheduleError(sc.ID, err)
		}
		return c.JSON(http.StatusOK, scheduleView{Schedule: sc.Schedule})
	}
}

// visibleSchedule reads the :id of a schedule route and the schedule, if
// the caller may see it.
func visibleSchedule(c echo.Context, book *scheduleBook) (*storedSchedule, error) {
	id := c.Param("id")
	if !task.ValidID(id) {
		return nil, apperr.New(apperr.Invalid, "schedule id must be 1-64 letters and digits")
	}
	sc, err := book.get(c.Request().Context(), id)
	if err != nil {
		return nil, scheduleError(id, err)
	}
	if !scheduleVisibleTo(claimsOf(c), &sc.Schedule) {
		return nil, scheduleError(id, errNoSchedule)
	}
	return sc, nil
}

// scheduleVisibleTo reports whether the token's holder may see and delete
// sc: its owner, or a token with tasks:admin.
func scheduleVisibleTo(claims *auth.Claims, sc *task.Schedule) bool {
	if claims == nil {
		return false
	}
	return claims.HasScope(auth.ScopeTasksAdmin) || (sc.Owner != "" && sc.Owner == claims.Subject)
}

// scheduleError answers a failed read or write of schedule id.
func scheduleError(id string, err error) error {
	if errors.Is(err, errNoSchedule) {
		return apperr.New(apperr.NotFound, "no schedule %s", id)
	}
	return err
}

// scheduleStoreDown is the 503 of a schedule stream that did not answer,
// or that refused a write for want of space (store_full: task.NoSpace).
func scheduleStoreDown(err error) error {
	var ae *apperr.Error
	switch {
	case errors.As(err, &ae):
		return err
	case task.NoSpace(err):
		return apperr.Wrap(err, apperr.StoreFull, "the schedule store is out of space (the JetStream store is at its limit): nothing was stored; try again later")
	}
	return apperr.Wrap(err, apperr.Unavailable, "schedule store is not available")
}
