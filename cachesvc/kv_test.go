package cachesvc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/testutil"
)

// oldBucketConfig is the bucket as cachesvc provisioned it before it set
// LimitMarkerTTL.
func oldBucketConfig(cfg Config) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      cache.Bucket,
		Description: "scalelab shared cache (cache-aside)",
		History:     1,
		TTL:         cfg.TTL,
		MaxBytes:    int64(cfg.MaxMB) << 20,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}
}

// newGatewayCache starts an internal/cache client for the process id, as
// a gateway does, and closes it when the test ends.
func newGatewayCache(t *testing.T, nc *nats.Conn, id string, mode cache.Mode) *cache.Cache {
	t.Helper()
	cfg := cache.DefaultConfig()
	cfg.Mode = mode
	c, err := cache.New(nc, id, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("cache.New(%s) = %v", id, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close(%s) = %v", id, err)
		}
	})
	return c
}

// getValue is GET /cache/{key}'s value.
func (in *instance) getValue(t *testing.T, key string) string {
	t.Helper()
	var v value
	in.doJSON(t, "GET", "/cache/"+key, nil, http.StatusOK, &v)
	return string(v.Value)
}

func TestRunUpgradesOldBucket(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	js := newJetStream(t, nc)
	cfg := testConfig()
	kv, err := js.CreateKeyValue(t.Context(), oldBucketConfig(cfg))
	if err != nil {
		t.Fatalf("CreateKeyValue(old config) = %v", err)
	}
	if _, err := kv.Put(t.Context(), "old", []byte(`"kept"`)); err != nil {
		t.Fatalf("kv.Put(old) = %v", err)
	}
	if _, err := kv.Create(t.Context(), "ttl.before", []byte(`1`), jetstream.KeyTTL(time.Second)); err == nil {
		t.Fatal("kv.Create() with a per-key TTL on the old bucket = nil, want an error (test setup)")
	}

	in := startCache(t, nc, cfg)

	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatalf("kv.Status() = %v", err)
	}
	if st.LimitMarkerTTL() != limitMarkerTTL || st.TTL() != cfg.TTL {
		t.Errorf("bucket LimitMarkerTTL, TTL after Run = %v, %v, want %v, %v", st.LimitMarkerTTL(), st.TTL(), limitMarkerTTL, cfg.TTL)
	}
	if got := in.getValue(t, "old"); got != `"kept"` {
		t.Errorf("GET /cache/old after the update = %s, want \"kept\"", got)
	}
	// Per-key TTLs now work, and their expiry shows through the API.
	if _, err := kv.Create(t.Context(), "short", []byte(`"brief"`), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatalf("kv.Create() with a per-key TTL after Run = %v, want nil", err)
	}
	if got := in.getValue(t, "short"); got != `"brief"` {
		t.Errorf("GET /cache/short = %s, want \"brief\"", got)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := in.getValue(t, "short"); got != "null" {
			return errors.New("GET /cache/short = " + got + ", want null after its 1s TTL")
		}
		return nil
	})
}

// TestRunReadsThroughLeader: cachesvc turns the bucket's direct gets off,
// also on a bucket made with them on (nats.go's default, and every
// CreateOrUpdateKeyValue's), so that no lagging replica answers a read
// with a value a write has just deleted.
func TestRunReadsThroughLeader(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	js := newJetStream(t, nc)
	cfg := testConfig()
	if _, err := js.CreateKeyValue(t.Context(), oldBucketConfig(cfg)); err != nil {
		t.Fatalf("CreateKeyValue(old config) = %v", err)
	}
	in := startCache(t, nc, cfg)
	s, err := js.Stream(t.Context(), "KV_"+cache.Bucket)
	if err != nil {
		t.Fatalf("Stream(KV_%s) = %v", cache.Bucket, err)
	}
	if s.CachedInfo().Config.AllowDirect {
		t.Errorf("bucket %s has direct gets on after Run, want off", cache.Bucket)
	}
	var stored map[string]string
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":1}`), http.StatusOK, &stored)
	if got := in.getValue(t, "k"); got != "1" {
		t.Errorf("GET /cache/k = %s, want 1", got)
	}
	// A gateway's cache client reads it too, through the leader.
	c := newGatewayCache(t, nc, "gw1", cache.ModeKV)
	res, err := c.Get(t.Context(), "k", func(context.Context) ([]byte, error) { return []byte("2"), nil })
	if err != nil || string(res.Value) != "1" {
		t.Errorf("cache.Get(k) = %s, %v, want 1 from the bucket", res.Value, err)
	}
}

func TestRunKeepsBucketItCannotUpdate(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	js := newJetStream(t, nc)
	cfg := testConfig()
	// The storage type cannot change in place, so the update is refused.
	old := oldBucketConfig(cfg)
	old.Storage = jetstream.MemoryStorage
	kv, err := js.CreateKeyValue(t.Context(), old)
	if err != nil {
		t.Fatalf("CreateKeyValue(memory) = %v", err)
	}

	log, logs := captureLog(t)
	in := startCacheWithLog(t, nc, cfg, log)

	const warning = "cache bucket exists but its settings cannot be updated: keeping it as it is"
	if !logs.has(slog.LevelWarn, warning) {
		t.Errorf("log has no warning %q", warning)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatalf("kv.Status() = %v", err)
	}
	if got := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Storage; got != jetstream.MemoryStorage {
		t.Errorf("bucket storage after Run = %v, want memory (kept)", got)
	}
	var stored map[string]string
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":1}`), http.StatusOK, &stored)
	if got := in.getValue(t, "k"); got != "1" {
		t.Errorf("GET /cache/k on the kept bucket = %s, want 1", got)
	}
}

func TestProvisionRefusedWithoutBucket(t *testing.T) {
	t.Parallel()
	js := newJetStream(t, startNATS(t))
	cfg := testConfig()
	cfg.Replicas = 3 // a single server cannot
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if kv, err := provision(ctx, js, cfg, testLogger(t)); err == nil {
		t.Errorf("provision() with 3 replicas on one server = %v, nil, want an error to retry", kv)
	}
	if _, err := js.KeyValue(ctx, cache.Bucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("js.KeyValue() after the refusal = %v, want %v", err, jetstream.ErrBucketNotFound)
	}
}

func TestTTLExpiry(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	cfg := testConfig()
	cfg.TTL = time.Second
	in := startCache(t, nc, cfg)
	kv, err := newJetStream(t, nc).KeyValue(t.Context(), cache.Bucket)
	if err != nil {
		t.Fatalf("js.KeyValue() = %v", err)
	}
	w, err := kv.Watch(t.Context(), "short", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatalf("kv.Watch(short) = %v", err)
	}
	t.Cleanup(func() { _ = w.Stop() })

	start := time.Now()
	var stored map[string]string
	in.doJSON(t, "POST", "/cache/short", []byte(`{"value":"lived"}`), http.StatusOK, &stored)
	if got := in.getValue(t, "short"); got != `"lived"` {
		t.Fatalf("GET /cache/short right after POST = %s, want \"lived\"", got)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := in.getValue(t, "short"); got != "null" {
			return errors.New("GET /cache/short = " + got + ", want null")
		}
		return nil
	})
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Errorf("entry expired after %v, want about the 1s TTL", elapsed)
	}

	// Watchers (the gateways' near-caches) see the expiry as a marker.
	ops := []jetstream.KeyValueOp{}
	timeout := time.After(10 * time.Second)
	for len(ops) < 2 {
		select {
		case e := <-w.Updates():
			if e != nil {
				ops = append(ops, e.Operation())
			}
		case <-timeout:
			t.Fatalf("watch of short saw %v in 10s, want a put then a purge marker", ops)
		}
	}
	if ops[0] != jetstream.KeyValuePut || ops[1] != jetstream.KeyValuePurge {
		t.Errorf("watch of short saw %v, want [KeyValuePutOp KeyValuePurgeOp]", ops)
	}
}

// TestGatewayCacheBeforeBucket runs a gateway's cache client before
// cachesvc has provisioned the bucket: it reads the database meanwhile,
// binds once the bucket exists, and shares it with the HTTP API both ways.
func TestGatewayCacheBeforeBucket(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	gw := newGatewayCache(t, testutil.Connect(t, ns), "gw-early", cache.ModeKV)
	fromDB := func(context.Context) ([]byte, error) { return []byte(`{"from":"db"}`), nil }
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	res, err := gw.Get(ctx, "early", fromDB)
	if err != nil || res.Source != cache.SourceDB {
		t.Errorf("Get(early) before the bucket = %+v, %v, want from %s, nil", res, err, cache.SourceDB)
	}

	in := startCache(t, testutil.Connect(t, ns), testConfig())
	var stored map[string]string
	in.doJSON(t, "POST", "/cache/early", []byte(`{"value":{"from":"http"}}`), http.StatusOK, &stored)
	res, err = gw.Get(ctx, "early", fromDB)
	if err != nil || res.Source != cache.SourceKV || string(res.Value) != `{"from":"http"}` {
		t.Errorf("Get(early) after POST = %+v (%s), %v, want {\"from\":\"http\"} from %s", res, res.Value, err, cache.SourceKV)
	}

	res, err = gw.Get(ctx, "filled", fromDB)
	if err != nil || res.Source != cache.SourceDB {
		t.Fatalf("Get(filled) = %+v, %v, want from %s", res, err, cache.SourceDB)
	}
	if got := in.getValue(t, "filled"); got != `{"from":"db"}` {
		t.Errorf("GET /cache/filled after the gateway filled it = %s, want {\"from\":\"db\"}", got)
	}
	// The fill carries its own TTL: the bucket allows per-key TTLs.
	stream, err := newJetStream(t, testutil.Connect(t, ns)).Stream(ctx, "KV_"+cache.Bucket)
	if err != nil {
		t.Fatalf("js.Stream() = %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+cache.Bucket+".filled")
	if err != nil {
		t.Fatalf("GetLastMsgForSubject(filled) = %v", err)
	}
	if msg.Header.Get(jetstream.MsgTTLHeader) == "" {
		t.Errorf("filled entry headers = %v, want a %s", msg.Header, jetstream.MsgTTLHeader)
	}
}
