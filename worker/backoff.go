package worker

import (
	"math/rand/v2"
	"time"
)

// maxBackoff caps the delay between attempts.
const maxBackoff = 5 * time.Minute

// backoff is the delay before attempt+1: exponential from RetryDelay,
// capped at maxBackoff, with ±10 % jitter so failed tasks don't retry in
// lockstep.
func (r *runner) backoff(attempt int) time.Duration {
	d := r.cfg.RetryDelay
	// Double step by step against the cap: a shift could overflow.
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	if d <= 0 {
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(d)/5 + 1))
	return d - d/10 + jitter
}
