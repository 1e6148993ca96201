package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
)

// scheduleTickLabel labels the key of the ids of the tasks that schedule
// ticks make (see deriveIDKey).
const scheduleTickLabel = "scalelab schedule tick v1"

// scheduleRunner runs the materializer: every gateway takes ticks from
// the shared durable consumer task.ScheduleConsumer and turns each into a
// task. The zero value is ready.
type scheduleRunner struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// start runs the materializer until ctx ends or stop is called. It is
// called once.
func (r *scheduleRunner) start(ctx context.Context, js jetstream.JetStream, store TaskStore, queue TaskQueue, catalog *task.Catalog, secret []byte, log *slog.Logger) {
	ctx, r.cancel = context.WithCancel(ctx)
	m := &materializer{js: js, store: store, queue: queue, catalog: catalog, idKey: deriveIDKey(secret, scheduleTickLabel), log: log.With("part", "schedules")}
	r.wg.Go(func() { m.run(ctx) })
}

// stop stops the materializer, if started, and waits for it: a tick it
// was turning into a task is finished or left for redelivery.
func (r *scheduleRunner) stop() {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
}

// materializer turns schedule ticks into tasks.
type materializer struct {
	js      jetstream.JetStream
	store   TaskStore
	queue   TaskQueue
	catalog *task.Catalog
	idKey   []byte
	log     *slog.Logger
}

// tickPull is how long one pull for a tick waits.
const tickPull = 30 * time.Second

// run binds to the consumer (provisioned by admin with the stream: a
// gateway may not create consumers) and materializes one tick at a time
// until ctx ends.
func (m *materializer) run(ctx context.Context) {
	var cons jetstream.Consumer
	var stream jetstream.Stream
	bind := func() bool {
		err := natsconn.Retry(ctx, m.log, "bind the schedule consumer", func(ctx context.Context) error {
			var err error
			if stream, err = m.js.Stream(ctx, task.ScheduleStream); err != nil {
				return err
			}
			cons, err = stream.Consumer(ctx, task.ScheduleConsumer)
			return err
		})
		return err == nil
	}
	if !bind() {
		return
	}
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, tickPull)
		msg, err := cons.Next(jetstream.FetchContext(pctx))
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			pause = 100 * time.Millisecond
			m.materialize(ctx, stream, msg)
			continue
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrNoMessages), errors.Is(err, nats.ErrTimeout):
			// No tick within the pull's life (the server expires the
			// request just before the deadline: nats.ErrTimeout): the
			// quiet case, pull again.
			continue
		case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrStreamNotFound):
			m.log.Warn("schedule consumer gone; binding again", "err", err)
			if !bind() {
				return
			}
			continue
		}
		m.log.Warn("pull a schedule tick", "err", err, "retry_in", pause)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(pause*2, 5*time.Second)
	}
}

// materialize turns one tick into a task, submitted as POST /longtask
// submits (submit.go's create, replay, publish), and acks it. The task's
// id derives from the tick (tickTaskID), so every try of the same tick,
// on any gateway, makes the same task: a tick redelivered after a crash
// or a lost ack finds its record (task.ErrExists) and publishes it again
// if still queued, which the stream's dedupe window absorbs. So one task
// per tick, however many gateways. A tick whose schedule has since been
// deleted is dropped.
func (m *materializer) materialize(ctx context.Context, stream jetstream.Stream, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		m.log.Error("schedule tick without metadata", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	id := strings.TrimPrefix(msg.Subject(), task.ScheduleFirePrefix)
	var sc task.Schedule
	if err := json.Unmarshal(msg.Data(), &sc); err != nil || sc.ID != id || !task.ValidID(id) {
		m.log.Error("schedule tick is not a schedule; dropped", "subject", msg.Subject(), "seq", meta.Sequence.Stream, "err", err)
		_ = msg.Term()
		return
	}
	log := m.log.With("schedule", id, "tick_seq", meta.Sequence.Stream)
	def, err := stream.GetLastMsgForSubject(ctx, task.ScheduleDefSubject(id))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && def.Header.Get(hdrSchedule) == ""):
		log.Info("tick of a deleted schedule; dropped")
		_ = msg.Ack()
		return
	case err != nil:
		log.Warn("read the schedule of a tick; retrying", "err", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	rec, err := m.tickRecord(ctx, &sc, meta, log)
	if err != nil {
		log.Error("scheduled task body unreadable; tick dropped", "err", err)
		_ = msg.Term()
		return
	}
	s := &submission{rec: rec}
	rev, err := s.create(ctx, m.store)
	switch {
	case errors.Is(err, task.ErrExists):
		_, err = s.replay(ctx, m.store, m.queue)
	case err == nil:
		err = s.publish(ctx, m.store, m.queue, rev)
	}
	if err != nil {
		log.Warn("materialize a schedule tick; retrying", "task_id", rec.ID, "err", err)
		_ = msg.NakWithDelay(2 * time.Second)
		return
	}
	if err := msg.DoubleAck(ctx); err != nil {
		// Redelivered: the same task again, found by its id.
		log.Warn("ack a schedule tick", "task_id", rec.ID, "err", err)
		return
	}
	log.Debug("schedule tick materialized", "task_id", rec.ID, "type", rec.Type)
}

// tickRecord is the record of the task that the tick of sc described by
// meta makes: the schedule's task body, type and queue, owned by the
// schedule's owner, under tickTaskID, with its type's limits and default
// queue as the registry says now. A tick of a type no longer registered (or
// whose schema changed so that the task no longer passes) still makes its
// task, on the schedule's queue or the default one, with a warning: the
// schedule was accepted, and a task left queued is visible where a dropped
// tick is not.
func (m *materializer) tickRecord(ctx context.Context, sc *task.Schedule, meta *jetstream.MsgMetadata, log *slog.Logger) (*task.Record, error) {
	typ, bodyQueue, payload, err := scheduledTask(sc.Task)
	if err != nil {
		return nil, err
	}
	queue := sc.Queue
	if queue == "" {
		queue = bodyQueue
	}
	var limits task.Resolved
	if res, err := resolveScheduledTask(ctx, m.catalog, sc.Task, queue); err == nil {
		limits, queue = res, res.Queue
	} else {
		log.Warn("scheduled task no longer resolves against the registry; queued anyway", "type", typ, "err", err)
	}
	if queue == "" {
		queue = task.DefaultQueue
	}
	now := time.Now().UTC()
	seq := meta.Sequence.Stream
	return &task.Record{
		ID: tickTaskID(m.idKey, sc.ID, seq, meta.Timestamp), Type: typ, Queue: queue, State: task.Queued, Payload: payload,
		MaxAttempts: limits.MaxAttempts, TimeoutMS: limits.TimeoutMS,
		// The request id names the tick: schedule.<id>.<stream sequence>.
		RequestID: "schedule." + sc.ID + "." + strconv.FormatUint(seq, 10),
		Owner:     sc.Owner, CreatedAt: now, UpdatedAt: now,
	}, nil
}

// tickTaskID is the id of the task of the tick stored at seq and at time
// at, of schedule id: a keyed hash (idempotentID), the same on every
// gateway and for every delivery of that tick, different for every other
// tick (the time tells apart the ticks of a stream made again, whose
// sequences start over).
func tickTaskID(key []byte, id string, seq uint64, at time.Time) string {
	return idempotentID(key, id, strconv.FormatUint(seq, 10)+"@"+strconv.FormatInt(at.UnixNano(), 10))
}
