package cachesvc

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/scalelab/scalelab/internal/ops"
)

// metrics count the cache API's traffic.
type metrics struct {
	lookups *prometheus.CounterVec
	writes  prometheus.Counter
	deletes prometheus.Counter
	flushes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		lookups: ops.NewCounterVec(reg, "scalelab_cachesvc_lookups_total", "GET /cache/{key} lookups by result (hit, miss).", "result"),
		writes:  ops.NewCounter(reg, "scalelab_cachesvc_writes_total", "POST /cache/{key} writes."),
		deletes: ops.NewCounter(reg, "scalelab_cachesvc_deletes_total", "DELETE /cache/{key} deletes, each also broadcast to the gateways' near-caches."),
		flushes: ops.NewCounter(reg, "scalelab_cachesvc_flushes_total", "DELETE /cache flushes of the bucket and the gateways' near-caches."),
	}
}

// counts reads the hit and miss counters back for GET /cache.
func (m *metrics) counts() (hits, misses uint64) {
	read := func(result string) uint64 {
		var d dto.Metric
		if err := m.lookups.WithLabelValues(result).Write(&d); err != nil {
			return 0
		}
		return uint64(d.GetCounter().GetValue())
	}
	return read("hit"), read("miss")
}
