package cachesvc

import (
	"context"
	"net/http"
	"time"

	"github.com/scalelab/scalelab/internal/cache"
)

// statsTimeout bounds collecting the processes' stats for GET /cache: a
// process that does not answer is left out rather than hold up the
// endpoint.
const statsTimeout = time.Second

// Stats is the body of GET /cache: the bucket, the lookups of this API
// (api_*), and the tiers as the processes reading through internal/cache
// (the gateways) count them.
type Stats struct {
	Bucket     string  `json:"bucket"`
	Values     uint64  `json:"values"`
	Bytes      uint64  `json:"bytes"`
	TTLSeconds float64 `json:"ttl_seconds"`
	History    int64   `json:"history"`
	// Hits, Misses and HitRatio count GET /cache/{key} of this instance.
	Hits     uint64  `json:"api_hits"`
	Misses   uint64  `json:"api_misses"`
	HitRatio float64 `json:"api_hit_ratio"`
	// Tiers sums the processes' counters per tier.
	Tiers Tiers `json:"tiers"`
	// Loads sums the processes' database reads.
	Loads uint64 `json:"loads"`
	// OverallHitRatio is the share of the processes' lookups that a cache
	// tier answered: (local hits + kv hits) / (local hits + kv hits +
	// loads). Not local and kv misses: a local miss goes on to KV, so it
	// would be counted twice, and a KV miss ends in a load (or in a wait
	// for another process's fill, then a kv hit). Loads of processes with
	// --cache off count as lookups no tier answered.
	OverallHitRatio float64 `json:"hit_ratio"`
	// Processes are the processes' own stats, by id; left out when they
	// could not be collected, empty when no process reads through the
	// cache.
	Processes []cache.Stats `json:"processes,omitzero"`
}

// Tiers are the processes' tier counters summed. KV's entries and bytes
// are the bucket's, which every process shares; local's are the sum of
// the near-caches.
type Tiers struct {
	Local cache.TierStats `json:"local"`
	KV    cache.TierStats `json:"kv"`
}

// handleStats answers GET /cache with the Stats of the bucket, of this API
// and of the processes that answer within statsTimeout.
func (a *api) handleStats(w http.ResponseWriter, r *http.Request) {
	st, err := a.kv.Status(r.Context())
	if err != nil {
		a.fail(w, r, unreachable(err))
		return
	}
	hits, misses := a.metrics.counts()
	s := Stats{
		Bucket: st.Bucket(), Values: st.Values(), Bytes: st.Bytes(),
		TTLSeconds: st.TTL().Seconds(), History: st.History(), Hits: hits, Misses: misses,
	}
	if hits+misses > 0 {
		s.HitRatio = float64(hits) / float64(hits+misses)
	}

	ctx, cancel := context.WithTimeout(r.Context(), statsTimeout)
	defer cancel()
	procs, err := cache.CollectStats(ctx, a.nc)
	if err != nil {
		// The bucket's own figures still stand.
		a.log.Warn("cache processes' stats not collected", "err", err)
	} else {
		s.Processes = append([]cache.Stats{}, procs...)
	}
	for _, p := range s.Processes {
		s.Tiers.Local.Add(p.Local)
		s.Tiers.KV.Add(p.KV)
		s.Loads += p.Loads
	}
	s.Tiers.KV.Entries, s.Tiers.KV.Bytes = int(st.Values()), int64(st.Bytes())
	if answered := s.Tiers.Local.Hits + s.Tiers.KV.Hits; answered+s.Loads > 0 {
		s.OverallHitRatio = float64(answered) / float64(answered+s.Loads)
	}
	writeJSON(w, http.StatusOK, s)
}
