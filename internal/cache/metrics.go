package cache

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are a Cache's counts; Stats and the Prometheus series both
// read them, so the two never disagree.
type counters struct {
	localHits, localMisses       atomic.Uint64
	kvHits, kvMisses, kvErrors   atomic.Uint64
	loads, fills, fillsDropped   atomic.Uint64
	leaseWaits, refreshes        atomic.Uint64
	invConfirmed, invUnconfirmed atomic.Uint64
	invFailed                    atomic.Uint64
}

// Register adds the cache's series to reg.
func (c *Cache) Register(reg prometheus.Registerer) {
	counter := func(name, help string, labels prometheus.Labels, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(v.Load()) })
	}
	const lookups = "scalelab_cache_lookups_total"
	const lookupsHelp = "Cache lookups by tier (local, kv) and result (hit, miss, error: the tier was skipped)."
	const invs = "scalelab_cache_invalidations_total"
	const invsHelp = "Invalidations by result: confirmed by every process, unconfirmed (some process did not answer), failed (KV delete failed)."
	reg.MustRegister(
		counter(lookups, lookupsHelp, prometheus.Labels{"tier": "local", "result": "hit"}, &c.n.localHits),
		counter(lookups, lookupsHelp, prometheus.Labels{"tier": "local", "result": "miss"}, &c.n.localMisses),
		counter(lookups, lookupsHelp, prometheus.Labels{"tier": "kv", "result": "hit"}, &c.n.kvHits),
		counter(lookups, lookupsHelp, prometheus.Labels{"tier": "kv", "result": "miss"}, &c.n.kvMisses),
		counter(lookups, lookupsHelp, prometheus.Labels{"tier": "kv", "result": "error"}, &c.n.kvErrors),
		counter("scalelab_cache_loads_total", "Reads of the source of truth (the database).", nil, &c.n.loads),
		counter("scalelab_cache_fills_total", "Values stored in KV after a load.", nil, &c.n.fills),
		counter("scalelab_cache_fills_dropped_total", "Fills abandoned because the key changed while loading.", nil, &c.n.fillsDropped),
		counter("scalelab_cache_lease_waits_total", "Misses that waited for another process's fill.", nil, &c.n.leaseWaits),
		counter("scalelab_cache_refreshes_total", "Background reloads of entries near the end of their TTL (refresh ahead).", nil, &c.n.refreshes),
		counter(invs, invsHelp, prometheus.Labels{"result": "confirmed"}, &c.n.invConfirmed),
		counter(invs, invsHelp, prometheus.Labels{"result": "unconfirmed"}, &c.n.invUnconfirmed),
		counter(invs, invsHelp, prometheus.Labels{"result": "failed"}, &c.n.invFailed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scalelab_cache_local_entries", Help: "Entries in the near-cache."},
			func() float64 { return float64(c.Stats().Local.Entries) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scalelab_cache_local_bytes", Help: "Bytes of keys and values in the near-cache."},
			func() float64 { return float64(c.Stats().Local.Bytes) }),
	)
}
