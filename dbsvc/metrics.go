package dbsvc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/ops"
)

// metrics are the role's Prometheus metrics, registered on the instance's own
// registry (ops.NewRegistry).
type metrics struct {
	queries *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

// newMetrics registers the metrics on reg. Every query label is created up
// front, so that dashboards see zeros rather than missing series.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queries: ops.NewCounterVec(reg, "scalelab_db_queries_total",
			"Database queries run by dbsvc, by query (data, item_get, item_create, item_update, item_patch, item_list, item_delete, user_put, user_get).", "query"),
		seconds: ops.NewHistogramVec(reg, "scalelab_db_query_seconds", "Duration of database queries run by dbsvc, by query.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "query"),
	}
	for _, q := range []string{queryData, queryItemGet, queryItemCreate, queryItemUpdate, queryItemPatch, queryItemList, queryItemDelete, queryUserPut, queryUserGet} {
		m.queries.WithLabelValues(q)
		m.seconds.WithLabelValues(q)
	}
	return m
}

// observe records one query; it does nothing on a nil *metrics.
func (m *metrics) observe(query string, d time.Duration) {
	if m == nil {
		return
	}
	m.queries.WithLabelValues(query).Inc()
	m.seconds.WithLabelValues(query).Observe(d.Seconds())
}
