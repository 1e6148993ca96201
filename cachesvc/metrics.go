package cachesvc

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metrics count the cache API's traffic.
type metrics struct {
	lookups *prometheus.CounterVec
	writes  prometheus.Counter
	deletes prometheus.Counter
	flushes prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scalelab_cachesvc_lookups_total",
			Help: "GET /cache/{key} lookups by result (hit, miss).",
		}, []string{"result"}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scalelab_cachesvc_writes_total",
			Help: "POST /cache/{key} writes.",
		}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scalelab_cachesvc_deletes_total",
			Help: "DELETE /cache/{key} deletes, each also broadcast to the gateways' near-caches.",
		}),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scalelab_cachesvc_flushes_total",
			Help: "DELETE /cache flushes of the bucket and the gateways' near-caches.",
		}),
	}
	reg.MustRegister(m.lookups, m.writes, m.deletes, m.flushes)
	return m
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
