package worker

import "github.com/prometheus/client_golang/prometheus"

// metrics are the worker's Prometheus series.
type metrics struct {
	outcomes *prometheus.CounterVec
	duration *prometheus.HistogramVec
	running  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalelab_worker_tasks_total",
			Help: "Task attempts by type and outcome (succeeded, failed, retried, interrupted).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scalelab_worker_task_seconds",
			Help:    "Time spent in task handlers.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"type"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scalelab_worker_tasks_running",
			Help: "Tasks running now.",
		}),
	}
	reg.MustRegister(m.outcomes, m.duration, m.running)
	return m
}
