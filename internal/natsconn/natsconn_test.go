package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
)

// startServer starts an in-process nats-server for one test with opts
// completed by the house defaults; it is shut down when the test ends.
func startServer(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	opts.Host = "127.0.0.1"
	if opts.Port == 0 {
		opts.Port = -1
	}
	opts.JetStream = true
	opts.StoreDir = t.TempDir()
	opts.NoSigs = true
	opts.NoLog = true
	ns, err := server.NewServer(&opts)
	if err != nil {
		t.Fatalf("server.NewServer() = %v", err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	return ns
}

// freePort returns a port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// recorder is a slog.Handler that keeps log messages so tests can wait for
// one; it also writes them to the test's output.
type recorder struct {
	slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	return &recorder{Handler: slog.NewTextHandler(t.Output(), nil), mu: new(sync.Mutex), msgs: new([]string)}
}

func (r *recorder) Handle(ctx context.Context, rec slog.Record) error {
	r.mu.Lock()
	*r.msgs = append(*r.msgs, rec.Message)
	r.mu.Unlock()
	return r.Handler.Handle(ctx, rec)
}

func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorder{Handler: r.Handler.WithAttrs(as), mu: r.mu, msgs: r.msgs}
}

func (r *recorder) WithGroup(name string) slog.Handler {
	return &recorder{Handler: r.Handler.WithGroup(name), mu: r.mu, msgs: r.msgs}
}

func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range *r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

type connResult struct {
	nc  *nats.Conn
	err error
}

const retryMsg = "nats not reachable yet, retrying"

func TestConnectWaitsForServer(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	rec := newRecorder(t)
	done := make(chan connResult, 1)
	opts := Options{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Name: "natsconn-test"}
	go func() {
		nc, err := Connect(t.Context(), opts, slog.New(rec))
		done <- connResult{nc, err}
	}()
	// Connect must have failed at least once before the server exists.
	testutil.Eventually(t, 10*time.Second, func() error {
		if rec.count(retryMsg) == 0 {
			return errors.New("no retry logged yet")
		}
		return nil
	})
	select {
	case r := <-done:
		t.Fatalf("Connect() = %v, %v before the server started, want it to keep retrying", r.nc, r.err)
	default:
	}

	ns := startServer(t, server.Options{Port: port})
	var r connResult
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Connect() did not return within 15s of the server starting")
	}
	if r.err != nil {
		t.Fatalf("Connect() = %v, want a connection", r.err)
	}
	t.Cleanup(r.nc.Close)
	if !r.nc.IsConnected() {
		t.Errorf("Connect() status = %v, want connected", r.nc.Status())
	}
	if got := r.nc.Opts.Name; got != opts.Name {
		t.Errorf("connection name = %q, want %q", got, opts.Name)
	}
	if r.nc.Opts.MaxReconnect != -1 {
		t.Errorf("MaxReconnect = %d, want -1 (reconnect forever)", r.nc.Opts.MaxReconnect)
	}
	if got := ns.NumClients(); got != 1 {
		t.Errorf("server NumClients() = %d, want 1", got)
	}
}

func TestConnectContextEnds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want error
		ctx  func(t *testing.T, rec *recorder) context.Context
	}{
		{"cancelled", context.Canceled, func(t *testing.T, rec *recorder) context.Context {
			ctx, cancel := context.WithCancel(t.Context())
			go func() {
				// Cancel once Connect is in its retry loop.
				for rec.count(retryMsg) == 0 && ctx.Err() == nil {
					time.Sleep(10 * time.Millisecond) // poll interval
				}
				cancel()
			}()
			t.Cleanup(cancel)
			return ctx
		}},
		{"deadline", context.DeadlineExceeded, func(t *testing.T, _ *recorder) context.Context {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			t.Cleanup(cancel)
			return ctx
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := newRecorder(t)
			url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
			ctx := tt.ctx(t, rec)
			done := make(chan connResult, 1)
			go func() {
				nc, err := Connect(ctx, Options{URL: url, Name: "t"}, slog.New(rec))
				done <- connResult{nc, err}
			}()
			var r connResult
			select {
			case r = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("Connect() did not return within 15s of its context ending")
			}
			if !errors.Is(r.err, tt.want) || r.nc != nil {
				t.Errorf("Connect() = %v, %v, want nil, an error wrapping %v", r.nc, r.err, tt.want)
			}
			if r.err != nil && !strings.Contains(r.err.Error(), url) {
				t.Errorf("Connect() = %v, want the error to name %s", r.err, url)
			}
		})
	}
}

func TestConnectWithCredentials(t *testing.T) {
	t.Parallel()
	ns := startServer(t, server.Options{Username: "app", Password: "s3cret"})
	log := slog.New(newRecorder(t))
	nc, err := Connect(t.Context(), Options{URL: ns.ClientURL(), Name: "t", User: "app", Password: "s3cret"}, log)
	if err != nil {
		t.Fatalf("Connect(right password) = %v, want nil", err)
	}
	if got := nc.NewInbox(); !strings.HasPrefix(got, "_INBOX.app.") {
		t.Errorf("NewInbox() = %q, want the user's prefix _INBOX.app.", got)
	}
	nc.Close()

	// A refused password is final: no retrying until ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if nc, err := Connect(ctx, Options{URL: ns.ClientURL(), Name: "t", User: "app", Password: "wrong"}, log); !errors.Is(err, nats.ErrAuthorization) || ctx.Err() != nil {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("Connect(wrong password) = %v (ctx %v), want nats.ErrAuthorization at once", err, ctx.Err())
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		o       Options
		wantErr bool
	}{
		{"no credentials", Options{URL: "nats://x"}, false},
		{"user and password", Options{User: "gateway-2_b", Password: "p"}, false},
		{"user without password", Options{User: "gateway"}, true},
		{"password without user", Options{Password: "p"}, true},
		{"dot in user", Options{User: "a.b", Password: "p"}, true},
		{"wildcard user", Options{User: ">", Password: "p"}, true},
		{"space in user", Options{User: "a b", Password: "p"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.o.Validate(); (err != nil) != tt.wantErr {
				t.Errorf("Validate(%+v) = %v, want error %v", tt.o, err, tt.wantErr)
			}
		})
	}
	// Connect refuses bad options at once instead of retrying.
	if _, err := Connect(t.Context(), Options{URL: "nats://127.0.0.1:1", User: "a.b", Password: "p"}, slog.New(newRecorder(t))); err == nil {
		t.Errorf("Connect(user a.b) = nil error, want the validation error")
	}
}

func TestRequestError(t *testing.T) {
	t.Parallel()
	ns := startServer(t, server.Options{})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)
	// A subscriber that never answers, for a real timeout.
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatalf("Subscribe() = %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	_, noResponders := nc.Request("nobody.home", nil, 5*time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, deadline := nc.RequestWithContext(ctx, "silent", nil)
	_, timeout := nc.Request("silent", nil, 50*time.Millisecond)
	cctx, ccancel := context.WithCancel(t.Context())
	ccancel()
	_, cancelled := nc.RequestWithContext(cctx, "silent", nil)

	closedConn, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	closedConn.Close()
	_, closed := closedConn.Request("silent", nil, time.Second)

	tests := []struct {
		name    string
		err     error
		want    error // must stay in the chain
		unavail bool
	}{
		{"live no responders", noResponders, nats.ErrNoResponders, true},
		{"live context deadline", deadline, context.DeadlineExceeded, true},
		{"live timeout", timeout, nats.ErrTimeout, true},
		{"live closed connection", closed, nats.ErrConnectionClosed, true},
		{"no responders", nats.ErrNoResponders, nats.ErrNoResponders, true},
		{"wrapped deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), context.DeadlineExceeded, true},
		{"connection closed", nats.ErrConnectionClosed, nats.ErrConnectionClosed, true},
		{"draining", nats.ErrConnectionDraining, nats.ErrConnectionDraining, true},
		{"disconnected", nats.ErrDisconnected, nats.ErrDisconnected, true},
		{"reconnecting", nats.ErrConnectionReconnecting, nats.ErrConnectionReconnecting, true},
		{"reconnect buffer full", nats.ErrReconnectBufExceeded, nats.ErrReconnectBufExceeded, true},
		{"invalid connection", nats.ErrInvalidConnection, nats.ErrInvalidConnection, true},
		{"cancelled", context.Canceled, context.Canceled, true},
		{"live cancelled", cancelled, context.Canceled, true},
		{"bad subject", nats.ErrBadSubject, nats.ErrBadSubject, false},
		{"max payload", nats.ErrMaxPayload, nats.ErrMaxPayload, false},
		{"other", errors.New("decode reply: bad json"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := tt.want
			if want == nil {
				want = tt.err
			}
			if !errors.Is(tt.err, want) {
				t.Fatalf("test setup: %v does not wrap %v", tt.err, want)
			}
			got := RequestError("dbsvc", tt.err)
			if !errors.Is(got, want) {
				t.Errorf("RequestError(%v) = %v, want it to wrap %v", tt.err, got, want)
			}
			var ae *apperr.Error
			isApp := errors.As(got, &ae)
			switch {
			case tt.unavail && (!isApp || ae.Code != apperr.Unavailable):
				t.Errorf("RequestError(%v) = %#v, want an *apperr.Error with code %q", tt.err, got, apperr.Unavailable)
			case !tt.unavail && isApp:
				t.Errorf("RequestError(%v) = %#v, want a plain error", tt.err, got)
			case !tt.unavail && !strings.Contains(got.Error(), "dbsvc"):
				t.Errorf("RequestError(%v) = %q, want it to name the service", tt.err, got)
			}
		})
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	ns := startServer(t, server.Options{})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)
	var handled atomic.Int64
	release := make(chan struct{})
	if _, err := nc.Subscribe("work", func(*nats.Msg) {
		<-release
		handled.Add(1)
	}); err != nil {
		t.Fatalf("Subscribe() = %v", err)
	}
	const n = 5
	for range n {
		if err := nc.Publish("work", nil); err != nil {
			t.Fatalf("Publish() = %v", err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("Flush() = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- Close(nc, 10*time.Second) }()
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close() did not return within 15s")
	}
	if !nc.IsClosed() {
		t.Errorf("after Close() status = %v, want closed", nc.Status())
	}
	if got := handled.Load(); got != n {
		t.Errorf("messages handled before Close() returned = %d, want %d (drained)", got, n)
	}
	if err := Close(nc, time.Second); err != nil {
		t.Errorf("Close() of a closed connection = %v, want nil", err)
	}
	if err := Close(nil, time.Second); err != nil {
		t.Errorf("Close(nil) = %v, want nil", err)
	}
}

func TestRetry(t *testing.T) {
	t.Parallel()
	log := slog.New(newRecorder(t))
	errBoom := errors.New("boom")

	t.Run("succeeds after failures", func(t *testing.T) {
		t.Parallel()
		calls := 0
		err := Retry(t.Context(), log, "provision", func(ctx context.Context) error {
			calls++
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("attempt context has no deadline")
			}
			if calls < 3 {
				return errBoom
			}
			return nil
		})
		if err != nil || calls != 3 {
			t.Errorf("Retry() = %v after %d calls, want nil after 3", err, calls)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		err := Retry(ctx, log, "provision", func(context.Context) error { return errBoom })
		if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "provision") {
			t.Errorf("Retry() = %v, want the last error %v prefixed with what", err, errBoom)
		}
	})
}
