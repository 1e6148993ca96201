package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
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

// Run is the start of a role whose work is an HTTP server: it listens first,
// so that a busy port fails before anything else starts; then prepare
// builds the handler, waiting as long as it must for what the role needs (a
// stream, a bucket); then Serve serves it until ctx is done.
//
// It returns the listen error, prepare's error, or Serve's; but nil when
// prepare fails after ctx ended: a role stopped while it was starting has
// nothing to report.
func Run(ctx context.Context, cfg Config, log *slog.Logger, prepare func(context.Context) (http.Handler, error)) error {
	ln, err := Listen(cfg)
	if err != nil {
		return err
	}
	h, err := prepare(ctx)
	if err != nil {
		ln.Close()
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return Serve(ctx, cfg, ln, h, log)
}

// Serve serves h on ln until ctx is done, then stops accepting connections and
// waits up to cfg.ShutdownTimeout for in-flight requests. It returns nil after
// a clean shutdown, and the server's error if serving failed.
func Serve(ctx context.Context, cfg Config, ln net.Listener, h http.Handler, log *slog.Logger) error {
	var silent SilentConns
	srv := &http.Server{
		ConnState:         silent.track,
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
	stopClosing := silent.CloseWhile(SilentQuiet)
	err := srv.Shutdown(sctx)
	stopClosing()
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("shut down http on %s: %w", ln.Addr(), err)
	}
	log.Info("http stopped", "addr", ln.Addr().String())
	return nil
}

// SilentQuiet is how long a connection may stay silent after it was
// accepted before a shutdown closes it. A client that connects to send a
// request writes it at once; one that stays silent for a second is a spare
// it dialled ahead.
const SilentQuiet = time.Second

// SilentConns tracks the connections a server accepted that have not sent
// a byte yet, so that its shutdown can close them. The zero value is ready.
//
// Both net/http's and fasthttp's shutdowns wait for such a connection until
// it has been silent for 5 s (golang/go#22682). Browsers dial spares ahead
// of need, and so do proxy pools such as the balancer's, so one would hold
// every shutdown for 5–6 s and fail it when ShutdownTimeout is shorter.
type SilentConns struct {
	since sync.Map // net.Conn → time.Time it was accepted
}

// Accepted records c as accepted and silent.
func (s *SilentConns) Accepted(c net.Conn) { s.since.Store(c, time.Now()) }

// Heard records that c sent a request, or closed: it is not silent. It runs
// on every request, so it stays one map operation.
func (s *SilentConns) Heard(c net.Conn) { s.since.Delete(c) }

// track is net/http's ConnState hook.
func (s *SilentConns) track(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		s.Accepted(c)
	case http.StateActive, http.StateClosed, http.StateHijacked:
		s.Heard(c)
	}
}

// CloseWhile closes, until the returned stop is called, every connection
// that has stayed silent for quiet since it was accepted. Call it when the
// shutdown starts and stop when it ends.
func (s *SilentConns) CloseWhile(quiet time.Duration) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(quiet / 10)
		defer tick.Stop()
		for {
			s.since.Range(func(c, since any) bool {
				if time.Since(since.(time.Time)) >= quiet {
					// The server sees a read error and forgets the conn.
					c.(net.Conn).Close()
					s.since.Delete(c)
				}
				return true
			})
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}
