// Package httpserver runs an http.Handler the way every scalelab role does:
// listen first (so a busy port fails at start), serve with timeouts, and shut
// down gracefully when the context ends.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Config holds the settings of one HTTP server.
type Config struct {
	// Addr is the address to listen on, used when Listener is nil.
	Addr string
	// Listener, when set, is served instead of listening on Addr; `up` and
	// tests bind ports themselves so they know the real address.
	Listener net.Listener
	// ShutdownTimeout bounds how long in-flight requests may take to finish.
	ShutdownTimeout time.Duration
	// WriteTimeout bounds a whole response; zero means none (proxies, SSE).
	WriteTimeout time.Duration
}

// Listen returns cfg.Listener, or a new listener on cfg.Addr.
func Listen(cfg Config) (net.Listener, error) {
	if cfg.Listener != nil {
		return cfg.Listener, nil
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	return ln, nil
}

// Serve serves h on ln until ctx is done, then stops accepting connections and
// waits up to cfg.ShutdownTimeout for in-flight requests. It returns nil after
// a clean shutdown, and the server's error if serving failed.
func Serve(ctx context.Context, cfg Config, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second, // slowloris
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("http listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("shut down http on %s: %w", ln.Addr(), err)
	}
	log.Info("http stopped", "addr", ln.Addr().String())
	return nil
}
