package balancer

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/ops"
)

// opsPrefix is the path prefix of the balancer's own routes; every other
// path belongs to the gateways.
const opsPrefix = "/-"

// Run validates cfg, listens on cfg.Addr (or serves cfg.Listener) and proxies
// requests to the gateways until ctx is cancelled. Then it stops accepting
// connections, lets in-flight requests finish within cfg.ShutdownTimeout and
// returns nil. It returns the validation error for a bad cfg, the listen
// error for a busy port, and an error if serving or shutting down failed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return run(ctx, cfg, log, resolverLookup())
}

// run is Run with the DNS lookup of --discover injected.
func run(ctx context.Context, cfg Config, log *slog.Logger, lookup lookupFunc) error {
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

	// Health checks and discovery outlive ctx until the server has drained:
	// requests finishing during shutdown still need an accurate pool.
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	var discovery sync.WaitGroup
	defer func() {
		stop()
		discovery.Wait()
		b.pool.close()
	}()
	if cfg.Discover != "" {
		host, port, _ := net.SplitHostPort(cfg.Discover) // checked by Validate
		d := &discoverer{host: host, port: port, interval: cfg.DiscoverInterval, lookup: lookup, pool: b.pool, log: log}
		discovery.Go(func() { d.run(bctx) })
		log.Info("balancing", "policy", cfg.Policy, "discover", cfg.Discover, "admin", cfg.Admin)
	} else {
		b.pool.set(bctx, b.static, true)
		log.Info("balancing", "policy", cfg.Policy, "backends", cfg.Backends, "admin", cfg.Admin)
	}
	return httpserver.Serve(ctx, hcfg, ln, b, log)
}

// balancer is the balancer's HTTP handler: the /-/ routes and the proxy.
type balancer struct {
	cfg       Config
	log       *slog.Logger
	pool      *pool
	static    []target // the --backends, when not discovering
	metrics   *metrics
	budget    *retryBudget
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	ops       *http.ServeMux
	// inFlight counts the requests being proxied, for MaxInFlight.
	inFlight atomic.Int64
}

// newBalancer validates cfg and builds the handler, registering its metrics
// on reg. The pool is empty until Run fills it.
func newBalancer(cfg Config, reg *prometheus.Registry, log *slog.Logger) (*balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	urls, err := parseBackends(cfg.Backends)
	if err != nil {
		return nil, err
	}
	policy, err := newPicker(cfg.Policy)
	if err != nil {
		return nil, err
	}
	b := &balancer{
		cfg:       cfg,
		log:       log,
		metrics:   newMetrics(reg),
		budget:    newRetryBudget(cfg.RetryBudgetPercent, cfg.RetryBudgetMin),
		transport: newTransport(cfg),
	}
	for i, u := range urls {
		w := 1
		if len(cfg.Weights) > 0 {
			w = cfg.Weights[i]
		}
		b.static = append(b.static, target{url: u, weight: w})
	}
	b.pool = newPool(poolConfig{
		ejectAfter:      int32(cfg.EjectAfter),
		ejectBackoff:    cfg.EjectBackoff,
		ejectBackoffMax: cfg.EjectBackoffMax,
	}, policy, b.metrics, newChecker(cfg), log)
	reg.MustRegister(newPoolCollector(b.pool))
	b.proxy = b.newProxy(&retryTransport{
		next:       b.transport,
		pool:       b.pool,
		budget:     b.budget,
		maxRetries: cfg.MaxRetries,
		metrics:    b.metrics,
		log:        log,
	})

	b.ops = http.NewServeMux()
	ops.Mount(b.ops, opsPrefix, reg, b.ready)
	b.ops.HandleFunc("GET "+opsPrefix+"/balancer", b.handleStatus)
	if cfg.Admin {
		b.ops.HandleFunc("POST "+opsPrefix+"/backends/drain", b.handleDrain(true))
		b.ops.HandleFunc("POST "+opsPrefix+"/backends/undrain", b.handleDrain(false))
	}
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

// ready reports whether the balancer can take traffic: at least one
// gateway is ready. A balancer with none answers every request with 503,
// so an orchestrator should not send it any.
func (b *balancer) ready(context.Context) error {
	if len(b.pool.ready.Load().backends) == 0 {
		return errors.New("no gateway is ready")
	}
	return nil
}
