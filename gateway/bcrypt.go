package gateway

import (
	"context"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// loginWait is how long a login waits for a bcrypt slot before it is
// answered 503: about one compare at cost 12, so a short burst is
// absorbed while a flood is turned away at once instead of piling up.
const loginWait = 250 * time.Millisecond

// DefaultBcryptSlots is the number of bcrypt compares a gateway runs at
// once when procs is GOMAXPROCS as the runtime chose it, one per core
// (before a command raised it, see Config.BcryptSlots): half of them, at
// least 1, so bcrypt never takes more than half the cores and the rest
// serve the API whatever the logins do.
func DefaultBcryptSlots(procs int) int { return max(1, procs/2) }

// bcryptSlots bounds the bcrypt compares running at once in one gateway,
// and the logins waiting for one. bcrypt is deliberately slow (about
// 250 ms of CPU at cost 12), so without a bound a burst of logins, or
// someone guessing passwords from many addresses (which the login
// throttle does not stop), would take every core from the API. Slots and
// waiting are semaphores: send to acquire, receive to release.
//
// A compare runs on its caller's goroutine, at the priority of the rest.
// On a thread of its own at nice 19 (with a P of its own beside the
// API's) it measured no better on the flood test, and under CPU load from
// outside the process it stalled every garbage collection, which must
// wait for that thread to run (docs/SECURITY.md, "Login throttling").
type bcryptSlots struct {
	slots   chan struct{}
	waiting chan struct{}
	wait    time.Duration
	// inFlight, if set, counts the slots taken.
	inFlight prometheus.Gauge
}

// newBcryptSlots returns n slots (DefaultBcryptSlots of GOMAXPROCS when
// n is 0). Up to 4 logins per slot may wait loginWait for one; more get
// 503 at once, so waiting logins are bounded in number as well as in
// time.
func newBcryptSlots(n int, inFlight prometheus.Gauge) *bcryptSlots {
	if n <= 0 {
		n = DefaultBcryptSlots(runtime.GOMAXPROCS(0))
	}
	return &bcryptSlots{slots: make(chan struct{}, n), waiting: make(chan struct{}, 4*n), wait: loginWait, inFlight: inFlight}
}

// acquire takes a slot, waiting at most b.wait. It returns false when none
// came free in time, when too many logins wait already, or when ctx
// ended; the caller answers 503 with Retry-After rather than queueing
// without bound.
func (b *bcryptSlots) acquire(ctx context.Context) bool {
	if !b.take(ctx) {
		return false
	}
	if b.inFlight != nil {
		b.inFlight.Inc()
	}
	return true
}

func (b *bcryptSlots) take(ctx context.Context) bool {
	select {
	case b.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case b.waiting <- struct{}{}:
		defer func() { <-b.waiting }()
	default:
		return false // the queue is full: answered at once
	}
	t := time.NewTimer(b.wait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (b *bcryptSlots) release() {
	if b.inFlight != nil {
		b.inFlight.Dec()
	}
	<-b.slots
}
