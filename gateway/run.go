package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/ops"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/worker"
)

// maxBodyBytes bounds every request body; task payloads are smaller still.
const maxBodyBytes = task.MaxPayloadBytes

// deps are what the routes need.
type deps struct {
	cfg      Config
	nc       *nats.Conn
	verifier *auth.Verifier
	cache    Cache
	db       Database
	process  Processor
	tasks    TaskStore
	queue    TaskQueue
	admin    TaskAdmin // retry and purge (retry.go)
	catalog  *task.Catalog
	index    *taskIndex // GET /tasks and the event streams (taskindex.go)
	// stopping is closed when the gateway starts shutting down: its event
	// streams end then, rather than hold the shutdown.
	stopping <-chan struct{}
	metrics  *metrics
	ops      http.Handler
	log      *slog.Logger
}

// Run serves the API until ctx is cancelled, then finishes in-flight
// requests and returns. The caller owns nc and drains it after Run returns.
func Run(ctx context.Context, cfg Config, nc *nats.Conn, log *slog.Logger) error {
	log = log.With("role", "gateway", "gateway", cfg.ID)
	hc := httpserver.Config{Addr: cfg.Addr, Listener: cfg.Listener, ShutdownTimeout: cfg.ShutdownTimeout}
	var c *cache.Cache // closed once the server has stopped
	var catalog *task.Catalog
	var schedules scheduleRunner // schedules_run.go: ticks into tasks
	defer schedules.stop()
	defer func() {
		if c != nil {
			c.Close()
		}
		if catalog != nil {
			catalog.Stop()
		}
	}()
	err := httpserver.Run(ctx, hc, log, func(ctx context.Context) (http.Handler, error) {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
		var store *task.Store
		// The task streams and the registry's buckets are admin's to
		// provision (up, or `scalelab tasks provision`): wait for them
		// rather than create them. The catalog watches the registry for
		// as long as the server runs (ctx).
		err = natsconn.Retry(ctx, log, "open task streams", func(rctx context.Context) error {
			if store, err = task.Open(rctx, js, cfg.Provision, log); err != nil {
				return err
			}
			catalog, err = task.OpenCatalog(ctx, js)
			return err
		})
		if err != nil {
			return nil, err
		}
		// The index follows the tasks bucket for as long as the server
		// runs; it loads in the background (GET /tasks answers 503 until
		// it has).
		var index *taskIndex
		if cfg.TaskIndex != nil {
			index = cfg.TaskIndex.x
		} else if index, err = startTaskIndex(ctx, js, log); err != nil {
			return nil, fmt.Errorf("watch the tasks bucket: %w", err)
		}
		schedules.start(ctx, js, store, streamQueue{js: js}, catalog, cfg.JWT.Secret, log)
		if c, err = cache.New(nc, cfg.ID, cfg.Cache, log); err != nil {
			return nil, err
		}
		log.Info("cache tiers", "mode", cfg.Cache.Mode, "entry_ttl", cfg.Cache.TTL, "negative_ttl", cfg.Cache.NegativeTTL)
		reg := ops.NewRegistry()
		c.Register(reg)
		db := dbsvc.NewClient(nc)
		db.Timeout = cfg.RequestTimeout
		return newServer(deps{
			cfg: cfg, nc: nc, verifier: auth.NewVerifier(cfg.JWT),
			cache: c, db: db,
			process: worker.NewProcessClient(nc, cfg.RequestTimeout),
			tasks:   store, queue: streamQueue{js: js}, catalog: catalog, index: index, stopping: ctx.Done(), admin: taskAdmin{js: js, store: store},
			metrics: newMetrics(reg), ops: ops.Handler(reg, ops.NATSReady(nc)), log: log,
		}), nil
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// newServer builds the echo server with its server-wide middleware.
func newServer(d deps) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(d.log)
	// The client's address for the per-IP limit and the login throttle:
	// X-Forwarded-For counts only from the configured proxies (the
	// balancer, which replaces whatever the client sent), else the peer is
	// the client.
	e.IPExtractor = clientIP(d.cfg.TrustedProxies)
	e.Use(
		middleware.RecoverWithConfig(middleware.RecoverConfig{
			LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
				d.log.Error("handler panicked", "path", c.Request().URL.Path, "request_id", requestID(c), "err", err, "stack", string(stack))
				return err
			},
		}),
		sanitizeRequestID,
		middleware.RequestIDWithConfig(middleware.RequestIDConfig{Generator: reqid.New, TargetHeader: reqid.Header}),
		servedBy(d.cfg.ID),
		observe(d.metrics, d.log),
		middleware.BodyLimit(fmt.Sprintf("%dB", maxBodyBytes)),
	)
	routes(e, d)
	return e
}
