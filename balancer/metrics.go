package balancer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/ops"
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
	// ejections counts passive ejections by gateway.
	ejections *prometheus.CounterVec
	// checks counts active health checks by gateway and result.
	checks *prometheus.CounterVec
	// retries counts retries by reason; retriesDenied counts the ones the
	// budget refused.
	retries       [len(retryReasons)]prometheus.Counter
	retriesDenied prometheus.Counter
	// overloaded counts requests refused past MaxInFlight.
	overloaded prometheus.Counter
}

// noBackend labels requests that failed before a gateway was tried.
const noBackend = "none"

// statusClasses are the values of the code label, by status/100.
var statusClasses = [...]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Reasons for a retry, the values of the reason label.
const (
	retryConnect   = iota // the gateway could not be connected to
	retryAfterSend        // the exchange broke after the request was sent
)

var retryReasons = [...]string{retryConnect: "connect", retryAfterSend: "after_send"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: ops.NewCounterVec(reg, "scalelab_balancer_requests_total",
			"Client requests proxied, by the gateway that answered and the status class (2xx, 5xx, ...).", "backend", "code"),
		// 0.5 ms to 16 s: a proxied cache hit is sub-millisecond, a
		// timed-out request is tens of seconds.
		seconds: ops.NewHistogram(reg, "scalelab_balancer_request_seconds",
			"Time to proxy a request, from receiving it to the end of the response body.", prometheus.ExponentialBuckets(0.0005, 2, 16)),
		backendErrors: ops.NewCounterVec(reg, "scalelab_balancer_backend_errors_total",
			"Attempts that failed on a gateway (refused, timed out, broken), retried or not.", "backend"),
		ejections: ops.NewCounterVec(reg, "scalelab_balancer_ejections_total", "Times a gateway was ejected after failed requests in a row.", "backend"),
		checks:    ops.NewCounterVec(reg, "scalelab_balancer_health_checks_total", "Active health checks of a gateway, by result (pass, fail).", "backend", "result"),
		overloaded: ops.NewCounter(reg, "scalelab_balancer_overloaded_total",
			"Requests refused with 503 because --max-inflight requests were already in flight."),
		retriesDenied: ops.NewCounter(reg, "scalelab_balancer_retries_denied_total", "Retries not made because the retry budget was spent."),
	}
	retries := ops.NewCounterVec(reg, "scalelab_balancer_retries_total",
		"Requests sent to another gateway after a failed attempt, by reason (connect, after_send).", "reason")
	for i, r := range retryReasons {
		m.retries[i] = retries.WithLabelValues(r)
	}
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
	bm.ejections = m.ejections.WithLabelValues(label)
	bm.checkPass = m.checks.WithLabelValues(label, "pass")
	bm.checkFail = m.checks.WithLabelValues(label, "fail")
	return bm
}

// forget drops the series of a gateway that discovery no longer finds, so
// that a compose project that scales up and down for days does not grow
// its metrics without end.
func (m *metrics) forget(label string) {
	m.requests.DeletePartialMatch(prometheus.Labels{"backend": label})
	m.backendErrors.DeleteLabelValues(label)
	m.ejections.DeleteLabelValues(label)
	m.checks.DeletePartialMatch(prometheus.Labels{"backend": label})
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
	requests             [len(statusClasses)]prometheus.Counter
	errors               prometheus.Counter
	ejections            prometheus.Counter
	checkPass, checkFail prometheus.Counter
}

// checks returns the counter of a check that passed or failed.
func (bm backendMetrics) checks(passed bool) prometheus.Counter {
	if passed {
		return bm.checkPass
	}
	return bm.checkFail
}

// statusClass returns the index in statusClasses of status.
func statusClass(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// poolCollector exports the pool's gauges at scrape time, read from the
// atomics the hot path keeps anyway, so they cost requests nothing.
type poolCollector struct {
	pool     *pool
	inFlight *prometheus.Desc
	state    *prometheus.Desc
	ready    *prometheus.Desc
}

func newPoolCollector(p *pool) *poolCollector {
	return &poolCollector{
		pool: p,
		inFlight: prometheus.NewDesc("scalelab_balancer_backend_in_flight",
			"Requests in flight on a gateway.", []string{"backend"}, nil),
		state: prometheus.NewDesc("scalelab_balancer_backend_state",
			"1 for the state a gateway is in (healthy, unhealthy, ejected, draining), 0 for the others.",
			[]string{"backend", "state"}, nil),
		ready: prometheus.NewDesc("scalelab_balancer_backends_ready",
			"Gateways that get new requests.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.inFlight
	ch <- c.state
	ch <- c.ready
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, b := range *c.pool.all.Load() {
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(b.inFlight.Load()), b.label)
		current := b.state()
		for _, s := range states {
			v := 0.0
			if s == current {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, b.label, s)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(len(c.pool.ready.Load().backends)))
}
