package worker

import "sync/atomic"

// TaskStats are one worker's task counters since it started. The process
// service reports them as its endpoint's stats data, so `nats micro stats
// process --json` (and the balancer's dashboard) see what each worker
// does with tasks, next to the sync calls micro counts itself.
type TaskStats struct {
	// ID is the worker's id (--id).
	ID string `json:"id"`
	// Running is how many tasks it runs now.
	Running int64 `json:"running"`
	// Succeeded, Failed (for good: a permanent error or an unknown type),
	// Retried (an attempt failed, another follows), Dead (attempts used
	// up, moved to the dead-letter stream), Cancelled and Interrupted
	// (handed back at shutdown) count attempts by outcome.
	Succeeded   uint64 `json:"succeeded"`
	Failed      uint64 `json:"failed"`
	Retried     uint64 `json:"retried"`
	Dead        uint64 `json:"dead"`
	Cancelled   uint64 `json:"cancelled"`
	Interrupted uint64 `json:"interrupted"`
}

// taskCounts are the atomics behind TaskStats; the Prometheus series
// count the same, by type, but cannot be read back cheaply.
type taskCounts struct {
	running                                                  atomic.Int64
	succeeded, failed, retried, dead, cancelled, interrupted atomic.Uint64
}

// count records an attempt's outcome in the metrics and the counts.
func (r *runner) count(typ, outcome string) {
	r.metrics.outcomes.WithLabelValues(typ, outcome).Inc()
	c := &r.counts
	switch outcome {
	case "succeeded":
		c.succeeded.Add(1)
	case "failed":
		c.failed.Add(1)
	case "retried":
		c.retried.Add(1)
	case "dead":
		c.dead.Add(1)
	case "cancelled":
		c.cancelled.Add(1)
	case "interrupted":
		c.interrupted.Add(1)
	}
}

// stats returns the counts now.
func (r *runner) stats() TaskStats {
	c := &r.counts
	return TaskStats{
		ID: r.cfg.ID, Running: c.running.Load(),
		Succeeded: c.succeeded.Load(), Failed: c.failed.Load(), Retried: c.retried.Load(),
		Dead: c.dead.Load(), Cancelled: c.cancelled.Load(), Interrupted: c.interrupted.Load(),
	}
}
