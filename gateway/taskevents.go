package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// Task events: GET /tasks/{id}/events and GET /tasks/events stream task
// changes as server-sent events, so that a client sees queued → running
// 40 % → succeeded without polling. The changes come from the task
// index's watch of the bucket (taskindex.go), fanned out in the gateway:
// a stream costs a goroutine and a bounded queue, not a NATS consumer.

// Limits on event streams. Each holds a goroutine, a connection and a
// queue of at most its own bound, so a client may open only a few.
const (
	maxStreamsPerSubject = 16
	maxStreams           = 1024
	// taskEventQueue bounds the changes waiting for a slow client of a
	// task's stream; past it the newest replaces the last one waiting
	// (each event carries the whole record, so nothing is lost but steps).
	taskEventQueue = 64
	// listEventQueue bounds the changes waiting for a slow client of
	// GET /tasks/events; past it the stream ends with an overflow event
	// (the client lists again and reconnects).
	listEventQueue = 1024
)

// eventPing is how often an idle stream sends a comment line, so that
// proxies and clients see it alive. A variable for tests.
var eventPing = 15 * time.Second

// errTooManyStreams is answered (429) past the stream limits.
var errTooManyStreams = errors.New("gateway: too many event streams")

// event is one server-sent event.
type event struct {
	rev  uint64
	name string // "task", "deleted"
	data []byte
}

// eventQueue is a subscriber's bounded queue of events.
type eventQueue struct {
	mu         sync.Mutex
	events     []event
	max        int
	coalesce   bool // when full, replace the last event (a task's stream); else overflow
	overflowed bool
	notify     chan struct{} // one pending wake-up
	closed     chan struct{} // the index stopped
}

func newEventQueue(max int, coalesce bool) *eventQueue {
	return &eventQueue{max: max, coalesce: coalesce, notify: make(chan struct{}, 1), closed: make(chan struct{})}
}

// push queues ev without blocking.
func (q *eventQueue) push(ev event) {
	q.mu.Lock()
	switch {
	case q.overflowed:
	case len(q.events) < q.max:
		q.events = append(q.events, ev)
	case q.coalesce:
		q.events[len(q.events)-1] = ev
	default:
		q.overflowed = true
		q.events = nil
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// take returns the queued events, and whether the queue overflowed.
func (q *eventQueue) take() ([]event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := q.events
	q.events = nil
	return evs, q.overflowed
}

// listFilter is what a GET /tasks/events stream wants.
type listFilter struct {
	owner, typ, queue string // "": any
	state             task.State
}

// match reports whether f wants e, whose names are in x.
func (f listFilter) match(x *taskIndex, e *indexEntry) bool {
	return (f.owner == "" || x.names[e.owner] == f.owner) && (f.state == "" || slotStates[e.state] == f.state) &&
		(f.typ == "" || x.names[e.typ] == f.typ) && (f.queue == "" || x.names[e.queue] == f.queue)
}

// listSub is a GET /tasks/events stream.
type listSub struct {
	filter listFilter
	q      *eventQueue
}

// subscribers are the event streams of a gateway. The index calls changed
// and deleted under its write lock, and subscribe/unsubscribe take that
// lock too (taskIndex methods), so subscribers has no lock of its own.
type subscribers struct {
	byTask    map[string]map[*eventQueue]struct{}
	lists     map[*listSub]struct{}
	perSub    map[string]int // open streams per token subject
	n         int
	closedAll bool
}

func newSubscribers() subscribers {
	return subscribers{byTask: map[string]map[*eventQueue]struct{}{}, lists: map[*listSub]struct{}{}, perSub: map[string]int{}}
}

// changed tells the streams about e, whose record is now value.
func (s *subscribers) changed(x *taskIndex, e *indexEntry, value []byte) {
	for q := range s.byTask[e.id] {
		q.push(event{rev: e.rev, name: "task", data: value})
	}
	var data []byte
	for l := range s.lists {
		if !l.filter.match(x, e) {
			continue
		}
		if data == nil {
			data, _ = json.Marshal(x.summary(e)) // a summary always encodes
		}
		l.q.push(event{rev: e.rev, name: "task", data: data})
	}
}

// deleted tells a task's streams that its record is gone.
func (s *subscribers) deleted(id string, rev uint64) {
	for q := range s.byTask[id] {
		q.push(event{rev: rev, name: "deleted", data: []byte("{}")})
	}
}

// closeAll ends every stream: the index stopped (the gateway is shutting
// down; the clients reconnect to another).
func (s *subscribers) closeAll() {
	for _, qs := range s.byTask {
		for q := range qs {
			close(q.closed)
		}
	}
	for l := range s.lists {
		close(l.q.closed)
	}
	s.byTask, s.lists, s.closedAll = map[string]map[*eventQueue]struct{}{}, map[*listSub]struct{}{}, true
}

// admit counts a new stream of subject, or refuses it past the limits.
func (s *subscribers) admit(subject string) error {
	if s.closedAll {
		return errIndexLoading
	}
	if s.n >= maxStreams || s.perSub[subject] >= maxStreamsPerSubject {
		return errTooManyStreams
	}
	s.n++
	s.perSub[subject]++
	return nil
}

func (s *subscribers) release(subject string) {
	s.n--
	if s.perSub[subject]--; s.perSub[subject] <= 0 {
		delete(s.perSub, subject)
	}
}

// subscribeTask opens a stream of the changes of task id for subject.
func (x *taskIndex) subscribeTask(id, subject string) (*eventQueue, func(), error) {
	x.use() // its changes come from the watch: follow the bucket
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.subs.admit(subject); err != nil {
		return nil, nil, err
	}
	q := newEventQueue(taskEventQueue, true)
	qs := x.subs.byTask[id]
	if qs == nil {
		qs = map[*eventQueue]struct{}{}
		x.subs.byTask[id] = qs
	}
	qs[q] = struct{}{}
	return q, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if qs := x.subs.byTask[id]; qs != nil {
			if _, ok := qs[q]; ok {
				delete(qs, q)
				if len(qs) == 0 {
					delete(x.subs.byTask, id)
				}
			}
		}
		x.subs.release(subject)
	}, nil
}

// subscribeList opens a stream of the changes of the tasks f matches.
func (x *taskIndex) subscribeList(f listFilter, subject string) (*eventQueue, func(), error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.subs.admit(subject); err != nil {
		return nil, nil, err
	}
	l := &listSub{filter: f, q: newEventQueue(listEventQueue, false)}
	x.subs.lists[l] = struct{}{}
	return l.q, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		delete(x.subs.lists, l)
		x.subs.release(subject)
	}, nil
}

// streamError answers a refused subscription.
func streamError(err error) error {
	switch {
	case errors.Is(err, errTooManyStreams):
		return apperr.New(apperr.RateLimited, "too many open event streams (at most %d per token); close one", maxStreamsPerSubject)
	case errors.Is(err, errIndexLoading):
		return indexLoading()
	}
	return err
}

// eventSink is where a stream's events go: server-sent events
// (sseWriter), or the messages of a WebSocket (wsSink) when the request
// asks to upgrade. Both get the same events in the same order.
type eventSink interface {
	// send queues one event; flush sends what is queued.
	send(ev event) error
	flush() error
	// ping keeps an idle stream alive through proxies.
	ping()
	// end sends the last event of a task's stream and flushes.
	end()
	// done ends when the client has gone.
	done() <-chan struct{}
	// close releases the stream once the handler is done with it.
	close()
}

// startStream starts the event stream of c: a WebSocket when the request
// asks for one, server-sent events otherwise. An upgrade that fails has
// been answered (4xx) and returns an error.
func startStream(c echo.Context) (eventSink, error) {
	if isWebSocket(c.Request()) {
		return startWebSocket(c)
	}
	return startSSE(c), nil
}

// sseWriter writes server-sent events to a response.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
	ctx context.Context
}

func (s *sseWriter) done() <-chan struct{} { return s.ctx.Done() }

// close does nothing: the response ends when the handler returns.
func (s *sseWriter) close() {}

// startSSE sends the headers of an event stream. The read deadline goes:
// net/http's ReadTimeout would otherwise end the request's context, and
// the stream, 30 s in.
func startSSE(c echo.Context) *sseWriter {
	w := c.Response()
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx and its kin: do not buffer
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: rc, ctx: c.Request().Context()}
	s.buf.WriteString("retry: 2000\n\n")
	_ = s.flush()
	return s
}

// send writes one event. data is one JSON document; one with line breaks
// (a record written by another program) is compacted first, since a line
// break ends an SSE data line.
func (s *sseWriter) send(ev event) error {
	if ev.rev > 0 {
		s.buf.WriteString("id: ")
		s.buf.WriteString(strconv.FormatUint(ev.rev, 10))
		s.buf.WriteByte('\n')
	}
	fmt.Fprintf(&s.buf, "event: %s\ndata: ", ev.name)
	if bytes.ContainsAny(ev.data, "\r\n") {
		if err := json.Compact(&s.buf, ev.data); err != nil {
			s.buf.WriteString("{}")
		}
	} else {
		s.buf.Write(ev.data)
	}
	s.buf.WriteString("\n\n")
	return nil
}

// ping writes a comment line.
func (s *sseWriter) ping() { s.buf.WriteString(": ping\n\n") }

// flush sends what was written.
func (s *sseWriter) flush() error {
	if s.buf.Len() == 0 {
		return nil
	}
	_, err := s.w.Write(s.buf.Bytes())
	s.buf.Reset()
	if err != nil {
		return err
	}
	return s.rc.Flush()
}

// handleTaskEvents streams the changes of one task: the record now, then
// each change, then "end" once it is final (or "end" after "deleted").
// A task the caller may not see is a 404, as for GET /tasks/{id}.
func handleTaskEvents(idx *taskIndex, store TaskStore, stopping <-chan struct{}) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := taskIDParam(c)
		if err != nil {
			return err
		}
		if idx == nil {
			return indexLoading()
		}
		claims := claimsOf(c)
		// Subscribe before reading, so that no change falls between.
		q, unsubscribe, err := idx.subscribeTask(id, claims.Subject)
		if err != nil {
			return streamError(err)
		}
		defer unsubscribe()
		rec, rev, err := store.Get(c.Request().Context(), id)
		if err == nil && !visibleTo(claims, rec) {
			err = errNotVisible
		}
		if err != nil {
			return taskStoreError(id, err)
		}
		first, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		s, err := startStream(c)
		if err != nil {
			return nil // answered
		}
		defer s.close()
		_ = s.send(event{rev: rev, name: "task", data: first})
		if rec.State.Terminal() {
			s.end()
			return nil
		}
		if s.flush() != nil {
			return nil
		}
		last := rev
		return pump(s, q, stopping, func(ev event) bool {
			if ev.rev <= last {
				return true // read before the first event was sent
			}
			last = ev.rev
			_ = s.send(ev)
			if ev.name == "deleted" {
				return false
			}
			var h struct {
				State task.State `json:"state"`
			}
			return json.Unmarshal(ev.data, &h) != nil || !h.State.Terminal()
		})
	}
}

// end writes the last event of a task's stream.
func (s *sseWriter) end() {
	_ = s.send(event{name: "end", data: []byte("{}")})
	_ = s.flush()
}

// pump sends q's events through each until it returns false (then "end"),
// the client leaves, the queue overflows ("overflow"), the gateway stops
// (stopping) or the index does.
// It pings an idle stream.
func pump(s eventSink, q *eventQueue, stopping <-chan struct{}, each func(event) bool) error {
	ping := time.NewTicker(eventPing)
	defer ping.Stop()
	for {
		select {
		case <-s.done():
			return nil
		case <-q.closed:
			return nil
		case <-stopping:
			return nil // the gateway is shutting down: the client reconnects to another
		case <-ping.C:
			s.ping()
		case <-q.notify:
			evs, overflowed := q.take()
			if overflowed {
				_ = s.send(event{name: "overflow", data: []byte(`{"message":"this stream fell behind; list again and reconnect"}`)})
				_ = s.flush()
				return nil
			}
			for _, ev := range evs {
				if !each(ev) {
					s.end()
					return nil
				}
			}
		}
		if s.flush() != nil {
			return nil // the client is gone
		}
	}
}

// handleTasksEvents streams the changes of the caller's tasks (every
// task's with tasks:admin) that the filters of GET /tasks match: a summary
// per change, as in a listing. It never ends by itself.
func handleTasksEvents(idx *taskIndex, catalog *task.Catalog, stopping <-chan struct{}) echo.HandlerFunc {
	return func(c echo.Context) error {
		if idx == nil {
			return indexLoading()
		}
		claims := claimsOf(c)
		f, err := parseListFilter(c, catalog, claims, "state", "type", "queue", "owner")
		if err != nil {
			return err
		}
		// Loaded first: the client lists, then follows, and a change made
		// while the index loads would be missed.
		if !idx.awaitLoaded(c.Request().Context(), indexFirstWait) {
			return indexLoading()
		}
		q, unsubscribe, err := idx.subscribeList(f, claims.Subject)
		if err != nil {
			return streamError(err)
		}
		defer unsubscribe()
		s, err := startStream(c)
		if err != nil {
			return nil // answered
		}
		defer s.close()
		return pump(s, q, stopping, func(ev event) bool { _ = s.send(ev); return true })
	}
}

// ownerFilter is whose tasks a caller lists: its own; every owner's, or
// the one of ?owner=, with tasks:admin.
func ownerFilter(claims *auth.Claims, asked string) (string, error) {
	if claims.HasScope(auth.ScopeTasksAdmin) {
		return asked, nil
	}
	if asked != "" && asked != claims.Subject {
		return "", apperr.New(apperr.Forbidden, "owner= needs the scope %s (without it you see your own tasks)", auth.ScopeTasksAdmin)
	}
	return claims.Subject, nil
}
