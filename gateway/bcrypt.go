package gateway

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
)

// loginWait is how long a login waits for a bcrypt slot before it is
// answered 503: about one compare at cost 12, so a short burst is
// absorbed while a flood is turned away at once instead of piling up.
const loginWait = 250 * time.Millisecond

// bcryptNice is the Linux nice value of the threads that run bcrypt
// compares: the lowest priority, so that while the API's threads want the
// CPU the kernel gives it to them first, and a compare gets what is left.
const bcryptNice = 19

// DefaultBcryptSlots is the number of bcrypt compares a gateway runs at
// once when procs is its GOMAXPROCS as the runtime chose it (before a
// command raised it, see Config.BcryptSlots): half of them, at least 1,
// so bcrypt never takes more than half the cores.
func DefaultBcryptSlots(procs int) int { return max(1, procs/2) }

// bcryptSlots bounds the bcrypt compares running at once in one gateway,
// and the logins waiting for one. bcrypt is deliberately slow (about
// 250 ms of CPU at cost 12), so without a bound a burst of logins, or
// someone guessing passwords from many addresses (which the login
// throttle does not stop), would take every core from the API. Slots and
// waiting are semaphores: send to acquire, receive to release.
//
// With lowPriority set, compare runs each compare on an OS thread of its
// own at nice bcryptNice. The bound alone did not keep the API's latency:
// a compare holds its P (and its core) for its whole 250 ms, Go preempts
// it only every 10 ms, and on two cores with one slot the API was left
// one P, with cached GET /data p99 2-7 times its value without a login
// flood. The kernel schedules threads, not goroutines, so only a thread of
// lower priority lets the API's threads go first; Config.BcryptSlots says
// how the commands give the process a P per slot beside them.
type bcryptSlots struct {
	slots   chan struct{}
	waiting chan struct{}
	wait    time.Duration
	// inFlight, if set, counts the slots taken.
	inFlight prometheus.Gauge
	// lowPriority runs compares on threads at nice bcryptNice; false (the
	// zero value, and after the first failure to lower a thread's
	// priority) runs them on the caller's goroutine.
	lowPriority atomic.Bool
	// failed logs, once, that priorities cannot be lowered.
	failed sync.Once
	log    *slog.Logger
	// compareFn and lowerFn are bcrypt.CompareHashAndPassword and
	// lowerThreadPriority, or a test's stand-ins.
	compareFn func(hash, password []byte) error
	lowerFn   func(nice int) error
}

// newBcryptSlots returns n slots (DefaultBcryptSlots when n is 0) whose
// compares run at low priority. Up to 4 logins per slot may wait
// loginWait for one; more get 503 at once, so waiting logins are bounded
// in number as well as in time.
func newBcryptSlots(n int, inFlight prometheus.Gauge, log *slog.Logger) *bcryptSlots {
	if n <= 0 {
		n = DefaultBcryptSlots(runtime.GOMAXPROCS(0))
	}
	b := &bcryptSlots{slots: make(chan struct{}, n), waiting: make(chan struct{}, 4*n), wait: loginWait, inFlight: inFlight, log: log}
	b.lowPriority.Store(true)
	return b
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

// compare is bcrypt.CompareHashAndPassword, run by the holder of a slot.
// With b.lowPriority it runs on a new goroutine locked to its OS thread,
// whose nice value it raises to bcryptNice; that goroutine never unlocks,
// so when it ends the runtime ends the thread with it, and no other
// goroutine ever runs at that priority. (Threads the runtime starts while
// one is locked come from its template thread, not from the niced one, so
// they do not inherit the nice value either.) A thread costs some tens of
// microseconds to start, nothing beside a compare's 250 ms, and a pool of
// long-lived threads would need stopping. Where the priority cannot be
// lowered (not Linux, or setpriority refused) it logs that once and runs
// every compare as before, on the caller's goroutine.
func (b *bcryptSlots) compare(hash, password []byte) error {
	cmp := b.compareFn
	if cmp == nil {
		cmp = bcrypt.CompareHashAndPassword
	}
	if !b.lowPriority.Load() {
		return cmp(hash, password)
	}
	lower := b.lowerFn
	if lower == nil {
		lower = lowerThreadPriority
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := lower(bcryptNice); err != nil {
			// Nothing changed on this thread: it may serve others again.
			runtime.UnlockOSThread()
			b.lowPriority.Store(false)
			b.failed.Do(func() {
				if b.log != nil {
					b.log.Warn("bcrypt compares run at normal priority", "err", err)
				}
			})
		}
		done <- cmp(hash, password)
	}()
	return <-done
}
