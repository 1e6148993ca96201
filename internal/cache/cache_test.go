package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/testutil"
)

// source is a fake database for the loaders: a value per key, counting
// loads. (The cache is real: NATS KV on an embedded server.)
type source struct {
	mu     sync.Mutex
	values map[string]string
	loads  atomic.Int64
	gate   chan struct{} // when set, a load waits for it
}

func newSource() *source { return &source{values: map[string]string{}} }

func (s *source) set(key, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[key] = v
}

func (s *source) loader(key string) Loader {
	return func(ctx context.Context) ([]byte, error) {
		s.loads.Add(1)
		if s.gate != nil {
			<-s.gate
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		v, ok := s.values[key]
		if !ok {
			return nil, fmt.Errorf("load %s: %w", key, ErrNotFound)
		}
		return []byte(v), nil
	}
}

// provision creates the cache bucket as cachesvc does: per-key TTLs on.
func provision(t *testing.T, nc *nats.Conn, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{
		Bucket: Bucket, History: 1, TTL: ttl, LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	return kv
}

func testCacheConfig(mode Mode) Config {
	cfg := DefaultConfig()
	cfg.Mode = mode
	return cfg
}

// newCache starts a Cache on its own connection (a process of its own).
func newCache(t *testing.T, ns *server.Server, id string, cfg Config) *Cache {
	t.Helper()
	c, err := New(testutil.Connect(t, ns), id, cfg, testutil.QuietLog())
	if err != nil {
		t.Fatalf("New(%s) = %v", id, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// get is Get that fails the test on an error.
func get(t *testing.T, c *Cache, src *source, key string) Result {
	t.Helper()
	res, err := c.Get(t.Context(), key, src.loader(key))
	if err != nil {
		t.Fatalf("Get(%s) = %v", key, err)
	}
	return res
}

// warmLocal reads key until c's near-cache serves it.
func warmLocal(t *testing.T, c *Cache, src *source, key string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if res := get(t, c, src, key); res.Source != SourceLocal {
			return fmt.Errorf("Get(%s) answered by %s, want local", key, res.Source)
		}
		return nil
	})
}

func TestTiers(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("item.v1.1", `{"id":1}`)

	local := newCache(t, ns, "gw-local", testCacheConfig(ModeKVLocal))
	if res := get(t, local, src, "item.v1.1"); res.Source != SourceDB || string(res.Value) != `{"id":1}` || res.Cached() {
		t.Errorf("first Get = %+v, want the value from the database", res)
	}
	warmLocal(t, local, src, "item.v1.1")

	kvOnly := newCache(t, ns, "gw-kv", testCacheConfig(ModeKV))
	for range 3 {
		if res := get(t, kvOnly, src, "item.v1.1"); res.Source != SourceKV || string(res.Value) != `{"id":1}` {
			t.Errorf("Get with --cache kv = %+v, want the value from KV", res)
		}
	}
	off := newCache(t, ns, "gw-off", testCacheConfig(ModeOff))
	before := src.loads.Load()
	for range 3 {
		if res := get(t, off, src, "item.v1.1"); res.Source != SourceDB {
			t.Errorf("Get with --cache off = %+v, want the database", res)
		}
	}
	if got := src.loads.Load() - before; got != 3 {
		t.Errorf("loads with --cache off for 3 reads = %d, want 3", got)
	}
	if st := kvOnly.Stats(); st.KV.Hits != 3 || st.Loads != 0 || st.Local.Hits != 0 {
		t.Errorf("kv-only stats = %+v, want 3 KV hits, no loads, no local hits", st)
	}
	if _, err := local.Get(t.Context(), "bad key", src.loader("x")); err == nil {
		t.Errorf("Get(\"bad key\") = nil error, want the key refused")
	}
}

// TestColdKeyOneLoadAcrossProcesses: 200 concurrent misses for one key,
// spread over two processes, cost the source one load: singleflight in
// each process, the KV lease between them.
func TestColdKeyOneLoadAcrossProcesses(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("data.v1", `{"report":true}`)
	src.gate = make(chan struct{})
	caches := []*Cache{
		newCache(t, ns, "gw-a", testCacheConfig(ModeKVLocal)),
		newCache(t, ns, "gw-b", testCacheConfig(ModeKVLocal)),
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			res, err := caches[i%2].Get(context.Background(), "data.v1", src.loader("data.v1"))
			if err == nil && string(res.Value) != `{"report":true}` {
				err = fmt.Errorf("Get = %+v", res)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	// Hold the load until the other process is waiting on the lease.
	testutil.Eventually(t, 10*time.Second, func() error {
		if w := caches[0].Stats().LeaseWaits + caches[1].Stats().LeaseWaits; w == 0 {
			return errors.New("no process is waiting on the lease yet")
		}
		return nil
	})
	close(src.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := src.loads.Load(); got != 1 {
		t.Errorf("loads for 200 concurrent cold reads over 2 processes = %d, want 1", got)
	}
}

func TestNegativeCaching(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	cfg := testCacheConfig(ModeKV)
	cfg.NegativeTTL = time.Second
	c := newCache(t, ns, "gw", cfg)

	start := time.Now()
	for range 3 {
		if res := get(t, c, src, "item.v1.404"); !res.NotFound || res.Value != nil {
			t.Fatalf("Get(absent) = %+v, want NotFound", res)
		}
	}
	if got := src.loads.Load(); got != 1 {
		t.Errorf("loads for 3 reads of an absent key = %d, want 1 (not-found cached)", got)
	}
	// Briefly: once the negative TTL is over, the source is asked again.
	testutil.Eventually(t, 10*time.Second, func() error {
		get(t, c, src, "item.v1.404")
		if src.loads.Load() < 2 {
			return errors.New("the cached not-found has not expired")
		}
		return nil
	})
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("not-found expired after %v, want about the 1s negative TTL", d)
	}
}

// TestTTLExpiryRefreshes: an entry's TTL ends in KV, its L1 copy goes with
// it (the watch sees the expiry), and the next read loads again.
func TestTTLExpiryRefreshes(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("item.v1.7", `{"v":1}`)
	cfg := testCacheConfig(ModeKVLocal)
	cfg.TTL, cfg.Jitter = time.Second, 0
	c := newCache(t, ns, "gw", cfg)
	warmLocal(t, c, src, "item.v1.7")
	src.set("item.v1.7", `{"v":2}`)
	testutil.Eventually(t, 10*time.Second, func() error {
		if res := get(t, c, src, "item.v1.7"); string(res.Value) != `{"v":2}` {
			return fmt.Errorf("Get = %s from %s, want the refreshed value", res.Value, res.Source)
		}
		return nil
	})
}

// TestRefreshAhead: a key read all the time is reloaded in the background
// before its entry expires, so no reader waits for the database after the
// first one, and the reloads pick up what changed in the source.
func TestRefreshAhead(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("data.v1", `{"v":1}`)
	slow := func(ctx context.Context) ([]byte, error) {
		// A database read that takes a while, as /data's aggregate does:
		// without refresh ahead, the reader at each expiry waits for it.
		time.Sleep(50 * time.Millisecond)
		return src.loader("data.v1")(ctx)
	}
	cfg := testCacheConfig(ModeKV)
	cfg.TTL, cfg.Jitter = 2*time.Second, 0 // refreshes from 1.8 s of age
	c := newCache(t, ns, "gw", cfg)
	if res, err := c.Get(t.Context(), "data.v1", slow); err != nil || res.Source != SourceDB {
		t.Fatalf("first Get = %v, %v; want a load", res, err)
	}
	// Two entry lives and a half: both expiries must have been refreshed.
	end := time.Now().Add(5 * time.Second)
	changed := time.Now().Add(time.Second)
	var sawV2 bool
	for time.Now().Before(end) {
		if time.Now().After(changed) {
			src.set("data.v1", `{"v":2}`)
		}
		res, err := c.Get(t.Context(), "data.v1", slow)
		if err != nil {
			t.Fatalf("Get = %v", err)
		}
		if res.Source == SourceDB {
			t.Fatalf("a reader waited for the database at %v; want the entry refreshed ahead of expiry (refreshes: %d)",
				time.Until(end), c.Stats().Refreshes)
		}
		sawV2 = sawV2 || string(res.Value) == `{"v":2}`
		time.Sleep(10 * time.Millisecond) // the pace of a steady reader, not a wait for a condition
	}
	if n := c.Stats().Refreshes; n < 2 {
		t.Errorf("refreshes = %d over two entry lives, want at least 2", n)
	}
	if !sawV2 {
		t.Error("the refreshed entry never carried the source's new value")
	}
}

// TestInvalidateReadYourWrites: when Invalidate returns, no process serves
// the old value, from L1 or KV.
func TestInvalidateReadYourWrites(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("item.v1.3", `{"v":"old"}`)
	a := newCache(t, ns, "gw-a", testCacheConfig(ModeKVLocal))
	b := newCache(t, ns, "gw-b", testCacheConfig(ModeKVLocal))
	kvOnly := newCache(t, ns, "gw-c", testCacheConfig(ModeKV))
	for round := range 5 {
		warmLocal(t, a, src, "item.v1.3")
		warmLocal(t, b, src, "item.v1.3")
		want := fmt.Sprintf(`{"v":%d}`, round)
		src.set("item.v1.3", want)
		if err := a.Invalidate(t.Context(), "item.v1.3"); err != nil {
			t.Fatalf("Invalidate() = %v", err)
		}
		for _, c := range []*Cache{b, a, kvOnly} {
			if res := get(t, c, src, "item.v1.3"); string(res.Value) != want {
				t.Fatalf("round %d: %s Get after Invalidate = %s from %s, want %s", round, c.id, res.Value, res.Source, want)
			}
		}
	}
	if st := a.Stats(); st.Local.Hits == 0 {
		t.Errorf("stats = %+v, want local hits", st)
	}
}

// TestForeignWriteReachesL1: a write to the bucket by anyone (here the KV
// API, as `nats kv put` would) drops the L1 copies through the watch.
func TestForeignWriteReachesL1(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	kv := provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("k", `"db"`)
	c := newCache(t, ns, "gw", testCacheConfig(ModeKVLocal))
	warmLocal(t, c, src, "k")
	if _, err := kv.Put(t.Context(), "k", []byte(`"cli"`)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if res := get(t, c, src, "k"); string(res.Value) != `"cli"` {
			return fmt.Errorf("Get(k) = %s from %s, want the value put in KV", res.Value, res.Source)
		}
		return nil
	})
	// A foreign value that is not JSON is not served: read the source.
	if _, err := kv.Put(t.Context(), "k", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if res := get(t, c, src, "k"); string(res.Value) != `"db"` {
			return fmt.Errorf("Get(k) = %s from %s, want the database's value", res.Value, res.Source)
		}
		return nil
	})
}

// TestInvalidateDuringLoad: a load that started before a write must not
// put its (old) value in the cache after the write's invalidation.
func TestInvalidateDuringLoad(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	kv := provision(t, testutil.Connect(t, ns), time.Hour)
	src := newSource()
	src.set("k", `"old"`)
	src.gate = make(chan struct{})
	a := newCache(t, ns, "gw-a", testCacheConfig(ModeKVLocal))
	b := newCache(t, ns, "gw-b", testCacheConfig(ModeKVLocal))
	done := make(chan Result)
	go func() {
		res, _ := a.Get(context.Background(), "k", src.loader("k"))
		done <- res
	}()
	testutil.Eventually(t, 5*time.Second, func() error {
		if src.loads.Load() == 0 {
			return errors.New("load not started")
		}
		return nil
	})
	// The loader read "old" (it is blocked after reading... it reads on
	// release, so set the new value only after it returns): model the
	// race as the write landing while the load is in flight.
	if err := b.Invalidate(t.Context(), "k"); err != nil {
		t.Fatalf("Invalidate() = %v", err)
	}
	close(src.gate)
	<-done
	if _, err := kv.Get(t.Context(), "k"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("KV after a fill that raced an invalidation: err = %v, want the key absent", err)
	}
	if st := a.Stats(); st.FillsDropped != 1 {
		t.Errorf("stats = %+v, want 1 dropped fill", st)
	}
}

// TestNoBucketDegrades: with no bucket (cachesvc not started) reads go to
// the database, counted as KV errors, and start caching once it exists.
func TestNoBucketDegrades(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	src := newSource()
	src.set("k", `1`)
	c := newCache(t, ns, "gw", testCacheConfig(ModeKVLocal))
	for range 3 {
		if res := get(t, c, src, "k"); res.Source != SourceDB || string(res.Value) != "1" {
			t.Errorf("Get without a bucket = %+v, want the database's value", res)
		}
	}
	if st := c.Stats(); st.KV.Errors != 3 || st.Loads != 3 {
		t.Errorf("stats without a bucket = %+v, want 3 KV errors and 3 loads", st)
	}
	provision(t, testutil.Connect(t, ns), time.Hour)
	warmLocal(t, c, src, "k")
}
