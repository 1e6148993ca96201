package dbsvc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
)

// testSeedRows keeps the test databases small: seeding takes milliseconds.
const testSeedRows = 2000

// startNATS starts an in-process nats-server with JetStream for one test and
// returns a connection to it. Both are closed when the test ends.
func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	return testutil.Connect(t, testutil.StartNATS(t))
}

// testLogger logs to the test's output, which is shown for failed tests and
// with -v.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// instance is a dbsvc started by startDB.
type instance struct {
	*testutil.Running
	url     string // http://127.0.0.1:port
	client  *Client
	queries *atomic.Int64
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
	log := testLogger(t)
	in := &instance{
		Running: testutil.Start(t, func(ctx context.Context) error { return Run(ctx, cfg, nc, log) }),
		url:     "http://" + ln.Addr().String(),
		client:  NewClient(nc),
		queries: cfg.Queries,
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if exited, err := in.Exited(); exited {
			t.Fatalf("Run() returned early: %v", err)
		}
		_, err := in.client.Item(t.Context(), "", 1)
		return err
	})
	return in
}

// codeOf returns the code of err's *apperr.Error, or "" if it has none.
func codeOf(err error) apperr.Code {
	var e *apperr.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
