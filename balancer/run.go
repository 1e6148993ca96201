package balancer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"golang.org/x/net/http2"
	"golang.org/x/sync/errgroup"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/certs"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/logging"
	"github.com/scalelab/scalelab/internal/ops"
)

// opsPrefix is the path prefix of the balancer's own routes; every other
// path belongs to the gateways.
const opsPrefix = "/-"

// Run validates cfg, listens on cfg.Addr (or serves cfg.Listener) and
// cfg.AdminAddr (or cfg.AdminListener), and proxies requests to the
// gateways until ctx is cancelled. Then it stops accepting connections,
// lets in-flight requests finish within cfg.ShutdownTimeout and returns
// nil. It returns the validation error for a bad cfg, the listen error for
// a busy port, and an error if serving or shutting down failed.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	return run(ctx, cfg, log, resolverLookup())
}

// run is Run with the DNS lookup of --discover injected.
func run(ctx context.Context, cfg Config, log *slog.Logger, lookup lookupFunc) error {
	log = log.With("role", "balancer")
	closeGiven := func() {
		for _, l := range []net.Listener{cfg.Listener, cfg.AdminListener, cfg.TLS.Listener} {
			if l != nil {
				_ = l.Close()
			}
		}
	}
	base := cfg
	if cfg.ConfigFile != "" {
		var err error
		if cfg, err = readConfigFile(cfg); err != nil {
			closeGiven()
			return err
		}
	}
	b, err := newBalancer(cfg, ops.NewRegistry(), log)
	if err != nil {
		closeGiven()
		return err
	}
	b.reloader.base, b.reloader.cur = base, cfg
	ln, err := httpserver.Listen(httpserver.Config{Addr: cfg.Addr, Listener: cfg.Listener})
	if err != nil {
		closeGiven()
		return err
	}
	adminLn, err := httpserver.Listen(httpserver.Config{Addr: cfg.AdminAddr, Listener: cfg.AdminListener})
	if err != nil {
		_ = ln.Close()
		if cfg.TLS.Listener != nil {
			_ = cfg.TLS.Listener.Close()
		}
		return fmt.Errorf("balancer: admin listener: %w", err)
	}
	var tlsLn net.Listener
	var cert *certs.Reloader
	if cfg.TLS.On() {
		if cert, err = certs.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile); err == nil {
			tlsLn, err = httpserver.Listen(httpserver.Config{Addr: cfg.TLS.Addr, Listener: cfg.TLS.Listener})
		}
		if err != nil {
			_, _ = ln.Close(), adminLn.Close()
			if cfg.TLS.Listener != nil {
				_ = cfg.TLS.Listener.Close()
			}
			return fmt.Errorf("balancer: https listener: %w", err)
		}
		b.httpsPort = portOf(tlsLn.Addr())
		b.reloader.cert = cert
	}
	if b.verifier == nil && cfg.Admin {
		log.Warn("no JWT keys (" + auth.EnvSecret + "): the admin listener refuses drain and undrain")
	}
	admin := adminGuard(b.untilShutdown(httpserver.JSONErrors(b.admin)), hostsOf(adminLn.Addr(), cfg.AdminAddr, cfg.AdminHosts), b.verifier, log)

	// Health checks and discovery outlive ctx until the server has drained:
	// requests finishing during shutdown still need an accurate pool.
	out := cfg.AccessLogOutput
	if out == nil {
		out = os.Stdout
	}
	b.access = newAccessLog(cfg, out)
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	b.reloader.checks = bctx
	var discovery, dashboard sync.WaitGroup
	defer func() {
		stop()
		discovery.Wait()
		dashboard.Wait()
		b.pool.close()
		b.access.close() // after the last request
	}()
	if cfg.Dashboard != nil {
		dashboard.Go(func() { cfg.Dashboard.Run(bctx) })
	}
	if cfg.Reload != nil {
		dashboard.Go(func() {
			for {
				select {
				case <-bctx.Done():
					return
				case <-cfg.Reload:
					if _, err := b.reload(); err != nil {
						log.Warn("configuration not reloaded; the old one stays", "err", err)
					}
				}
			}
		})
	}
	if cfg.Discover != "" {
		host, port, _ := net.SplitHostPort(cfg.Discover) // checked by Validate
		d := &discoverer{host: host, port: port, interval: cfg.DiscoverInterval, lookup: lookup, pool: b.pool, log: log}
		discovery.Go(func() { d.run(bctx) })
		log.Info("balancing", "policy", cfg.Policy, "discover", cfg.Discover, "admin", cfg.Admin)
	} else {
		b.pool.set(bctx, b.static, true)
		log.Info("balancing", "policy", cfg.Policy, "backends", cfg.Backends, "admin", cfg.Admin)
	}
	// One listener failing stops the other: a balancer without its admin
	// listener could not be drained.
	g, gctx := errgroup.WithContext(ctx)
	b.opsCtx = gctx
	g.Go(func() error { return b.serve(gctx, ln, nil) })
	if cert != nil {
		leaf := cert.Leaf()
		log.Info("https", "addr", tlsLn.Addr().String(), "cert", cfg.TLS.CertFile, "dns", leaf.DNSNames, "ips", leaf.IPAddresses,
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "redirect_http", cfg.TLS.Redirect)
		discovery.Go(func() { cert.Watch(bctx, certCheckInterval, log) })
		g.Go(func() error { return b.serve(gctx, tlsLn, certs.ServerConfig(cert, http2.NextProtoTLS, "http/1.1")) })
	}
	g.Go(func() error {
		return httpserver.Serve(gctx, httpserver.Config{ShutdownTimeout: cfg.ShutdownTimeout}, adminLn, admin, log.With("listener", "admin"))
	})
	return g.Wait()
}

// serve serves the balancer on ln until ctx is done, then stops accepting
// connections and waits up to ShutdownTimeout for in-flight requests, as
// httpserver.Serve does for the other roles. It returns nil after a clean
// shutdown, and the server's error if serving failed.
//
// With --engine loop the event loops (front) accept the connections and
// serve the requests they take; the rest, and every connection with
// --engine goroutine, is served by fasthttp's server. The balancer serves
// with fasthttp rather than net/http: per proxied request net/http's
// server, httputil.ReverseProxy and http.Transport cost about three times
// nginx's CPU (see bench/README.md), almost none of it the balancer's own
// work. fasthttp reuses its request, response and buffers across requests.
//
// With tlsCfg, ln is the HTTPS listener: every connection is TLS, and
// served by the goroutine engine.
func (b *balancer) serve(ctx context.Context, ln net.Listener, tlsCfg *tls.Config) error {
	// As httpserver.Serve: a shutdown closes connections that never sent a
	// request. fasthttp reports a connection active only once its first
	// request is read whole, so during a shutdown a first request that takes
	// over httpserver.SilentQuiet to arrive is cut too; fasthttp alone would
	// cut it after 5 s.
	var silent httpserver.SilentConns
	srv := &fasthttp.Server{
		ConnState: func(c net.Conn, state fasthttp.ConnState) {
			switch state {
			case fasthttp.StateNew:
				silent.Accepted(c)
			case fasthttp.StateActive, fasthttp.StateClosed, fasthttp.StateHijacked:
				silent.Heard(c)
			}
		},
		Handler:      b.handle,
		ErrorHandler: b.handleBadRequest,
		Logger:       logging.Printf{Log: b.log},
		// ReadTimeout bounds reading a request's header and the first 8
		// KiB of its body (slowloris); the rest of the body is read by the
		// handler, each read bounded by ClientBodyTimeout (body.go). No
		// write timeout, since a proxied response takes as long as the
		// gateway takes (ResponseHeaderTimeout bounds the wait for it).
		ReadTimeout:     b.cfg.ClientHeaderTimeout,
		IdleTimeout:     clientIdleTimeout,
		ReadBufferSize:  maxHeaderBytes,
		WriteBufferSize: bufferSize,
		// Bodies are read by the handler as they come, never into a
		// buffer sized by their Content-Length (body.go). fasthttp reads
		// min(MaxRequestBodySize, 8 KiB) of a body before the handler runs,
		// and streams the rest: with 1, a request is handed over with its
		// header and at most a byte of its body, and the handler enforces
		// maxRequestBody (413).
		StreamRequestBody:  true,
		MaxRequestBodySize: 1,
		// A proxy passes bodies on as they are, multipart ones included.
		DisablePreParseMultipartForm: true,
		// Answers carry the gateway's headers, not fasthttp's defaults.
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		// Tell keep-alive clients to go while shutting down.
		CloseOnShutdown: true,
	}
	var served net.Listener = patientListener{Listener: ln, log: b.log, limits: b.limits, h2: b.h2}
	// f, when set, accepts from ln and gives the goroutine engine what it
	// does not serve itself: the event loops, or the TLS handshakes.
	var f acceptor
	switch {
	case tlsCfg != nil:
		slow := newHandoffListener(ln.Addr())
		f, served = newTLSFront(b, tlsCfg, slow), slow
	case loopsUsable(b.cfg):
		slow := newHandoffListener(ln.Addr())
		slow.h2 = b.h2
		loops, err := newFront(b, slow)
		if err != nil {
			_ = ln.Close()
			return err
		}
		f, served = loops, slow
	}
	acceptc := make(chan error, 1)
	if f != nil {
		go func() { acceptc <- f.accept(ln) }()
	}
	engine := b.cfg.Engine
	if tlsCfg != nil {
		engine = EngineGoroutine
	}
	b.log.Info("http listening", "addr", ln.Addr().String(), "engine", engine, "tls", tlsCfg != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(served) }()
	select {
	case err := <-errc:
		if f != nil {
			_ = ln.Close()
			<-acceptc
			_ = f.wait(context.Background())
		}
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case err := <-acceptc:
		if err == nil {
			err = net.ErrClosed
		}
		_ = served.Close()
		<-errc
		_ = f.wait(context.Background())
		return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.ShutdownTimeout)
	defer cancel()
	if f != nil {
		// Stop accepting, then drain the loops while the goroutine engine
		// shuts down.
		_ = ln.Close()
		<-acceptc
		f.drain()
	}
	stopClosing := silent.CloseWhile(httpserver.SilentQuiet)
	// HTTP/2 connections (h2c here, h2 on the TLS listener) are the
	// balancer's own, not fasthttp's: told to go at the same time.
	b.h2.drain()
	err := srv.ShutdownWithContext(sctx)
	stopClosing()
	// fasthttp's shutdown closes the listeners Serve has registered; one
	// that comes right after the start may run before Serve registers its
	// listener, and Serve would then accept for ever. Closing it here too
	// makes Serve return in every order.
	_ = served.Close()
	if serr := <-errc; serr != nil && err == nil {
		err = serr
	}
	if f != nil {
		if ferr := f.wait(sctx); ferr != nil && err == nil {
			err = ferr
		}
	}
	// Upgraded connections (WebSocket) and HTTP/2 ones are the
	// balancer's own, not fasthttp's: they get the same grace as requests
	// in flight.
	if n := b.tunnels.wait(sctx); n > 0 {
		b.log.Info("upgraded connections closed at the end of the shutdown grace", "count", n)
	}
	if herr := b.h2.wait(sctx); herr != nil && err == nil {
		err = herr
	}
	if err != nil {
		return fmt.Errorf("shut down http on %s: %w", ln.Addr(), err)
	}
	b.log.Info("http stopped", "addr", ln.Addr().String())
	return nil
}

// acceptor accepts a listener's connections before the goroutine engine:
// the event loops (front) or the TLS handshakes (tlsFront).
type acceptor interface {
	// accept accepts until ln is closed.
	accept(ln net.Listener) error
	// drain starts a shutdown: connections are asked to finish.
	drain()
	// wait waits for the connections it serves to end, or ctx.
	wait(ctx context.Context) error
}

// handleBadRequest answers a request the server could not read, with the
// house error body: 413 for a body over maxRequestBody, 431 for a header
// over maxHeaderBytes, 408 for a client too slow to send it, 400 otherwise.
func (b *balancer) handleBadRequest(ctx *fasthttp.RequestCtx, err error) {
	status, msg := fasthttp.StatusBadRequest, "the request could not be read"
	var small *fasthttp.ErrSmallBuffer
	var timeout interface{ Timeout() bool }
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		status, msg = fasthttp.StatusRequestEntityTooLarge, "the request body is too large"
	case errors.As(err, &small):
		status, msg = fasthttp.StatusRequestHeaderFieldsTooLarge, "the request header is too large"
	case errors.As(err, &timeout) && timeout.Timeout():
		status, msg = fasthttp.StatusRequestTimeout, "the request was not sent in time"
	case errors.Is(err, errFraming):
		msg = errFraming.Error()
	}
	b.log.Debug("bad request", "status", status, "err", err)
	writeError(ctx, status, apperr.CodeForStatus(status), msg, "")
	ctx.SetConnectionClose()
	lingerClient(ctx) // the client may still be sending what was not read
}

// balancer is the balancer's HTTP handler: the /-/ routes and the proxy.
type balancer struct {
	cfg       Config
	log       *slog.Logger
	pool      *pool
	static    []target // the --backends, when not discovering
	metrics   *metrics
	budget    *retryBudget
	forwarder *forwarder
	// ops are the /-/ routes of the public port: /-/healthz, /-/readyz,
	// and 404 for the rest of /-/.
	ops *http.ServeMux
	// serveOps serves ops (net/http handlers) through fasthttpadaptor:
	// they are few and rarely called, and stay plain net/http.
	serveOps fasthttp.RequestHandler
	// admin are the routes of the admin listener, every /-/ route; Run
	// serves them with net/http behind adminGuard.
	admin *http.ServeMux
	// verifier checks the tokens of the admin listener's state-changing
	// routes; nil when no JWT keys are configured.
	verifier *auth.Verifier
	// opsCtx is the parent of the ops handlers' request contexts (and ends
	// the admin listener's): Run's ctx, which ends when the shutdown
	// starts.
	opsCtx context.Context
	// inFlight counts the requests being proxied, for maxInFlight,
	// Config.MaxInFlight (changed by a reload).
	inFlight, maxInFlight atomic.Int64
	// limits caps the client connections (limits.go); nil: no caps.
	limits *connLimiter
	// tunnels are the upgraded connections open (upgrade.go).
	tunnels tunnels
	// access is the access log (accesslog.go); nil when it is off.
	access *accessLog
	// reloader reloads the configuration file (reload.go).
	reloader reloader
	// h2 serves the HTTP/2 connections of every listener (h2.go).
	h2 *h2Server
	// httpsPort is the port of the HTTPS listener, where --https-redirect
	// sends plain requests.
	httpsPort string
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
		cfg:     cfg,
		log:     log,
		metrics: newMetrics(reg),
		budget:  newRetryBudget(cfg.RetryBudgetPercent, cfg.RetryBudgetMin),
		opsCtx:  context.Background(),
		limits:  newConnLimiter(cfg),
	}
	b.h2 = newH2Server(b)
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
		newClient:       func(u *url.URL) *fasthttp.HostClient { return newBackendClient(cfg, u) },
	}, policy, b.metrics, newChecker(cfg), log)
	reg.MustRegister(newPoolCollector(b.pool))
	b.forwarder = &forwarder{
		rt:      &upstream{responseHeaderTimeout: cfg.ResponseHeaderTimeout, maxIdle: cfg.MaxIdleConnsPerHost},
		pool:    b.pool,
		budget:  b.budget,
		metrics: b.metrics,
		log:     log,
	}
	b.forwarder.maxRetries.Store(int32(cfg.MaxRetries))
	b.maxInFlight.Store(int64(cfg.MaxInFlight))

	if cfg.jwtConfigured() {
		b.verifier = auth.NewVerifier(cfg.JWT)
	}

	// The public port keeps the two probes that say only ok or not, for
	// orchestrators and container health checks (compose's probes
	// /-/readyz there); everything else of /-/ is on the admin listener.
	// The rest of /-/ is reserved on both, so that a new balancer route
	// never shadows a gateway route that used to work.
	notFound := func(w http.ResponseWriter, r *http.Request) {
		apperr.WriteCode(w, http.StatusNotFound, apperr.NotFound, "no balancer route "+r.URL.Path, "")
	}
	b.ops = http.NewServeMux()
	mountProbes(b.ops, b.ready)
	b.ops.HandleFunc(opsPrefix+"/", notFound)
	b.serveOps = fasthttpadaptor.NewFastHTTPHandler(b.ownContext(b.ops))

	b.admin = http.NewServeMux()
	ops.Mount(b.admin, opsPrefix, reg, b.ready)
	b.admin.HandleFunc("GET "+opsPrefix+"/balancer", b.handleStatus)
	if cfg.Dashboard != nil {
		h := http.StripPrefix(DashboardPath, cfg.Dashboard.Handler(b.status))
		b.admin.Handle(DashboardPath, h)
		b.admin.Handle(DashboardPath+"/", h)
	}
	if cfg.Admin {
		b.admin.HandleFunc("POST "+opsPrefix+"/backends/drain", b.handleDrain(true))
		b.admin.HandleFunc("POST "+opsPrefix+"/reload", b.handleReload)
		b.admin.HandleFunc("POST "+opsPrefix+"/backends/undrain", b.handleDrain(false))
	}
	b.admin.HandleFunc(opsPrefix+"/", notFound)
	b.admin.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apperr.WriteCode(w, http.StatusNotFound, apperr.NotFound, "no admin route "+r.URL.Path+": the admin routes are under /-/", "")
	})
	return b, nil
}

// mountProbes adds GET /-/healthz and /-/readyz, as ops.Mount does, and
// nothing else: the public port's /-/ routes.
func mountProbes(mux *http.ServeMux, ready ops.ReadyFunc) {
	all := http.NewServeMux()
	ops.Mount(all, opsPrefix, prometheus.NewRegistry(), ready) // its /-/metrics is not mounted
	for _, p := range []string{opsPrefix + "/healthz", opsPrefix + "/readyz"} {
		mux.Handle("GET "+p, all)
	}
}

// ownContext gives each request to h a context of its own, a child of
// opsCtx. fasthttpadaptor would hand h the fasthttp.RequestCtx as its
// context, which fasthttp reuses for the next request once h returns; a
// context derived from it (context.WithTimeout in a readiness check)
// watches it from a goroutine that can outlive the request and read it
// while it is reused, a data race -race caught at shutdown.
func (b *balancer) ownContext(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(b.opsCtx)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// handle serves /-/ itself and proxies everything else. Proxied requests
// do not go through a router: it would clean paths (//a, /a/../b), and the
// balancer must pass paths on as they are. The prefix is looked for in the
// request target as sent, which a proxied request keeps.
func (b *balancer) handle(ctx *fasthttp.RequestCtx) {
	target := ctx.Request.Header.RequestURI()
	if len(target) > 0 && target[0] != '/' {
		// Absolute form (GET http://host/path).
		u := ctx.Request.URI()
		u.DisablePathNormalizing = true
		target = u.PathOriginal()
	}
	if bytes.HasPrefix(target, []byte(opsPrefix+"/")) {
		if opsBodyTooLarge(ctx) {
			return
		}
		b.serveOps(ctx)
		return
	}
	if b.cfg.TLS.Redirect && !ctx.IsTLS() {
		redirectToHTTPS(ctx, b.httpsPort)
		return
	}
	b.serveProxy(ctx)
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
