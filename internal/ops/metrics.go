package ops

import "github.com/prometheus/client_golang/prometheus"

// The constructors below build a metric and register it on reg, so that a
// role declares each of its series in one line: name, help, then buckets
// and labels where the kind has them. They panic, as reg.MustRegister does,
// on a name registered twice or an invalid name: a programming error that
// shows at the role's start.

// NewCounter returns a counter registered on reg.
func NewCounter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

// NewCounterVec returns a counter with labels registered on reg.
func NewCounterVec(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

// NewGauge returns a gauge registered on reg.
func NewGauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

// NewHistogram returns a histogram with the given bucket bounds registered
// on reg.
func NewHistogram(reg prometheus.Registerer, name, help string, buckets []float64) prometheus.Histogram {
	return register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}))
}

// NewHistogramVec returns a histogram with labels and the given bucket
// bounds registered on reg.
func NewHistogramVec(reg prometheus.Registerer, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels))
}

// register registers c on reg and returns it, typed as it was built.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	reg.MustRegister(c)
	return c
}
