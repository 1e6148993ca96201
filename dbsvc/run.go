package dbsvc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/httpserver"
	"github.com/scalelab/scalelab/internal/ops"
	"github.com/scalelab/scalelab/internal/wire"
)

// maxOpenConns bounds the database connections: one per NATS endpoint, and
// the rest for HTTP requests, which net/http serves concurrently (SQLite in
// WAL mode runs readers in parallel).
const maxOpenConns = 8

// Run serves until ctx is cancelled, then drains and returns.
//
// It validates cfg, binds the HTTP port, opens the database (creating and
// seeding it on first start), registers the NATS micro service wire.DBService
// on nc and serves HTTP. When ctx ends it stops HTTP, stops the micro
// service, waits for the requests still running and closes the database. It
// never drains or closes nc: the caller owns it.
//
// Run returns an error if cfg is invalid, the port is taken, the database
// cannot be opened or seeded, the service cannot be registered, or serving
// fails. A ctx cancelled while the database is being seeded is not an
// error: Run returns nil, and the next start seeds again.
func Run(ctx context.Context, cfg Config, nc *nats.Conn, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if nc == nil {
		return errors.New("dbsvc: a NATS connection is required")
	}
	log = log.With("role", "dbsvc")

	hcfg := httpserver.Config{
		Addr:            cfg.Addr,
		Listener:        cfg.Listener,
		ShutdownTimeout: cfg.ShutdownTimeout,
		WriteTimeout:    cfg.QueryTimeout + 10*time.Second, // a report never legitimately takes longer
	}
	ln, err := httpserver.Listen(hcfg)
	if err != nil {
		return fmt.Errorf("dbsvc: %w", err)
	}

	reg := ops.NewRegistry()
	st, err := openStore(ctx, storeConfig{
		Path:         cfg.dbPath(),
		SeedRows:     cfg.SeedRows,
		QueryTimeout: cfg.QueryTimeout,
		MaxOpenConns: maxOpenConns,
		MaxBytes:     cfg.MaxDBBytes,
		Queries:      cfg.Queries,
		Metrics:      newMetrics(reg),
	}, log)
	if err != nil {
		_ = ln.Close()
		if ctx.Err() != nil {
			log.Info("stopped during start-up", "reason", err)
			return nil
		}
		return fmt.Errorf("dbsvc: %w", err)
	}

	svc := newService(st, log)
	msvc, err := svc.register(nc)
	if err != nil {
		_ = ln.Close()
		_ = st.Close()
		return fmt.Errorf("dbsvc: %w", err)
	}
	log.Info("nats service started", "service", wire.DBService, "id", msvc.Info().ID,
		"subjects", []string{wire.DBData, wire.DBItemGet, wire.DBItemUpdate, wire.DBItemList, wire.DBItemDelete, wire.DBUserPut, wire.DBUserGet})

	ready := func(ctx context.Context) error {
		if err := ops.NATSReady(nc)(ctx); err != nil {
			return err
		}
		return st.Ping(ctx)
	}
	errs := []error{httpserver.Serve(ctx, hcfg, ln, newHandler(st, reg, ready, log), log)}

	// HTTP has stopped; now stop taking NATS requests, let the running ones
	// finish, and only then close the database under them.
	if err := msvc.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("stop nats service %s: %w", wire.DBService, err))
	}
	svc.close()
	if err := st.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dbsvc: %w", err)
	}
	log.Info("stopped")
	return nil
}
