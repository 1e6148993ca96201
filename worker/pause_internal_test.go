package worker

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestPausedQueuesAreNotPicked: a free slot's order and an idle slot's
// queue leave paused queues out; with all paused, an idle slot gets none
// (it waits for a change instead of pulling).
func TestPausedQueuesAreNotPicked(t *testing.T) {
	t.Parallel()
	a, b, c := &queueSource{name: "a", weight: 1}, &queueSource{name: "b", weight: 1}, &queueSource{name: "c", weight: 1}
	s := queueSet{queues: []*queueSource{a, b, c}, strict: true}
	now := time.Now().UnixNano()
	b.paused.Store(true)
	if got := s.order(now, nil); len(got) != 2 || got[0] != a || got[1] != c {
		t.Errorf("order with b paused = %v, want a, c", names(got))
	}
	// The sticky queue paused: another, free of waiting slots.
	if got := s.idleQueue(b, nil); got != a {
		t.Errorf("idleQueue(sticky b, paused) = %v, want a", got)
	}
	// Every unpaused queue has a slot waiting: one of them all the same.
	a.waiting.Store(1)
	c.waiting.Store(1)
	if got := s.idleQueue(b, nil); got == nil || got.paused.Load() {
		t.Errorf("idleQueue with a and c covered = %v, want a or c", got)
	}
	a.paused.Store(true)
	c.paused.Store(true)
	if got := s.order(now, nil); len(got) != 0 {
		t.Errorf("order with all paused = %v, want none", names(got))
	}
	if got := s.idleQueue(a, nil); got != nil {
		t.Errorf("idleQueue with all paused = %s, want none", got.name)
	}
	// A resume wakes the waiters, and gives the queue a live context.
	r := newRunner(DefaultConfig(), nil, &s, nil, nil, newMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	defer r.stopTaking()
	r.initPause()
	ch := s.changes()
	r.setPaused("a", true) // no change: already paused
	select {
	case <-ch:
		t.Fatal("changes() closed though nothing changed")
	default:
	}
	r.setPaused("a", false)
	select {
	case <-ch:
	default:
		t.Error("changes() not closed by a resume")
	}
	if a.paused.Load() || a.live.Load().ctx.Err() != nil {
		t.Errorf("a after its resume: paused %v, live context %v; want running", a.paused.Load(), a.live.Load().ctx.Err())
	}
	live := a.live.Load()
	r.setPaused("a", true)
	if live.ctx.Err() == nil {
		t.Error("a's pulls not withdrawn by its pause (live context not cancelled)")
	}
}
