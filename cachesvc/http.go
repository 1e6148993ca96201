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
	"github.com/scalelab/scalelab/internal/reqid"
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
	mux.HandleFunc("GET /cache/{key}", a.requireScope(auth.ScopeCacheRead, a.withKey(a.handleGet)))
	mux.HandleFunc("POST /cache/{key}", a.requireScope(auth.ScopeCacheWrite, a.withKey(a.handlePut)))
	mux.HandleFunc("DELETE /cache/{key}", a.requireScope(auth.ScopeCacheWrite, a.withKey(a.handleDelete)))
	ops.Mount(mux, "", reg, ready)
	return httpserver.JSONErrors(mux)
}

// withKey serves h with the route's {key}, once cache.ValidKey accepts
// it: a bad key is 400 with badKeyMessage, the same on every route.
func (a *api) withKey(h func(w http.ResponseWriter, r *http.Request, key string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		if !cache.ValidKey(key) {
			a.fail(w, r, apperr.New(apperr.Invalid, badKeyMessage))
			return
		}
		h(w, r, key)
	}
}

// handleGet answers {"value": <stored JSON>} or {"value": null} on a miss,
// as the lab does.
func (a *api) handleGet(w http.ResponseWriter, r *http.Request, key string) {
	var value json.RawMessage
	e, err := a.kv.Get(r.Context(), key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		a.metrics.lookups.WithLabelValues("miss").Inc()
	case err != nil:
		a.fail(w, r, unreachable(err))
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
func (a *api) handlePut(w http.ResponseWriter, r *http.Request, key string) {
	type request struct {
		Value json.RawMessage `json:"value"`
	}
	// The one strict reading: a 400 names the field and says why (a
	// duplicate key anywhere in the value, too), a body over the limit
	// is a 413.
	body, err := strictjson.DecodeBody[request](http.MaxBytesReader(w, r.Body, maxValueBytes))
	if err != nil {
		if _, ok := errors.AsType[*apperr.Error](err); !ok {
			// Another read error: the client's connection broke or stalled.
			err = apperr.Wrap(err, apperr.Invalid, "the request body could not be read")
		}
		a.fail(w, r, err)
		return
	}
	if len(body.Value) == 0 || string(body.Value) == "null" {
		a.fail(w, r, apperr.New(apperr.Invalid, `"value" is required and must not be null`))
		return
	}
	if _, err := a.kv.Put(r.Context(), key, body.Value); err != nil {
		a.fail(w, r, unwritable(err))
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
func (a *api) handleDelete(w http.ResponseWriter, r *http.Request, key string) {
	bucket := func(context.Context) (jetstream.KeyValue, error) { return a.kv, nil }
	err := cache.DeleteAndBroadcast(r.Context(), bucket, a.inv, deleteTimeout, key)
	switch {
	case errors.Is(err, cache.ErrUnconfirmed):
		// Deleted; a process that did not answer catches up through its
		// KV watch.
		a.log.Warn("cache delete not confirmed by every process", "key", key, "err", err)
	case err != nil:
		a.fail(w, r, unwritable(err))
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
		a.fail(w, r, unreachable(err))
		return
	}
	purged := stream.CachedInfo().State.Msgs
	if err := stream.Purge(r.Context()); err != nil {
		a.fail(w, r, unwritable(err))
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

// unreachable is the error for a bucket that did not answer a read.
func unreachable(err error) error {
	return apperr.Wrap(err, apperr.Unavailable, "cache is not reachable")
}

// unwritable is the error for a bucket that did not take a write.
func unwritable(err error) error {
	return apperr.Wrap(err, apperr.Unavailable, "cache is not writable")
}

// fail logs unexpected errors once and writes the JSON error body.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	if c := apperr.CodeOf(err); c == apperr.Unavailable || c == apperr.Internal {
		a.log.Warn("cache request failed", "path", r.URL.Path, "err", err)
	}
	apperr.WriteHTTP(w, err, r.Header.Get(reqid.Header))
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
