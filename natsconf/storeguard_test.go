package natsconf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// startGuarded starts an embedded server over dir/nats, with the limit
// GuardStore needs, and a stream S on it.
func startGuarded(t *testing.T, dir string, log *slog.Logger) (*server.Server, jetstream.JetStream) {
	t.Helper()
	ns, err := StartEmbedded(Embedded{Host: "127.0.0.1", Port: -1, StoreDir: filepath.Join(dir, "nats"), MaxStore: GuardMaxStore}, log)
	if err != nil {
		t.Fatalf("StartEmbedded() = %v", err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	js, err := jetstream.New(testutil.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("CreateStream(S) = %v", err)
	}
	return ns, js
}

// publish publishes one message of n bytes to S, waiting at most 2 s for
// the ack (a stream broken by ENOSPC never answers).
func publish(t *testing.T, js jetstream.JetStream, n int) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err := js.Publish(ctx, "s.x", bytes.Repeat([]byte("x"), n))
	return err
}

// writeErrors lists the streams' latched write errors, as the server's
// health check reports them.
func writeErrors(ns *server.Server) []string {
	var out []string
	for _, e := range ns.Healthz(&server.HealthzOptions{Details: true}).Errors {
		if strings.Contains(e.Error, "write error") {
			out = append(out, e.Error)
		}
	}
	return out
}

// TestGuardStoreRefusesBeforeTheDiskFills fills a real 16 MiB disk with
// JetStream messages under GuardStore: the publish that would eat into
// the reserve is refused at once with the account's limit (task.NoSpace),
// never with ENOSPC; purging the stream lets publishes in again, with no
// restart. Then a file written next to the store (as `up`'s SQLite file
// is) takes the space: JetStream refuses again, and takes writes again
// once the file is removed.
func TestGuardStoreRefusesBeforeTheDiskFills(t *testing.T) {
	t.Parallel()
	dir := testutil.MountTmpfs(t, 16<<20)
	ns, js := startGuarded(t, dir, testutil.QuietLog())
	const reserve = 4 << 20
	testutil.Start(t, func(ctx context.Context) error {
		return GuardStore(ctx, ns, StoreGuard{Dir: dir, Reserve: reserve, Interval: 10 * time.Millisecond}, testutil.QuietLog())
	})

	var stored int
	for {
		err := publish(t, js, 16<<10)
		if err == nil {
			if stored++; stored > 16<<20/(16<<10) {
				t.Fatalf("%d messages of 16 KiB stored on a 16 MiB disk, want a refusal long before", stored)
			}
			continue
		}
		if !task.NoSpace(err) {
			t.Fatalf("publish on a full store = %v, want the account's store limit (task.NoSpace)", err)
		}
		break
	}
	if stored == 0 {
		t.Fatal("no message stored before the refusal")
	}
	free, err := diskFree(dir)
	if err != nil {
		t.Fatal(err)
	}
	if free <= 0 || len(writeErrors(ns)) > 0 {
		t.Fatalf("after the refusal: %d bytes free, write errors %v; want free space left and none", free, writeErrors(ns))
	}
	t.Logf("refused after %d messages of 16 KiB, %d bytes still free (reserve %d)", stored, free, reserve)

	if err := js.DeleteStream(t.Context(), "S"); err != nil {
		t.Fatalf("DeleteStream(S) = %v", err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("CreateStream(S) again = %v", err)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return publish(t, js, 32<<10) })

	// The deleted stream's files go once the server closes them: wait for
	// their space, then something else fills the disk to under the
	// reserve.
	testutil.Eventually(t, 10*time.Second, func() error {
		if free, err := diskFree(dir); err != nil || free < 12<<20 {
			return fmt.Errorf("%d bytes free (%v), want the deleted stream's space back", free, err)
		}
		return nil
	})
	ballast := testutil.FillDisk(t, dir, reserve/2)
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := publish(t, js, 1<<10); !task.NoSpace(err) {
			return fmt.Errorf("publish with %d bytes free = %v, want refused for want of space", reserve/2, err)
		}
		return nil
	})
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return publish(t, js, 32<<10) })
	if errs := writeErrors(ns); len(errs) > 0 {
		t.Fatalf("write errors %v, want none: the disk never filled", errs)
	}
}

// TestGuardStoreRestartsJetStreamAfterENOSPC lets a real 8 MiB disk fill
// under JetStream with no guard: the publish is never answered and the
// stream latches the error (what nats-server 2.15 does on ENOSPC), and it
// stays broken after space returns. GuardStore, started then, waits while
// the disk is full, and restarts JetStream once the ballast is removed:
// publishing works again, on the same connection, and the messages stored
// before are all there.
func TestGuardStoreRestartsJetStreamAfterENOSPC(t *testing.T) {
	t.Parallel()
	dir := testutil.MountTmpfs(t, 8<<20)
	var logs testutil.LogBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ns, js := startGuarded(t, dir, log)
	for range 10 {
		if err := publish(t, js, 1<<10); err != nil {
			t.Fatalf("publish = %v", err)
		}
	}

	ballast := testutil.FillDisk(t, dir, 0)
	if err := publish(t, js, 64<<10); err == nil {
		t.Fatal("publish on a full disk = nil, want an error")
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if len(writeErrors(ns)) == 0 {
			return errors.New("no stream reports a write error yet")
		}
		return nil
	})
	// Space returns, but the stream stays broken: nothing heals it.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, js, 1<<10); err == nil {
		t.Fatal("publish after space returned, no guard = nil; nats-server healed the stream by itself, so the guard's restart may no longer be needed")
	}

	ballast = testutil.FillDisk(t, dir, 0)
	testutil.Start(t, func(ctx context.Context) error {
		return GuardStore(ctx, ns, StoreGuard{Dir: dir, Reserve: 1 << 20, Interval: 10 * time.Millisecond}, log)
	})
	testutil.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "restarts once space is free") {
			return errors.New("the guard has not said it waits for space")
		}
		return nil
	})
	if !ns.JetStreamEnabled() || len(writeErrors(ns)) == 0 {
		t.Fatal("the guard restarted JetStream with the disk still full")
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error { return publish(t, js, 1<<10) })
	info, err := js.Stream(t.Context(), "S")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n < 11 {
		t.Errorf("S holds %d messages after the restart, want the 10 stored before and the new one", n)
	}
	if !strings.Contains(logs.String(), "jetstream restarted after a full disk") {
		t.Errorf("guard log %q does not say it restarted JetStream", logs.String())
	}
}
