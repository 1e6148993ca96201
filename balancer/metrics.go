package balancer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the balancer's Prometheus metrics, on the instance's own
// registry (see ops.NewRegistry).
type metrics struct {
	// requests counts client requests by the gateway that answered last
	// ("none" if none was tried) and the status class of the answer.
	requests *prometheus.CounterVec
	// seconds is the time from receiving a request to the end of its
	// response body, as the client experiences it minus the network.
	seconds prometheus.Histogram
	// backendErrors counts attempts that failed on a gateway: refused or
	// timed-out connections, timeouts waiting for headers, broken
	// connections. Clients that went away are not counted.
	backendErrors *prometheus.CounterVec
}

// noBackend labels requests that failed before a gateway was tried.
const noBackend = "none"

// statusClasses are the values of the code label, by status/100.
var statusClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalelab_balancer_requests_total",
			Help: "Client requests proxied, by the gateway that answered and the status class (2xx, 5xx, ...).",
		}, []string{"backend", "code"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "scalelab_balancer_request_seconds",
			Help: "Time to proxy a request, from receiving it to the end of the response body.",
			// 0.5 ms to 16 s: a proxied cache hit is sub-millisecond,
			// a timed-out request is tens of seconds.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalelab_balancer_backend_errors_total",
			Help: "Attempts that failed on a gateway (refused, timed out, broken), retried or not.",
		}, []string{"backend"}),
	}
	reg.MustRegister(m.requests, m.seconds, m.backendErrors)
	return m
}

// forBackend resolves the label values of one gateway once, so that the hot
// path increments counters without hashing labels. Only 2xx to 5xx are
// resolved (and so exported as zeros from the start); 1xx (upgrades) and
// odd statuses are rare and resolved when they happen.
func (m *metrics) forBackend(label string) backendMetrics {
	var bm backendMetrics
	for class := 2; class <= 5; class++ {
		bm.requests[class] = m.requests.WithLabelValues(label, statusClasses[class])
	}
	bm.errors = m.backendErrors.WithLabelValues(label)
	return bm
}

// observe records one finished client request; b is the gateway tried last,
// nil if none was.
func (m *metrics) observe(b *backend, status int, d time.Duration) {
	m.seconds.Observe(d.Seconds())
	class := statusClass(status)
	if b == nil {
		m.requests.WithLabelValues(noBackend, statusClasses[class]).Inc()
		return
	}
	if c := b.metrics.requests[class]; c != nil {
		c.Inc()
		return
	}
	m.requests.WithLabelValues(b.label, statusClasses[class]).Inc()
}

// backendMetrics are one gateway's resolved counters; requests is indexed by
// statusClass, nil where not resolved.
type backendMetrics struct {
	requests [len(statusClasses)]prometheus.Counter
	errors   prometheus.Counter
}

// statusClass returns the index in statusClasses of status.
func statusClass(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}
