package worker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/ops"
)

// metrics are the worker's Prometheus series.
type metrics struct {
	outcomes *prometheus.CounterVec
	duration *prometheus.HistogramVec
	running  prometheus.Gauge
	// Per served queue: this worker's running tasks, and, as last read
	// (every queueSampleEvery), the queue's depth, in-flight tasks (all
	// workers) and the age of its oldest task.
	queueRunning  *prometheus.GaugeVec
	queueDepth    *prometheus.GaugeVec
	queueInFlight *prometheus.GaugeVec
	queueOldest   *prometheus.GaugeVec
	// queuePaused is 1 while a served queue is paused in the registry
	// (pause.go), as this worker last saw it.
	queuePaused *prometheus.GaugeVec
	// deadTasks is the dead letters per task type in TASKS_DLQ, as last
	// sampled: every type's, whoever serves it (the dead-letter subjects
	// name the type, not the queue).
	deadTasks *prometheus.GaugeVec
	// deadSeen are the types deadTasks has a series for, so a type whose
	// dead letters are all retried reads 0 rather than its last count.
	deadSeen map[string]bool
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		outcomes: ops.NewCounterVec(reg, "scalelab_worker_tasks_total",
			"Task attempts by type, queue and outcome (succeeded, failed, retried, dead, cancelled, interrupted).", "type", "queue", "outcome"),
		duration: ops.NewHistogramVec(reg, "scalelab_worker_task_seconds", "Time spent in task handlers.",
			prometheus.ExponentialBuckets(0.001, 4, 10), "type"),
		running: ops.NewGauge(reg, "scalelab_worker_tasks_running", "Tasks running now."),
		queueRunning: gaugeVec(reg, "scalelab_worker_queue_running",
			"Tasks of the queue this worker runs now."),
		queueDepth: gaugeVec(reg, "scalelab_worker_queue_depth",
			"Tasks on the queue, waiting or running (its consumer's pending plus ack-pending), as last sampled."),
		queueInFlight: gaugeVec(reg, "scalelab_worker_queue_in_flight",
			"Tasks of the queue handed to a worker and not yet acked, all workers, as last sampled."),
		queueOldest: gaugeVec(reg, "scalelab_worker_queue_oldest_age_seconds",
			"Age of the queue's oldest task, waiting or running (0: none), as last sampled."),
		queuePaused: gaugeVec(reg, "scalelab_worker_queue_paused",
			"1 while the queue is paused (POST /queues/{name}/pause): workers do not pull from it."),
		deadTasks: labeledGauge(reg, "scalelab_worker_dead_tasks",
			"Tasks of the type in the dead-letter stream TASKS_DLQ (attempts used up), as last sampled; every worker reports all types.", "type"),
		deadSeen: map[string]bool{},
	}
}

// gaugeVec returns a gauge with the label queue registered on reg.
func gaugeVec(reg prometheus.Registerer, name, help string) *prometheus.GaugeVec {
	return labeledGauge(reg, name, help, "queue")
}

// labeledGauge returns a gauge with labels registered on reg.
func labeledGauge(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	reg.MustRegister(g)
	return g
}
