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
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		outcomes: ops.NewCounterVec(reg, "scalelab_worker_tasks_total",
			"Task attempts by type and outcome (succeeded, failed, retried, interrupted).", "type", "outcome"),
		duration: ops.NewHistogramVec(reg, "scalelab_worker_task_seconds", "Time spent in task handlers.",
			prometheus.ExponentialBuckets(0.001, 4, 10), "type"),
		running: ops.NewGauge(reg, "scalelab_worker_tasks_running", "Tasks running now."),
	}
}
