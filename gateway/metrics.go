package gateway

import "github.com/prometheus/client_golang/prometheus"

// metrics are the gateway's Prometheus series.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// bcrypt counts the password compares running now: never more than
	// the bcrypt slots.
	bcrypt prometheus.Gauge
	// logins counts POST /auth/token by outcome: issued, refused (401),
	// throttled (429), unavailable (503: no bcrypt slot, or dbsvc down),
	// invalid (a bad body).
	logins *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalelab_gateway_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scalelab_gateway_request_seconds",
			Help:    "HTTP request latency by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route"}),
		bcrypt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scalelab_gateway_bcrypt_in_flight",
			Help: "Password compares running now (at most the bcrypt slots).",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalelab_gateway_logins_total",
			Help: "POST /auth/token by outcome: issued, refused (401), throttled (429), unavailable (503), invalid.",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.requests, m.duration, m.bcrypt, m.logins)
	return m
}
