package natsconf

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestSingleConfParses(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile("single.conf")
	if err != nil {
		t.Fatalf("ProcessConfigFile(single.conf) = %v", err)
	}
	if !opts.JetStream {
		t.Errorf("single.conf: JetStream = false, want true")
	}
	if opts.Port != 4222 || opts.HTTPPort != 8222 {
		t.Errorf("single.conf: ports = %d/%d, want 4222/8222", opts.Port, opts.HTTPPort)
	}
	b, err := os.ReadFile("single.conf")
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != SingleConf {
		t.Errorf("SingleConf differs from single.conf")
	}
}

func TestStartEmbeddedKeepsStreamsAcrossRestarts(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "nats")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func() (*server.Server, *nats.Conn) {
		t.Helper()
		ns, err := StartEmbedded(Embedded{Host: "127.0.0.1", Port: -1, StoreDir: dir}, log)
		if err != nil {
			t.Fatalf("StartEmbedded() = %v", err)
		}
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		return ns, nc
	}
	ns, nc := start()
	js, _ := nc.JetStream()
	if _, err := js.AddStream(&nats.StreamConfig{Name: "KEEP", Subjects: []string{"keep"}, Storage: nats.FileStorage}); err != nil {
		t.Fatalf("AddStream = %v", err)
	}
	if _, err := js.Publish("keep", []byte("x")); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	ns, nc = start()
	defer func() { nc.Close(); ns.Shutdown(); ns.WaitForShutdown() }()
	js, _ = nc.JetStream()
	info, err := js.StreamInfo("KEEP")
	if err != nil {
		t.Fatalf("StreamInfo after restart = %v", err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("messages after restart = %d, want 1", info.State.Msgs)
	}
}
