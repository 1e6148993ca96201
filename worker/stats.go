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
	// Queues are the queues it serves, as it last read them.
	Queues []QueueStats `json:"queues,omitempty"`
}

// outcome is how one attempt of a task ended, as TaskStats and the
// outcome label of scalelab_worker_tasks_total name it.
type outcome int

const (
	succeeded outcome = iota
	failed
	retried
	dead
	cancelled
	interrupted
	numOutcomes
)

// outcomeNames are the outcomes' label values.
var outcomeNames = [numOutcomes]string{"succeeded", "failed", "retried", "dead", "cancelled", "interrupted"}

// taskCounts are the atomics behind TaskStats; the Prometheus series
// count the same, by type, but cannot be read back cheaply.
type taskCounts struct {
	running  atomic.Int64
	outcomes [numOutcomes]atomic.Uint64
}

// count records an attempt's outcome in the metrics and the counts.
func (r *runner) count(d *delivery, o outcome) {
	r.metrics.outcomes.WithLabelValues(d.env.Type, d.queue, outcomeNames[o]).Inc()
	r.counts.outcomes[o].Add(1)
}

// stats returns the counts now.
func (r *runner) stats() TaskStats {
	n := func(o outcome) uint64 { return r.counts.outcomes[o].Load() }
	var queues []QueueStats
	if qs := r.queueStats.Load(); qs != nil {
		queues = *qs
	}
	return TaskStats{
		Queues: queues,
		ID:     r.cfg.ID, Running: r.counts.running.Load(),
		Succeeded: n(succeeded), Failed: n(failed), Retried: n(retried),
		Dead: n(dead), Cancelled: n(cancelled), Interrupted: n(interrupted),
	}
}
