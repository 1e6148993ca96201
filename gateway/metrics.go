package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/ops"
)

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
	return &metrics{
		requests: ops.NewCounterVec(reg, "scalelab_gateway_requests_total", "HTTP requests by route, method and status.", "route", "method", "status"),
		duration: ops.NewHistogramVec(reg, "scalelab_gateway_request_seconds", "HTTP request latency by route.",
			prometheus.ExponentialBuckets(0.0005, 2, 16), "route"),
		bcrypt: ops.NewGauge(reg, "scalelab_gateway_bcrypt_in_flight", "Password compares running now (at most the bcrypt slots)."),
		logins: ops.NewCounterVec(reg, "scalelab_gateway_logins_total",
			"POST /auth/token by outcome: issued, refused (401), throttled (429), unavailable (503), invalid.", "outcome"),
	}
}
