package balancer

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// latencyWindow is how long one window of a latencyHist lasts. Quantiles
// are read over the current and the previous window: the last 30 to 60 s.
const latencyWindow = 30 * time.Second

// Buckets of latencyHist: values are microseconds; below subBuckets each
// value has its own bucket, above that each power of two is split into
// subBuckets equal parts. A bucket's width is at most 1/subBuckets of its
// lower bound, so a reported quantile is within 12.5 % of the truth.
const (
	subBucketBits = 3
	subBuckets    = 1 << subBucketBits
	// 2^34 µs is about 4.8 hours: anything longer lands in the last bucket.
	latencyBuckets = (34 - subBucketBits + 1) * subBuckets
)

// latencyHist is a lock-free histogram of one backend's latencies over a
// sliding window, for the p50 and p99 of GET /-/balancer.
//
// Why not the Prometheus histogram: its quantiles are estimated by
// interpolating inside a handful of exponential buckets (off by up to 2x
// here), and it counts since the start, so one bad hour hides in a day of
// good ones. This one has fine buckets and forgets: it answers "how fast
// is this gateway now", which is what an operator looking at one backend
// asks. Prometheus keeps the request_seconds histogram for rates and
// long-range quantiles.
//
// Recording is one atomic add (plus a load of the window's epoch). Two
// windows alternate; the first recorder of a new epoch clears the older
// one. A record racing with that clearing may be lost or land in the wrong
// window: the quantiles are estimates, and one sample in thousands does
// not move them.
type latencyHist struct {
	windows [2]latencyBucketSet
}

type latencyBucketSet struct {
	epoch  atomic.Int64 // which latencyWindow-long stretch since the Unix epoch this counts
	counts [latencyBuckets]atomic.Uint64
}

// record adds one latency observed at now.
func (h *latencyHist) record(now time.Time, d time.Duration) {
	epoch := now.UnixNano() / int64(latencyWindow)
	w := &h.windows[epoch&1]
	if e := w.epoch.Load(); e != epoch && w.epoch.CompareAndSwap(e, epoch) {
		for i := range w.counts {
			w.counts[i].Store(0)
		}
	}
	w.counts[latencyBucket(d)].Add(1)
}

// quantiles returns the latencies below which the fractions qs of the
// samples of the last one or two windows fall, each an upper bound of its
// bucket; zeros when there are no samples.
func (h *latencyHist) quantiles(now time.Time, qs ...float64) []time.Duration {
	epoch := now.UnixNano() / int64(latencyWindow)
	var counts [latencyBuckets]uint64
	var total uint64
	for i := range h.windows {
		w := &h.windows[i]
		if e := w.epoch.Load(); e != epoch && e != epoch-1 {
			continue
		}
		for j := range w.counts {
			c := w.counts[j].Load()
			counts[j] += c
			total += c
		}
	}
	out := make([]time.Duration, len(qs))
	if total == 0 {
		return out
	}
	for k, q := range qs {
		rank := uint64(q*float64(total) + 0.5)
		rank = max(rank, 1)
		var seen uint64
		for j, c := range counts {
			seen += c
			if seen >= rank {
				out[k] = latencyBucketUpper(j)
				break
			}
		}
	}
	return out
}

// latencyBucket returns the bucket of d.
func latencyBucket(d time.Duration) int {
	us := uint64(max(d.Microseconds(), 0))
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 1 // us is in [2^exp, 2^(exp+1))
	sub := int(us>>(exp-subBucketBits)) & (subBuckets - 1)
	i := (exp-subBucketBits+1)*subBuckets + sub
	return min(i, latencyBuckets-1)
}

// latencyBucketUpper returns the smallest duration above every value of
// bucket i.
func latencyBucketUpper(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i+1) * time.Microsecond
	}
	exp := i/subBuckets + subBucketBits - 1
	sub := i % subBuckets
	lower := uint64(1)<<exp + uint64(sub)<<(exp-subBucketBits)
	width := uint64(1) << (exp - subBucketBits)
	return time.Duration(lower+width) * time.Microsecond
}
