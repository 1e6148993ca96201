package dbsvc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
)

// testSeedRows keeps the test databases small: seeding takes milliseconds.
const testSeedRows = 2000

// startNATS starts an in-process nats-server for one test and returns a
// connection to it. Both are closed when the test ends.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		t.Fatalf("server.NewServer() = %v", err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats-server not ready after 5s")
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect(%s) = %v", ns.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testLogger logs to the test's output, which is shown for failed tests and
// with -v.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// instance is a dbsvc started by startDB.
type instance struct {
	url     string // http://127.0.0.1:port
	client  *Client
	queries *atomic.Int64
	cancel  context.CancelFunc
	done    chan error
}

// startDB runs dbsvc on nc with its database in dir and waits until it
// answers over NATS. It is stopped when the test ends, if stop has not been
// called.
func startDB(t *testing.T, nc *nats.Conn, dir string, seedRows int) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	cfg := DefaultConfig()
	cfg.Listener = ln
	cfg.DataDir = dir
	cfg.SeedRows = seedRows
	cfg.Queries = new(atomic.Int64)
	ctx, cancel := context.WithCancel(t.Context())
	in := &instance{
		url:     "http://" + ln.Addr().String(),
		client:  NewClient(nc),
		queries: cfg.Queries,
		cancel:  cancel,
		done:    make(chan error, 1),
	}
	log := testLogger(t)
	go func() { in.done <- Run(ctx, cfg, nc, log) }()
	t.Cleanup(func() {
		if err := in.stop(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	eventually(t, 30*time.Second, func() error {
		select {
		case err := <-in.done:
			in.done <- err // for stop
			t.Fatalf("Run() returned early: %v", err)
		default:
		}
		_, err := in.client.Item(t.Context(), "", 1)
		return err
	})
	return in
}

// stop cancels Run and returns its result. It may be called more than once.
func (in *instance) stop() error {
	in.cancel()
	select {
	case err := <-in.done:
		in.done <- err // for the next call
		return err
	case <-time.After(30 * time.Second):
		return errors.New("Run did not return within 30s of cancel")
	}
}

// eventually polls check until it returns nil, failing the test after within.
func eventually(t *testing.T, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for err := check(); err != nil; err = check() {
		if time.Now().After(deadline) {
			t.Fatalf("not met after %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// codeOf returns the code of err's *apperr.Error, or "" if it has none.
func codeOf(err error) apperr.Code {
	var e *apperr.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
