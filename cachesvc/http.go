package cachesvc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/ops"
	"github.com/scalelab/scalelab/internal/strictjson"
)

// maxValueBytes bounds a POST /cache/{key} body.
const maxValueBytes = 1 << 20

// badKeyMessage is the 400 message for a key ValidKey refuses, the same on
// every route.
const badKeyMessage = "key must be 1-256 characters of A-Z a-z 0-9 - _ = / . without empty dot-separated parts"

const (
	// confirmTimeout bounds the wait for every process's near-cache to
	// confirm an invalidation. Past it the write still stands: a process
	// that did not answer drops the key when its KV watch delivers the
	// change (milliseconds), at the latest when its L1 entry expires.
	confirmTimeout = time.Second
	// deleteTimeout bounds one KV delete of DELETE /cache/{key}.
	deleteTimeout = 5 * time.Second
	// statsTimeout bounds collecting the processes' stats for GET /cache:
	// a process that does not answer is left out rather than hold up the
	// endpoint.
	statsTimeout = time.Second
)

// api serves the lab's cache API over the bucket, and tells every
// gateway's near-cache about the changes it makes.
type api struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	inv      *cache.Invalidator
	verifier *auth.Verifier
	metrics  *metrics
	log      *slog.Logger
}

func newAPI(nc *nats.Conn, js jetstream.JetStream, kv jetstream.KeyValue, v *auth.Verifier, m *metrics, log *slog.Logger) *api {
	return &api{nc: nc, js: js, kv: kv, inv: cache.NewInvalidator(nc, confirmTimeout, log), verifier: v, metrics: m, log: log}
}

// routes lists the whole HTTP surface of cachesvc and the scope each
// route needs. Whoever writes the bucket decides what every gateway serves
// as /data and /items/{id}, so writes, deletes and flushes need
// cache:write; a value may be a user's data, so reading one needs
// cache:read. The statistics (counts, no values) and the ops routes stay
// open, for probes and Prometheus.
func (a *api) routes(reg *prometheus.Registry, ready ops.ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cache", a.handleStats)
	mux.HandleFunc("DELETE /cache", a.requireScope(auth.ScopeCacheWrite, a.handleFlush))
	mux.HandleFunc("GET /cache/{key}", a.requireScope(auth.ScopeCacheRead, a.handleGet))
	mux.HandleFunc("POST /cache/{key}", a.requireScope(auth.ScopeCacheWrite, a.handlePut))
	mux.HandleFunc("DELETE /cache/{key}", a.requireScope(auth.ScopeCacheWrite, a.handleDelete))
	ops.Mount(mux, "", reg, ready)
	return httpserver.JSONErrors(mux)
}

// handleGet answers {"value": <stored JSON>} or {"value": null} on a miss,
// as the lab does.
func (a *api) handleGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !cache.ValidKey(key) {
		a.fail(w, r, apperr.New(apperr.Invalid, badKeyMessage))
		return
	}
	var value json.RawMessage
	e, err := a.kv.Get(r.Context(), key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		a.metrics.lookups.WithLabelValues("miss").Inc()
	case err != nil:
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "cache is not reachable"))
		return
	default:
		a.metrics.lookups.WithLabelValues("hit").Inc()
		value = e.Value()
		if !json.Valid(value) {
			// Written by someone else (e.g. `nats kv put`): serve it as a string.
			value, _ = json.Marshal(string(value))
		}
	}
	writeJSON(w, http.StatusOK, struct {
		Value json.RawMessage `json:"value"`
	}{value})
}

// handlePut stores the body's "value" member, any JSON value but null
// (null is how internal/cache records "not found"). When it answers 200,
// no gateway's near-cache serves the key's old value any more, unless one
// did not confirm in time (logged).
func (a *api) handlePut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !cache.ValidKey(key) {
		a.fail(w, r, apperr.New(apperr.Invalid, badKeyMessage))
		return
	}
	var body struct {
		Value json.RawMessage `json:"value"`
	}
	if err := strictjson.Decode(http.MaxBytesReader(w, r.Body, maxValueBytes), &body); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			a.fail(w, r, apperr.New(apperr.TooLarge, "body is over %d bytes", maxValueBytes))
			return
		}
		a.fail(w, r, apperr.New(apperr.Invalid, `body must be a JSON object {"value": ...}`))
		return
	}
	if len(body.Value) == 0 || string(body.Value) == "null" {
		a.fail(w, r, apperr.New(apperr.Invalid, `"value" is required and must not be null`))
		return
	}
	if _, err := a.kv.Put(r.Context(), key, body.Value); err != nil {
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "cache is not writable"))
		return
	}
	a.metrics.writes.Inc()
	if err := a.broadcast(r, cache.Invalidation{Keys: []string{key}}); err != nil {
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "value stored, but the gateways' near-caches could not be told"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleDelete removes a key from the bucket and from every gateway's
// near-cache. Deleting an absent key succeeds: the outcome is the same.
func (a *api) handleDelete(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !cache.ValidKey(key) {
		a.fail(w, r, apperr.New(apperr.Invalid, badKeyMessage))
		return
	}
	bucket := func(context.Context) (jetstream.KeyValue, error) { return a.kv, nil }
	err := cache.DeleteAndBroadcast(r.Context(), bucket, a.inv, deleteTimeout, key)
	switch {
	case errors.Is(err, cache.ErrUnconfirmed):
		// Deleted; a process that did not answer catches up through its
		// KV watch.
		a.log.Warn("cache delete not confirmed by every process", "key", key, "err", err)
	case err != nil:
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "cache is not writable"))
		return
	}
	a.metrics.deletes.Inc()
	writeJSON(w, http.StatusOK, map[string]string{"status": "deleted", "key": key})
}

// handleFlush empties the bucket and every gateway's near-cache.
//
// It purges the bucket's stream rather than deleting key by key: one
// request however many keys there are. A purge sends nothing to KV
// watchers, so the broadcast is what empties the near-caches. "purged" is
// the number of messages (values, cached not-founds, fill leases, delete
// markers) the bucket held just before the purge; a write racing the flush
// may make it off by one each.
func (a *api) handleFlush(w http.ResponseWriter, r *http.Request) {
	stream, err := a.js.Stream(r.Context(), "KV_"+cache.Bucket)
	if err != nil {
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "cache is not reachable"))
		return
	}
	purged := stream.CachedInfo().State.Msgs
	if err := stream.Purge(r.Context()); err != nil {
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "cache is not writable"))
		return
	}
	if err := a.broadcast(r, cache.Invalidation{Flush: true}); err != nil {
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "bucket purged, but the gateways' near-caches could not be told"))
		return
	}
	a.metrics.flushes.Inc()
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
		Purged uint64 `json:"purged"`
	}{"flushed", purged})
}

// broadcast tells every process holding a near-cache to drop what in
// names. A process that did not confirm is logged, not an error: the
// change is made and its KV watch or L1 TTL catches up. Any other error
// (NATS unreachable) is returned.
func (a *api) broadcast(r *http.Request, in cache.Invalidation) error {
	err := a.inv.Broadcast(r.Context(), in)
	if errors.Is(err, cache.ErrUnconfirmed) {
		a.log.Warn("cache invalidation not confirmed by every process", "keys", in.Keys, "flush", in.Flush, "err", err)
		return nil
	}
	return err
}

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

func (a *api) handleStats(w http.ResponseWriter, r *http.Request) {
	st, err := a.kv.Status(r.Context())
	if err != nil {
		a.fail(w, r, apperr.Wrap(err, apperr.Unavailable, "cache is not reachable"))
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

// fail logs unexpected errors once and writes the JSON error body.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	if c := apperr.CodeOf(err); c == apperr.Unavailable || c == apperr.Internal {
		a.log.Warn("cache request failed", "path", r.URL.Path, "err", err)
	}
	apperr.WriteHTTP(w, err, r.Header.Get("X-Request-ID"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
