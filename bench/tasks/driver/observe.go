package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// An observer learns the outcomes of a phase's tasks for the tracker.
type observer interface {
	// begin is called before a phase's first submission.
	begin(ctx context.Context) error
	// settled returns once every task of ph has finished (or the timeout
	// passed): the end of the measured window.
	settled(ctx context.Context, ph *phase) error
	// collect hands ph's outcomes to the tracker, if settled did not.
	collect(ctx context.Context, ph *phase) error
	// received counts the NATS messages the server sent to the observer,
	// so they can be left out of the system's own.
	received() int64
}

// outcomeState reports whether a record state is final, and a success.
func outcomeState(state string) (final, ok bool) {
	switch state {
	case "succeeded":
		return true, true
	case "failed", "dead", "cancelled":
		return true, false
	}
	return false, false
}

// watchObserver watches the tasks bucket live: every record update is also
// sent to the driver while the system is measured (about 2.8 per task), and
// the server and the driver pay for that delivery.
type watchObserver struct {
	w       jetstream.KeyWatcher
	timeout time.Duration
	msgs    atomic.Int64
}

func startWatch(ctx context.Context, js jetstream.JetStream, tr *tracker, timeout time.Duration) (*watchObserver, error) {
	kv, err := js.KeyValue(ctx, "tasks")
	if err != nil {
		return nil, fmt.Errorf("open bucket tasks: %w", err)
	}
	// UpdatesOnly: records of earlier rounds are not replayed.
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("watch bucket tasks: %w", err)
	}
	o := &watchObserver{w: w, timeout: timeout}
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			o.msgs.Add(1)
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if final, ok := outcomeState(recordState(e.Value())); final {
				// Created is the server's time of the write: when the
				// outcome was stored, free of this watcher's own lag.
				tr.finish(e.Key(), ok, e.Created(), time.Now())
			}
		}
	}()
	return o, nil
}

func (o *watchObserver) stop()                                        { _ = o.w.Stop() }
func (o *watchObserver) begin(context.Context) error                  { return nil }
func (o *watchObserver) collect(context.Context, *phase) error        { return nil }
func (o *watchObserver) received() int64                              { return o.msgs.Load() }
func (o *watchObserver) settled(ctx context.Context, ph *phase) error { return ph.wait(ctx, o.timeout) }

// afterObserver reads the outcomes from the stored records once the queue
// is drained. While the system is measured it only asks for the TASKS
// stream's and consumer's state every pollEvery (two small JetStream API
// calls), so the measurement barely loads what it measures. The times are
// the same as the watch's: each record's final write, stamped by the
// server. The bucket keeps one revision per key, so the final write is the
// only entry of a finished task left in the bucket's stream.
type afterObserver struct {
	js      jetstream.JetStream
	tr      *tracker
	timeout time.Duration
	from    uint64 // last sequence of the bucket's stream before the phase
	msgs    atomic.Int64
}

const (
	kvStream  = "KV_tasks"
	kvPrefix  = "$KV.tasks."
	pollEvery = 10 * time.Millisecond
	// collectGrace bounds collect's second looks at the records.
	collectGrace = 5 * time.Second
)

func (o *afterObserver) received() int64 { return o.msgs.Load() }

func (o *afterObserver) begin(ctx context.Context) error {
	s, err := o.js.Stream(ctx, kvStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", kvStream, err)
	}
	o.from = s.CachedInfo().State.LastSeq
	return nil
}

// settled polls until the stream TASKS is empty: it is a work queue, so a
// message leaves it when a worker acknowledges it, and a worker acks a
// task after it stored the record's outcome, so by then every outcome is
// stored. (The stream, not a consumer: the workers' consumer was
// "workers" before queues and is one per queue, "workers-<queue>", since;
// the baseline of an A/B run may be either.)
func (o *afterObserver) settled(ctx context.Context, ph *phase) error {
	deadline := time.Now().Add(o.timeout)
	for {
		drained, err := o.drained(ctx)
		if err != nil {
			return err
		}
		if drained {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the stream TASKS was not drained after %v", o.timeout)
		}
		select {
		case <-time.After(pollEvery):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (o *afterObserver) drained(ctx context.Context) (bool, error) {
	s, err := o.js.Stream(ctx, "TASKS")
	if err != nil {
		return false, fmt.Errorf("stream TASKS: %w", err)
	}
	o.msgs.Add(1)
	return s.CachedInfo().State.Msgs == 0, nil
}

// collect reads the bucket's stream from the phase's start and settles
// every task whose record is final. Once the queue is drained every outcome
// is stored, so the stream is read again only for collectGrace, in case a
// record is still short of final (then the phase's error says how many).
func (o *afterObserver) collect(ctx context.Context, ph *phase) error {
	deadline := time.Now().Add(collectGrace)
	for {
		if err := o.replay(ctx); err != nil {
			return err
		}
		if ph.complete() || time.Now().After(deadline) {
			return ph.wait(ctx, 0)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// replay hands every final record stored after o.from to the tracker.
func (o *afterObserver) replay(ctx context.Context) error {
	s, err := o.js.Stream(ctx, kvStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", kvStream, err)
	}
	last := s.CachedInfo().State.LastSeq
	if last <= o.from {
		return nil
	}
	c, err := o.js.OrderedConsumer(ctx, kvStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   o.from + 1,
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", kvStream, err)
	}
	for {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", kvStream, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("read %s: %w", kvStream, err)
			}
			if final, ok := outcomeState(recordState(msg.Data())); final {
				o.tr.finish(strings.TrimPrefix(msg.Subject(), kvPrefix), ok, meta.Timestamp, meta.Timestamp)
			}
			if meta.Sequence.Stream >= last {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read %s: %w", kvStream, err)
		}
		if n == 0 { // the rest was overwritten since: nothing left to read
			return nil
		}
	}
}
