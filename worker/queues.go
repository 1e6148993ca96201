package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/task"
)

// Timings of a worker that serves several queues.
const (
	// emptyFor is how long a queue found empty is not asked again by a
	// free slot of this worker; each empty answer in a row doubles it, up
	// to emptyForMax, and a task found resets it. Without it a busy
	// default queue would pay an empty pull on critical (and low) for
	// every task it runs; with it, a few a second. A task on a queue found
	// empty waits at most that long for a busy worker to look again (a
	// slot blocked on the queue takes it at once).
	emptyFor    = 5 * time.Millisecond
	emptyForMax = 50 * time.Millisecond
	// idleExpires is how long an idle slot of a worker serving several
	// queues waits on one of them (the one it last got work from, or one
	// no other idle slot of the worker covers, so a task there starts at
	// once) before it looks at all of them again. When a burst comes to
	// another queue, the slot joins it within this time: it cannot be
	// called back sooner (a pull withdrawn early can lose a task to the
	// ack wait). It was a second for a slot's own last queue, until the
	// drain of a burst on default by 4 idle workers of 4 slots
	// (platform/bench TestScenarioAsync) ran at 1.35× one worker's rate:
	// only the slots already waiting on default took it for the first
	// second. An idle worker's slots pull 5 times a second each.
	idleExpires = 200 * time.Millisecond
)

// queueSource is one served queue: its consumer and what the slots of
// this worker know about it.
type queueSource struct {
	name   string
	weight int
	cons   jetstream.Consumer
	// emptyUntil (Unix nanoseconds) is when the queue is asked again
	// after a pull found it empty; emptyStreak is how many pulls in a row
	// found it empty.
	emptyUntil  atomic.Int64
	emptyStreak atomic.Int32
	// waiting counts the slots blocked in a pull on this queue.
	waiting atomic.Int32
	// running is the queue's series of scalelab_worker_queue_running.
	running prometheus.Gauge
	// paused is set while the queue is paused in the registry (pause.go):
	// no slot pulls from it. live is the context of its pulls, cancelled
	// when it is paused; pausedGauge its scalelab_worker_queue_paused.
	paused      atomic.Bool
	live        atomic.Pointer[liveCtx]
	pausedGauge prometheus.Gauge
}

// queueSet is the queues a worker serves and how a free slot picks one.
type queueSet struct {
	queues []*queueSource // priority order
	strict bool
	// changed is closed, and replaced, when a queue is paused or resumed
	// (pause.go), to wake the slots waiting for that. An atomic, not under
	// mu: every slot reads it before each pull; mu orders the writers.
	mu      sync.Mutex
	changed atomic.Pointer[chan struct{}]
}

// served returns the queues w serves: cfg.Queues; else, for the worker
// role, DefaultQueues; else, for a program's own worker, the queues of its
// types (a type's WithQueue, else the default queue), weight 1 each, so a
// worker of one type does not pull the built-in types' tasks (it would
// only hand them back). Zero weights are made 1.
func (w *Worker) served() []Queue {
	qs := slices.Clone(w.cfg.Queues)
	if len(qs) == 0 && w.builtin {
		qs = DefaultQueues()
	}
	if len(qs) == 0 {
		for _, d := range w.types {
			name := cmp.Or(d.Queue, task.DefaultQueue)
			if !slices.ContainsFunc(qs, func(q Queue) bool { return q.Name == name }) {
				qs = append(qs, Queue{Name: name, Weight: 1})
			}
		}
	}
	for i := range qs {
		qs[i].Weight = max(qs[i].Weight, 1)
	}
	return qs
}

// queueNames returns the names of qs.
func queueNames(qs []Queue) []string {
	names := make([]string, len(qs))
	for i, q := range qs {
		names[i] = q.Name
	}
	return names
}

// consumerConfig is the durable consumer of queue, shared by every worker
// that serves it.
func consumerConfig(cfg Config, queue string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        task.QueueConsumer(queue),
		Description:    "scalelab workers: the tasks of queue " + queue + ", shared by the workers serving it",
		FilterSubjects: task.QueueSubjects(queue),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		// Attempts are counted and enforced by the worker (which records
		// the outcome), not by the server: a server-side limit would strand
		// a task whose last delivery died with its worker in "running".
		MaxDeliver:    -1,
		MaxAckPending: 10_000,
	}
}

// fetchNoWait takes one task from q if it has one now. It returns nil,
// nil when q is empty.
func (q *queueSource) fetchNoWait() (jetstream.Msg, error) {
	b, err := q.cons.FetchNoWait(1)
	if err != nil {
		return nil, err
	}
	var msg jetstream.Msg
	for m := range b.Messages() {
		msg = m
	}
	if msg != nil {
		return msg, nil
	}
	return nil, b.Error()
}

// emptyBackoff counts one more empty answer from q and returns how long
// q is not asked again: emptyFor, doubled for each empty answer before it
// in a row, up to emptyForMax.
func (q *queueSource) emptyBackoff() time.Duration {
	n := q.emptyStreak.Add(1)
	return min(emptyFor<<min(max(n-1, 0), 4), emptyForMax) // max: a streak that wrapped
}

// order returns the queues in the order a free slot asks them: priority
// order (strict), or a random order drawn by weight, so that each queue
// comes first in proportion to its weight. Queues found empty within
// emptyFor, and paused ones, are left out.
func (s *queueSet) order(now int64, buf []*queueSource) []*queueSource {
	buf = buf[:0]
	total := 0
	for _, q := range s.queues {
		if q.emptyUntil.Load() <= now && !q.paused.Load() {
			buf = append(buf, q)
			total += q.weight
		}
	}
	if s.strict {
		return buf
	}
	// Weighted sampling without replacement: pick one by weight, swap it
	// to the front, repeat on the rest.
	for i := 0; i < len(buf)-1; i++ {
		n := rand.IntN(total)
		j := i
		for ; n >= buf[j].weight; j++ {
			n -= buf[j].weight
		}
		buf[i], buf[j] = buf[j], buf[i]
		total -= buf[i].weight
	}
	return buf
}

// take asks the queues once each, without waiting, in the slot's order,
// and returns the first task found and its queue; a nil message when all
// are empty.
func (s *queueSet) take(buf []*queueSource) (jetstream.Msg, *queueSource, error) {
	now := time.Now().UnixNano()
	for _, q := range s.order(now, buf) {
		msg, err := q.fetchNoWait()
		switch {
		case err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout):
			return nil, nil, fmt.Errorf("queue %s: %w", q.name, err)
		case msg != nil:
			q.emptyStreak.Store(0)
			return msg, q, nil
		}
		q.emptyUntil.Store(time.Now().Add(q.emptyBackoff()).UnixNano())
	}
	return nil, nil, nil
}

// idleQueue is the queue an idle slot waits on: the one it last got work
// from (sticky), unless some queue has no slot of this worker waiting on
// it; then that one, the first after `after` in priority order, so that
// an idle worker has a pull waiting on every queue it serves (as far as
// its slots go), and a slot that cannot cover them all rotates. A paused
// queue is never picked: nil when all are paused.
func (s *queueSet) idleQueue(sticky, after *queueSource) *queueSource {
	if sticky.waiting.Load() == 0 && after == nil && !sticky.paused.Load() {
		return sticky
	}
	start := 0
	if after != nil {
		start = slices.Index(s.queues, after) + 1
	}
	var fallback *queueSource
	for i := range s.queues {
		q := s.queues[(start+i)%len(s.queues)]
		if q.paused.Load() {
			continue
		}
		if q.waiting.Load() == 0 {
			return q
		}
		if fallback == nil || q == sticky {
			fallback = q
		}
	}
	return fallback
}

// pullQueues is one slot of a worker serving several queues. A free slot
// asks the queues without waiting, in its order (see order), and runs the
// first task found; when all are empty it waits on one queue (idleQueue)
// for up to idleExpires, then asks them all again. It still pulls one
// task only when it is free (see puller).
func (r *runner) pullQueues(slot int) {
	s := r.queues
	buf := make([]*queueSource, 0, len(s.queues))
	sticky := s.queues[slot%len(s.queues)]
	var expired *queueSource
	backoff := 100 * time.Millisecond
	for r.pullCtx.Err() == nil {
		changes := s.changes()
		msg, q, err := s.take(buf)
		var live *liveCtx
		if err == nil && msg == nil {
			// Every queue is empty (or paused): wait on one.
			if q = s.idleQueue(sticky, expired); q == nil {
				r.waitChange(changes) // all paused: until one is resumed
				continue
			}
			live = q.live.Load()
			q.waiting.Add(1)
			msg, err = puller{cons: q.cons, expires: idleExpires}.next(live.ctx)
			q.waiting.Add(-1)
		}
		switch {
		case err == nil && q.paused.Load():
			r.handBackPaused(q, msg)
		case err == nil:
			backoff = 100 * time.Millisecond
			sticky, expired = q, nil
			q.emptyStreak.Store(0)
			r.handleFrom(q, msg)
		case r.pullCtx.Err() != nil:
			return
		case live != nil && live.ctx.Err() != nil:
			// Its queue was paused while it waited: look again.
		case errors.Is(err, nats.ErrTimeout):
			expired = q // nothing came: look elsewhere next
		default:
			r.log.Warn("pull task", "err", err, "retry_in", backoff)
			_ = sleepCtx(r.pullCtx, backoff) // ends early only on shutdown
			backoff = min(backoff*2, 5*time.Second)
		}
	}
}

// handleFrom runs msg, a task of q, counting it among q's running tasks.
func (r *runner) handleFrom(q *queueSource, msg jetstream.Msg) {
	q.running.Inc()
	defer q.running.Dec()
	r.handle(msg)
}

// QueueStats are what a worker last read of one queue it serves (every
// queueSampleEvery), in its TaskStats: the balancer's dashboard reads the
// oldest task's age from them, since it may not read task messages itself.
type QueueStats struct {
	Name string `json:"name"`
	// Pending tasks wait for a worker; InFlight were handed to one and not
	// yet acked (the queue's consumer: all workers).
	Pending  uint64 `json:"pending"`
	InFlight int    `json:"in_flight"`
	// OldestAgeSeconds is the age of the queue's oldest task (queued or
	// running), 0 when it has none.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Paused is whether the queue is paused (this worker does not pull
	// from it).
	Paused bool `json:"paused,omitempty"`
	// At is when it was read.
	At time.Time `json:"at"`
}

// queueSampleEvery is how often a worker reads its queues' depth and age.
const queueSampleEvery = 3 * time.Second

// sampleQueues reads the depth and the oldest task of every served queue
// every queueSampleEvery until ctx ends, into the metrics and the stats.
func (r *runner) sampleQueues(ctx context.Context) error {
	t := time.NewTicker(queueSampleEvery)
	defer t.Stop()
	for {
		r.sampleOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (r *runner) sampleOnce(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, queueSampleEvery)
	defer cancel()
	stream, err := r.js.Stream(ctx, task.Stream)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Debug("sample queues", "err", err)
		}
		return
	}
	out := make([]QueueStats, 0, len(r.queues.queues))
	for _, q := range r.queues.queues {
		qs := QueueStats{Name: q.name, Paused: q.paused.Load(), At: time.Now().UTC()}
		info, err := q.cons.Info(ctx)
		if err != nil {
			r.log.Debug("sample queue", "queue", q.name, "err", err)
			continue
		}
		qs.Pending, qs.InFlight = info.NumPending, info.NumAckPending
		if oldest, ok := task.OldestOnQueue(ctx, stream, q.name); ok {
			qs.OldestAgeSeconds = max(time.Since(oldest).Seconds(), 0)
		}
		r.metrics.queueDepth.WithLabelValues(q.name).Set(float64(qs.Pending) + float64(qs.InFlight))
		r.metrics.queueInFlight.WithLabelValues(q.name).Set(float64(qs.InFlight))
		r.metrics.queueOldest.WithLabelValues(q.name).Set(qs.OldestAgeSeconds)
		out = append(out, qs)
	}
	r.queueStats.Store(&out)
	r.sampleDead(ctx)
}

// sampleDead reads the dead letters per task type (the subject counts of
// TASKS_DLQ, one STREAM.INFO) into scalelab_worker_dead_tasks.
func (r *runner) sampleDead(ctx context.Context) {
	dlq, err := r.js.Stream(ctx, task.DLQStream)
	if err != nil {
		r.log.Debug("sample dead letters", "err", err)
		return
	}
	info, err := dlq.Info(ctx, jetstream.WithSubjectFilter(task.DLQSubjectPrefix+">"))
	if err != nil {
		r.log.Debug("sample dead letters", "err", err)
		return
	}
	m := r.metrics
	for typ := range m.deadSeen {
		m.deadSeen[typ] = false
	}
	for subj, n := range info.State.Subjects {
		typ := strings.TrimPrefix(subj, task.DLQSubjectPrefix)
		m.deadTasks.WithLabelValues(typ).Set(float64(n))
		m.deadSeen[typ] = true
	}
	for typ, seen := range m.deadSeen {
		if !seen {
			m.deadTasks.WithLabelValues(typ).Set(0) // all retried or expired
		}
	}
}
