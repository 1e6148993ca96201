package cachesvc

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/ops"
)

// maxValueBytes bounds a POST /cache/{key} body.
const maxValueBytes = 1 << 20

// api serves the lab's cache API over the bucket.
type api struct {
	kv      jetstream.KeyValue
	metrics *metrics
	log     *slog.Logger
}

func newAPI(kv jetstream.KeyValue, m *metrics, log *slog.Logger) *api {
	return &api{kv: kv, metrics: m, log: log}
}

// routes lists the whole HTTP surface of cachesvc.
func (a *api) routes(reg *prometheus.Registry, ready ops.ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cache", a.handleStats)
	mux.HandleFunc("GET /cache/{key}", a.handleGet)
	mux.HandleFunc("POST /cache/{key}", a.handlePut)
	ops.Mount(mux, "", reg, ready)
	return httpserver.JSONErrors(mux)
}

// handleGet answers {"value": <stored JSON>} or {"value": null} on a miss,
// as the lab does.
func (a *api) handleGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !ValidKey(key) {
		a.fail(w, r, apperr.New(apperr.Invalid, "key must be 1-256 characters of A-Z a-z 0-9 - _ = / . without empty dot-separated parts"))
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

// handlePut stores the body's "value" member, any JSON value but null.
func (a *api) handlePut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if !ValidKey(key) {
		a.fail(w, r, apperr.New(apperr.Invalid, "key must be 1-256 characters of A-Z a-z 0-9 - _ = / . without empty dot-separated parts"))
		return
	}
	var body struct {
		Value json.RawMessage `json:"value"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxValueBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(&body)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
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
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Stats is the body of GET /cache.
type Stats struct {
	Bucket     string  `json:"bucket"`
	Values     uint64  `json:"values"`
	Bytes      uint64  `json:"bytes"`
	TTLSeconds float64 `json:"ttl_seconds"`
	History    int64   `json:"history"`
	Hits       uint64  `json:"api_hits"`
	Misses     uint64  `json:"api_misses"`
	HitRatio   float64 `json:"api_hit_ratio"`
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
