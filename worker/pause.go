package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
)

// Pausing a queue (issue #26): POST /queues/{name}/pause sets Paused in
// the queue's definition in the registry (task.Registry.SetPaused); every
// worker watches the definitions (task.Registry.WatchQueues) and stops
// pulling from a paused queue: its slots' waiting pulls on it are
// withdrawn, no slot asks it again, and a slot whose queues are all
// paused blocks until one is resumed, without spinning. Tasks already
// running finish; the queue's messages stay in TASKS, queued, and run
// once it is resumed.

// pauseLoadTimeout bounds how long a worker, as it starts, waits for the
// queues' current definitions, so that it does not pull from a queue
// paused before it started. Past it, it starts anyway (the watch still
// delivers them) rather than not serve at all.
const pauseLoadTimeout = 5 * time.Second

// liveCtx is the context of a queue's pulls while it is not paused: a
// child of the runner's pullCtx, cancelled when the queue is paused (a
// slot's pull waiting on it is withdrawn) and replaced by a fresh one
// when it is resumed.
type liveCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// initPause gives every queue its first liveCtx (not paused) and its
// paused gauge.
func (r *runner) initPause() {
	for _, q := range r.queues.queues {
		ctx, cancel := context.WithCancel(r.pullCtx)
		q.live.Store(&liveCtx{ctx: ctx, cancel: cancel})
		q.pausedGauge = r.metrics.queuePaused.WithLabelValues(q.name)
		q.pausedGauge.Set(0)
	}
}

// changes returns a channel closed at the next pause or resume of a
// served queue. Take it before looking at the queues' paused flags, so a
// resume in between is not missed.
func (s *queueSet) changes() <-chan struct{} {
	if ch := s.changed.Load(); ch != nil {
		return *ch
	}
	ch := make(chan struct{})
	s.changed.CompareAndSwap(nil, &ch)
	return *s.changed.Load()
}

// setPaused pauses or resumes the served queue name (ignored when this
// worker does not serve it), and wakes the slots waiting for a change.
func (r *runner) setPaused(name string, paused bool) {
	s := r.queues
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.queues {
		if q.name != name || q.paused.Load() == paused {
			continue
		}
		q.paused.Store(paused)
		if paused {
			q.live.Load().cancel()
			q.pausedGauge.Set(1)
			r.log.Info("queue paused: not pulling from it", "queue", name)
		} else {
			ctx, cancel := context.WithCancel(r.pullCtx)
			q.live.Store(&liveCtx{ctx: ctx, cancel: cancel})
			q.pausedGauge.Set(0)
			r.log.Info("queue resumed", "queue", name)
		}
		next := make(chan struct{})
		if old := s.changed.Swap(&next); old != nil {
			close(*old)
		}
	}
}

// waitChange blocks until ch is closed (a queue was paused or resumed) or
// shutdown starts.
func (r *runner) waitChange(ch <-chan struct{}) {
	select {
	case <-ch:
	case <-r.pullCtx.Done():
	}
}

// handBackPaused gives back a task pulled from q as q was being paused
// (its pull was answered before it was withdrawn): at once, and at no
// cost to its attempts (its record was not touched), so it waits on the
// queue with the others.
func (r *runner) handBackPaused(q *queueSource, msg jetstream.Msg) {
	r.log.Debug("task pulled as its queue was paused; handed back", "queue", q.name, "subject", msg.Subject())
	if err := msg.Nak(); err != nil {
		r.log.Warn("hand back a task of a paused queue", "queue", q.name, "err", err)
	}
}

// watchPaused watches the queues' definitions and applies them to the
// served queues. It waits (up to pauseLoadTimeout) for the current ones,
// and returns the rest of the watch as a func that runs until its ctx
// ends (or the watch does), then stops the watch. The watch itself lives
// under ctx.
func (r *runner) watchPaused(ctx context.Context, reg *task.Registry) (func(context.Context) error, error) {
	w, err := reg.WatchQueues(ctx)
	if err != nil {
		return nil, err
	}
	apply := func(e jetstream.KeyValueEntry) {
		name := strings.TrimPrefix(e.Key(), task.QueueKeyPrefix)
		if e.Operation() != jetstream.KeyValuePut {
			r.setPaused(name, false) // a queue deleted from the registry is not paused
			return
		}
		var q task.QueueDef
		if err := json.Unmarshal(e.Value(), &q); err != nil {
			r.log.Warn("queue definition does not decode; ignored", "key", e.Key(), "err", err)
			return
		}
		r.setPaused(name, q.Paused)
	}
	timeout := time.After(pauseLoadTimeout)
load:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("watch queues: ended before the current values")
			}
			if e == nil {
				break load
			}
			apply(e)
		case <-timeout:
			r.log.Warn("queue definitions not loaded in time; starting, paused queues are applied as they come", "waited", pauseLoadTimeout)
			break load
		case <-ctx.Done():
			_ = w.Stop()
			return func(context.Context) error { return nil }, nil
		}
	}
	return func(ctx context.Context) error {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return nil
			case e, ok := <-w.Updates():
				if !ok {
					r.log.Warn("watch of the queues ended: pauses are no longer seen")
					return nil
				}
				if e != nil {
					apply(e)
				}
			}
		}
	}, nil
}
