package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/ops"
)

// opsPrefix is the path prefix of the balancer's own routes; every other
// path belongs to the gateways.
const opsPrefix = "/-"

// policy names the balancing policy in GET /-/balancer.
const policy = "round_robin"

// Run validates cfg, listens on cfg.Addr (or serves cfg.Listener) and proxies
// requests to cfg.Backends until ctx is cancelled. Then it stops accepting
// connections, lets in-flight requests finish within cfg.ShutdownTimeout and
// returns nil. It returns the validation error for a bad cfg, the listen
// error for a busy port, and an error if serving or shutting down failed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	log = log.With("role", "balancer")
	hcfg := httpserver.Config{
		Addr:            cfg.Addr,
		Listener:        cfg.Listener,
		ShutdownTimeout: cfg.ShutdownTimeout,
		// No write timeout: a proxied response takes as long as the
		// gateway takes (ResponseHeaderTimeout bounds the wait for it).
		WriteTimeout: 0,
	}
	b, err := newBalancer(cfg, ops.NewRegistry(), log)
	if err != nil {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close()
		}
		return err
	}
	defer b.transport.CloseIdleConnections()
	ln, err := httpserver.Listen(hcfg)
	if err != nil {
		return err
	}
	log.Info("balancing", "policy", policy, "backends", cfg.Backends)
	return httpserver.Serve(ctx, hcfg, ln, b, log)
}

// balancer is the balancer's HTTP handler: the /-/ routes and the proxy.
type balancer struct {
	log       *slog.Logger
	pool      *roundRobin
	metrics   *metrics
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	ops       *http.ServeMux
}

// newBalancer validates cfg and builds the handler, registering its metrics
// on reg.
func newBalancer(cfg Config, reg *prometheus.Registry, log *slog.Logger) (*balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	urls, err := parseBackends(cfg.Backends)
	if err != nil {
		return nil, err
	}
	b := &balancer{
		log:       log,
		pool:      &roundRobin{},
		metrics:   newMetrics(reg),
		transport: newTransport(cfg, len(urls)),
	}
	for _, u := range urls {
		label := u.String()
		b.pool.backends = append(b.pool.backends, &backend{url: u, label: label, metrics: b.metrics.forBackend(label)})
	}
	b.proxy = b.newProxy(&retryTransport{next: b.transport, backends: b.pool.backends, log: log})

	b.ops = http.NewServeMux()
	ops.Mount(b.ops, opsPrefix, reg, b.ready)
	b.ops.HandleFunc("GET "+opsPrefix+"/balancer", b.handleStatus)
	// The rest of /-/ is reserved, so that a new balancer route never
	// shadows a gateway route that used to work.
	b.ops.HandleFunc(opsPrefix+"/", func(w http.ResponseWriter, r *http.Request) {
		apperr.WriteCode(w, http.StatusNotFound, apperr.NotFound, "no balancer route "+r.URL.Path, "")
	})
	return b, nil
}

// ServeHTTP serves /-/ itself and proxies everything else. Proxied requests
// do not go through a ServeMux: it would answer unclean paths (//a, /a/../b)
// with redirects of its own, and the balancer must pass paths on as they are.
func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, opsPrefix+"/") {
		b.ops.ServeHTTP(w, r)
		return
	}
	b.serveProxy(w, r)
}

// ready reports whether the balancer can take traffic: it has a gateway to
// send it to. Gateways are not probed: one that is down costs a retry, not
// an outage, and the balancer's readiness must not flap with theirs.
func (b *balancer) ready(context.Context) error {
	if len(b.pool.backends) == 0 {
		return errors.New("no gateways configured")
	}
	return nil
}

// handleStatus serves GET /-/balancer: the policy and each gateway's
// counters, read from atomics (cheap enough to poll).
func (b *balancer) handleStatus(w http.ResponseWriter, _ *http.Request) {
	type backendStatus struct {
		URL      string `json:"url"`
		Requests int64  `json:"requests"`
		Errors   int64  `json:"errors"`
		InFlight int64  `json:"in_flight"`
	}
	type status struct {
		Policy   string          `json:"policy"`
		Backends []backendStatus `json:"backends"`
	}
	resp := status{Policy: policy, Backends: make([]backendStatus, 0, len(b.pool.backends))}
	for _, be := range b.pool.backends {
		resp.Backends = append(resp.Backends, backendStatus{
			URL:      be.label,
			Requests: be.requests.Load(),
			Errors:   be.errors.Load(),
			InFlight: be.inFlight.Load(),
		})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(resp)
}
