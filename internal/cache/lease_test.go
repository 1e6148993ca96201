package cache

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/testutil"
)

// freezer is a TCP proxy to a NATS server that can stop moving bytes while
// keeping every connection open: to its clients, a hung node (docker
// pause), which they only notice when their pings give up, minutes later.
type freezer struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen bool
	thaw   *sync.Cond
	conns  []net.Conn // both ends of every proxied connection, closed at cleanup
}

func newFreezer(t *testing.T, upstream string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	f.thaw = sync.NewCond(&f.mu)
	// One cleanup closes everything: the accept loop must not call
	// t.Cleanup, which may run while the test's cleanups already do.
	t.Cleanup(func() {
		f.set(false)
		_ = ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = client.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, client, server)
			f.mu.Unlock()
			go f.pipe(server, client)
			go f.pipe(client, server)
		}
	}()
	return f
}

func (f *freezer) url() string { return "nats://" + f.ln.Addr().String() }

// pipe copies src to dst, holding each chunk while frozen.
func (f *freezer) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		for f.frozen {
			f.thaw.Wait()
		}
		f.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_ = dst.Close()
			}
			return
		}
	}
}

func (f *freezer) set(frozen bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = frozen
	f.thaw.Broadcast()
}

// TestHungNodeStopsNearCache: a process whose NATS node hangs cannot hear
// invalidations, though its connection looks up for minutes. Its
// near-cache stops serving within LocalLease, and a writer that misses its
// confirmation does not call the write done before then: the read after
// the write, through the hung process, never gets the replaced value from
// its near-cache. (The chaos run's read-your-writes violation, issue #30:
// a gateway on a paused node served an item ~1,000 writes old.)
//
// Two ways the writer learns: its broadcast goes unconfirmed (the process
// was in its view), or its view's ping misses the process (a view older
// than peerViewTTL, pinged again after the hang); then it waits for the
// lease to run out instead.
func TestHungNodeStopsNearCache(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		viewTTL time.Duration
	}{{"unconfirmed", time.Hour}, {"missed by a ping", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testHungNode(t, tc.viewTTL)
		})
	}
}

func testHungNode(t *testing.T, viewTTL time.Duration) {
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	const key = "item.v1.7"
	src.set(key, `{"v":"old"}`)

	a := newCache(t, ns, "gw-a", testCacheConfig(ModeKVLocal))
	a.inv.viewTTL = viewTTL
	hung := newFreezer(t, ns.Addr().String())
	bnc, err := nats.Connect(hung.url(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bnc.Close)
	b, err := New(bnc, "gw-b", testCacheConfig(ModeKVLocal), testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	warmLocal(t, a, src, key)
	warmLocal(t, b, src, key)
	// a knows b before the node hangs: b answered a's last ping. (On a
	// busy machine b may miss a ping's 50 ms; then the next one.)
	bID := b.svc.Info().ID
	testutil.Eventually(t, 10*time.Second, func() error {
		if err := a.Invalidate(t.Context(), "item.v1.other"); err != nil {
			return err
		}
		a.inv.mu.Lock()
		defer a.inv.mu.Unlock()
		if !a.inv.peers[bID] {
			a.inv.refreshed = time.Time{} // ping again next time
			return fmt.Errorf("a's view %v lacks b (%s)", a.inv.peers, bID)
		}
		return nil
	})
	warmLocal(t, b, src, key)

	hung.set(true)
	src.set(key, `{"v":"new"}`)
	start := time.Now()
	// The writer's loop (gateway/items.go invalidate): try until confirmed.
	testutil.Eventually(t, 10*time.Second, func() error { return a.Invalidate(t.Context(), key) })
	waited := time.Since(start)
	if !bnc.IsConnected() {
		t.Fatalf("b's connection closed: the test needs it to look up, as a hung node's does")
	}
	// b cannot reach NATS: its read falls back to the source after the
	// KV timeout, unless its near-cache still answers.
	res := get(t, b, src, key)
	if res.Source == SourceLocal {
		t.Fatalf("after the write (done in %v), the hung process's near-cache served %s", waited, res.Value)
	}
	if string(res.Value) != `{"v":"new"}` {
		t.Fatalf("after the write, the hung process read %s from %s, want the new value", res.Value, res.Source)
	}

	// When the node resumes, the near-cache serves again, starting empty.
	hung.set(false)
	warmLocal(t, b, src, key)
	if res := get(t, b, src, key); string(res.Value) != `{"v":"new"}` {
		t.Fatalf("after the node resumed, b read %s from %s, want the new value", res.Value, res.Source)
	}
}
