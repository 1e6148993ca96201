package httpserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// listen binds a free port on the loopback interface.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// waitErr waits for Serve's result.
func waitErr(t *testing.T, done <-chan error, within time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		t.Fatalf("Serve() did not return within %v", within)
		return nil
	}
}

type response struct {
	status int
	body   string
	err    error
}

func get(client *http.Client, url string) response {
	resp, err := client.Get(url)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: string(b), err: err}
}

func TestServeGracefulShutdown(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	started := make(chan struct{})
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		// The server's context is cancelled by now; the request's must not be.
		fmt.Fprintf(w, "done ctx_err=%v", r.Context().Err())
	})
	mux.HandleFunc("GET /fast", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	cfg := Config{ShutdownTimeout: 10 * time.Second}
	go func() { done <- Serve(ctx, cfg, ln, mux, testLogger(t)) }()

	client := &http.Client{Timeout: 10 * time.Second}
	base := "http://" + ln.Addr().String()
	if r := get(client, base+"/fast"); r.err != nil || r.status != http.StatusOK || r.body != "fast" {
		t.Fatalf("GET /fast = %d %q %v, want 200 \"fast\"", r.status, r.body, r.err)
	}

	slow := make(chan response, 1)
	go func() { slow <- get(client, base+"/slow") }()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("GET /slow did not reach the handler within 10s")
	}
	cancel()

	// Shutdown closes the listener: new connections are refused...
	testutil.Eventually(t, 5*time.Second, func() error {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		return errors.New("listener still accepts connections")
	})
	// ...but Serve waits for the in-flight request.
	select {
	case err := <-done:
		t.Fatalf("Serve() = %v while a request was in flight, want it to wait", err)
	default:
	}
	close(release)

	r := <-slow
	if r.err != nil || r.status != http.StatusOK || r.body != "done ctx_err=<nil>" {
		t.Errorf("in-flight GET /slow = %d %q %v, want 200 \"done ctx_err=<nil>\"", r.status, r.body, r.err)
	}
	if err := waitErr(t, done, 10*time.Second); err != nil {
		t.Errorf("Serve() = %v, want nil after a clean shutdown", err)
	}
}

func TestServeShutdownTimeout(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	started := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, Config{ShutdownTimeout: 50 * time.Millisecond}, ln, h, testLogger(t)) }()

	client := &http.Client{Timeout: 10 * time.Second}
	go get(client, "http://"+ln.Addr().String()+"/")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("request did not reach the handler within 10s")
	}
	cancel()
	err := waitErr(t, done, 10*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Serve() with a request outliving ShutdownTimeout = %v, want %v", err, context.DeadlineExceeded)
	}
}

func TestServeShutdownClosesSilentConns(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	// Longer than SilentQuiet, shorter than the 5-6 s net/http alone would
	// wait for a connection that never sent a request.
	cfg := Config{ShutdownTimeout: 4 * time.Second}
	go func() { done <- Serve(ctx, cfg, ln, http.NotFoundHandler(), testLogger(t)) }()

	// A spare connection, dialled ahead as browsers and proxy pools do.
	spare, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial = %v", err)
	}
	defer spare.Close()
	// Make sure the server has accepted it before shutting down.
	client := &http.Client{Timeout: 10 * time.Second}
	if r := get(client, "http://"+ln.Addr().String()+"/"); r.err != nil {
		t.Fatalf("GET / = %v", r.err)
	}
	client.CloseIdleConnections()

	start := time.Now()
	cancel()
	if err := waitErr(t, done, 10*time.Second); err != nil {
		t.Errorf("Serve() with a silent connection open = %v after %v, want nil", err, time.Since(start))
	}
	// The server closed the spare: reading it ends.
	spare.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := spare.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("read on the spare connection after shutdown = %v, want EOF", err)
	}
}

func TestServeListenerFails(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	ln.Close()
	done := make(chan error, 1)
	go func() {
		done <- Serve(t.Context(), Config{ShutdownTimeout: time.Second}, ln, http.NotFoundHandler(), testLogger(t))
	}()
	err = waitErr(t, done, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "serve http") {
		t.Errorf("Serve(closed listener) = %v, want a serve error", err)
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	taken := listen(t)

	if _, err := Listen(Config{Addr: taken.Addr().String()}); err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("Listen(%s) on a taken port = %v, want an error naming the address", taken.Addr(), err)
	}
	if _, err := Listen(Config{Addr: "256.0.0.1:http"}); err == nil {
		t.Errorf("Listen(bad address) = nil, want an error")
	}

	got, err := Listen(Config{Addr: "ignored:1", Listener: taken})
	if err != nil || got != taken {
		t.Errorf("Listen(Config{Listener: ln}) = %v, %v, want ln, nil", got, err)
	}

	ln, err := Listen(Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("Listen(127.0.0.1:0) = %v", err)
	}
	defer ln.Close()
	if addr := ln.Addr().(*net.TCPAddr); addr.Port == 0 {
		t.Errorf("Listen(127.0.0.1:0) bound port 0, want a real port")
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	errPrepare := errors.New("no bucket")
	prepareFails := func(context.Context) (http.Handler, error) { return nil, errPrepare }

	t.Run("listen fails", func(t *testing.T) {
		t.Parallel()
		taken := listen(t)
		prepared := false
		err := Run(t.Context(), Config{Addr: taken.Addr().String()}, testLogger(t), func(context.Context) (http.Handler, error) {
			prepared = true
			return http.NotFoundHandler(), nil
		})
		if err == nil || !strings.Contains(err.Error(), "listen on") {
			t.Errorf("Run() on a taken port = %v, want a listen error", err)
		}
		if prepared {
			t.Error("Run() prepared the handler after the listen failed")
		}
	})
	t.Run("prepare fails", func(t *testing.T) {
		t.Parallel()
		ln := listen(t)
		if err := Run(t.Context(), Config{Listener: ln}, testLogger(t), prepareFails); !errors.Is(err, errPrepare) {
			t.Errorf("Run() = %v, want %v", err, errPrepare)
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept() after Run() = %v, want net.ErrClosed: the listener must be closed", err)
		}
	})
	t.Run("prepare stopped by ctx", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := Run(ctx, Config{Listener: listen(t)}, testLogger(t), prepareFails); err != nil {
			t.Errorf("Run() with ctx done during prepare = %v, want nil", err)
		}
	})
	t.Run("serves until ctx ends", func(t *testing.T) {
		t.Parallel()
		ln := listen(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{Listener: ln, ShutdownTimeout: 5 * time.Second}, testLogger(t), func(context.Context) (http.Handler, error) {
				return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "prepared") }), nil
			})
		}()
		client := &http.Client{Timeout: 10 * time.Second}
		if got := get(client, "http://"+ln.Addr().String()); got.err != nil || got.body != "prepared" {
			t.Errorf("GET = %+v, want the prepared handler's body", got)
		}
		cancel()
		if err := waitErr(t, done, 10*time.Second); err != nil {
			t.Errorf("Run() after cancel = %v, want nil", err)
		}
	})
}
