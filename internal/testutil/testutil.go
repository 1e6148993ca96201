package testutil

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StartNATS starts a JetStream-enabled nats-server on a random port with
// its store under t.TempDir(), and shuts it down at cleanup.
func StartNATS(t testing.TB) *server.Server {
	t.Helper()
	return StartNATSAt(t, -1, t.TempDir())
}

// StartNATSAt starts a server on port (-1: any) over storeDir, for tests
// that restart a server on the same store. It is shut down at cleanup (a
// second Shutdown is harmless).
func StartNATSAt(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir,
		NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatalf("nats server not ready after 10s")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Connect connects to ns with quick, endless reconnects and closes the
// connection at cleanup.
func Connect(t testing.TB, ns *server.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(ns.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Eventually calls check until it returns nil, failing the test if it
// still fails after within. It polls; it never sleeps in the hope that
// something has finished.
func Eventually(t testing.TB, within time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for err := check(); err != nil; err = check() {
		if time.Now().After(deadline) {
			t.Fatalf("not met after %v: %v", within, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// QuietLog returns a logger that discards everything, unless
// SCALELAB_TEST_LOG=1: then it writes every level to stderr, for reading
// what the code under a failing test did (go test -v -run TestX).
func QuietLog() *slog.Logger {
	if os.Getenv("SCALELAB_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// LogBuffer collects what a logger writes (slog.NewJSONHandler(&buf,
// nil)) for a test to read while the code under test still logs: a
// bytes.Buffer behind a mutex.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
