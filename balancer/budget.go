package balancer

import (
	"sync/atomic"
	"time"
)

// budgetSlots is the length of the retry budget's window in seconds: one
// slot per second.
const budgetSlots = 10

// retryBudget caps retries at a share of recent requests, so that an outage
// is not multiplied by retries: with a 20 % budget, gateways that fail
// everything see at most 1.2 times the client traffic, not 1 + MaxRetries
// times. It is Finagle's RetryBudget idea on a 10 s sliding window of
// one-second slots: a retry is allowed while the retries of the window are
// below min + percent·requests/100.
//
// Counting a request is one atomic add on the current slot (plus a load of
// its second), so it stays on the hot path. The slots are cleared by
// whoever first uses them in a new second; a count racing with that may be
// lost, and two retries racing may both pass the check. The budget is a
// bound on orders of magnitude, not an exact quota.
type retryBudget struct {
	percent int64
	min     int64
	slots   [budgetSlots]budgetSlot
}

type budgetSlot struct {
	second   atomic.Int64 // the Unix second this slot counts
	requests atomic.Int64
	retries  atomic.Int64
}

func newRetryBudget(percent, min int) *retryBudget {
	return &retryBudget{percent: int64(percent), min: int64(min)}
}

// slot returns the slot of the second of now, cleared if it counted an
// older second.
func (b *retryBudget) slot(now time.Time) *budgetSlot {
	sec := now.Unix()
	s := &b.slots[sec%budgetSlots]
	if old := s.second.Load(); old != sec && s.second.CompareAndSwap(old, sec) {
		s.requests.Store(0)
		s.retries.Store(0)
	}
	return s
}

// request counts one client request.
func (b *retryBudget) request(now time.Time) { b.slot(now).requests.Add(1) }

// allow reports whether one more retry fits the budget, and if so counts
// it.
func (b *retryBudget) allow(now time.Time) bool {
	sec := now.Unix()
	var requests, retries int64
	for i := range b.slots {
		s := &b.slots[i]
		if sec-s.second.Load() < budgetSlots {
			requests += s.requests.Load()
			retries += s.retries.Load()
		}
	}
	if retries >= b.min+b.percent*requests/100 {
		return false
	}
	b.slot(now).retries.Add(1)
	return true
}
