package ops

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// ReadyFunc reports whether a role can do its work; a non-nil error says why not.
type ReadyFunc func(context.Context) error

// NewRegistry returns a registry holding the Go runtime and process
// collectors. Each role instance has its own registry, because `up` runs
// several instances of a role in one process and their metrics must not clash.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Mount adds the ops routes to mux under prefix ("" for /healthz, "/-" for
// /-/healthz where the root paths belong to someone else, as in the balancer).
func Mount(mux *http.ServeMux, prefix string, reg *prometheus.Registry, ready ReadyFunc) {
	mux.HandleFunc("GET "+prefix+"/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+prefix+"/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			apperr.WriteHTTP(w, apperr.Wrap(err, apperr.Unavailable, "not ready: %v", err), r.Header.Get(reqid.Header))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET "+prefix+"/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

// Handler returns a handler with only the ops routes, for roles whose sole
// HTTP surface is ops (the worker).
func Handler(reg *prometheus.Registry, ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	Mount(mux, "", reg, ready)
	return mux
}

// NATSReady returns a ReadyFunc that succeeds when nc is connected and the
// server answers a round trip.
func NATSReady(nc *nats.Conn) ReadyFunc {
	return func(ctx context.Context) error {
		if !nc.IsConnected() {
			return errors.New("nats: " + nc.Status().String())
		}
		return nc.FlushWithContext(ctx)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
