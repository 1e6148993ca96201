package cachesvc

import (
	"context"
	"flag"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/envflag"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	with := func(edit func(*Config)) Config {
		c := DefaultConfig()
		c.JWT = testKeys
		edit(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error, one per problem; none means valid
	}{
		{"default with a secret", with(func(*Config) {}), nil},
		{"no JWT secret: refuses to start", DefaultConfig(), []string{"SCALELAB_JWT_SECRET is required"}},
		{"short JWT secret", with(func(c *Config) { c.JWT.Secret = []byte("short") }), []string{"SCALELAB_JWT_SECRET must be at least"}},
		{"listener without addr", with(func(c *Config) { c.Addr = ""; c.Listener = ln }), nil},
		{"ttl 1s", with(func(c *Config) { c.TTL = time.Second }), nil},
		{"replicas 5", with(func(c *Config) { c.Replicas = 5 }), nil},
		{"zero shutdown timeout", with(func(c *Config) { c.ShutdownTimeout = 0 }), nil},
		{"empty addr", with(func(c *Config) { c.Addr = "" }), []string{"--addr"}},
		{"ttl under 1s", with(func(c *Config) { c.TTL = 999 * time.Millisecond }), []string{"--cache-ttl"}},
		{"zero ttl", with(func(c *Config) { c.TTL = 0 }), []string{"--cache-ttl"}},
		{"negative ttl", with(func(c *Config) { c.TTL = -time.Minute }), []string{"--cache-ttl"}},
		{"zero max mb", with(func(c *Config) { c.MaxMB = 0 }), []string{"--cache-max-mb"}},
		{"zero replicas", with(func(c *Config) { c.Replicas = 0 }), []string{"--replicas"}},
		{"six replicas", with(func(c *Config) { c.Replicas = 6 }), []string{"--replicas"}},
		{"negative shutdown timeout", with(func(c *Config) { c.ShutdownTimeout = -time.Second }), []string{"--shutdown-timeout"}},
		{"everything wrong", Config{TTL: 0, MaxMB: -1, Replicas: 9, ShutdownTimeout: -1, JWT: testKeys},
			[]string{"--addr", "--cache-ttl", "--cache-max-mb", "--replicas", "--shutdown-timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors naming %v", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Validate() = %q, want %d problems", err, len(tt.want))
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), "cachesvc: "+w) {
					t.Errorf("Validate() = %q, want it to name %s", err, w)
				}
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{"SCALELAB_CACHE_TTL": "2m", "SCALELAB_CACHE_MAX_MB": "8", "SCALELAB_ADDR": ":1",
		"SCALELAB_JWT_SECRET": string(testKeys.Secret), "SCALELAB_JWT_AUDIENCE": "cache-api"}
	fs := flag.NewFlagSet("cachesvc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := envflag.New(fs, func(k string) string { return env[k] })
	cfg := DefaultConfig()
	cfg.RegisterFlags(s)
	if err := fs.Parse([]string{"--addr=127.0.0.1:9", "--replicas=3"}); err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
	want := DefaultConfig()
	want.Addr = "127.0.0.1:9"
	want.TTL = 2 * time.Minute
	want.MaxMB = 8
	want.Replicas = 3
	want.JWT = testKeys
	want.JWT.Audience = "cache-api"
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b net.Listener) bool { return a == b }), cmpopts.IgnoreUnexported(auth.Keys{})); diff != "" {
		t.Errorf("config after flags and env mismatch (-want +got):\n%s", diff)
	}
}

func TestRunProvisionsBucket(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	cfg := testConfig()
	cfg.MaxMB = 3
	startCache(t, nc, cfg)
	js := newJetStream(t, nc)
	kv, err := js.KeyValue(t.Context(), cache.Bucket)
	if err != nil {
		t.Fatalf("js.KeyValue(%q) = %v", cache.Bucket, err)
	}
	st, err := kv.Status(t.Context())
	if err != nil {
		t.Fatalf("kv.Status() = %v", err)
	}
	if st.TTL() != cfg.TTL || st.History() != 1 || st.LimitMarkerTTL() != limitMarkerTTL {
		t.Errorf("bucket TTL, history, LimitMarkerTTL = %v, %d, %v, want %v, 1, %v", st.TTL(), st.History(), st.LimitMarkerTTL(), cfg.TTL, limitMarkerTTL)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if got, want := info.Config.MaxBytes, int64(3<<20); got != want {
		t.Errorf("bucket max bytes = %d, want %d", got, want)
	}
	if info.Config.Storage != jetstream.FileStorage {
		t.Errorf("bucket storage = %v, want file", info.Config.Storage)
	}
}

func TestRunTwiceSharesBucket(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	a := startCache(t, nc, testConfig())
	b := startCache(t, nc, testConfig())
	var st map[string]string
	a.doJSON(t, "POST", "/cache/shared", []byte(`{"value":"x"}`), 200, &st)
	var v value
	b.doJSON(t, "GET", "/cache/shared", nil, 200, &v)
	wantJSONEqual(t, "GET /cache/shared on the second instance", v.Value, `"x"`)
}

func TestRunPortTaken(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	t.Cleanup(func() { taken.Close() })
	cfg := testConfig()
	cfg.Addr = taken.Addr().String()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = Run(ctx, cfg, nc, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Errorf("Run() on a taken port = %v, want an error naming %s", err, taken.Addr())
	}
}

func TestRunCancelledWhileProvisioning(t *testing.T) {
	t.Parallel()
	// A server without JetStream: provisioning keeps failing.
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
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
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	cfg := testConfig()
	cfg.Listener = ln
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := Run(ctx, cfg, nc, testLogger(t)); err != nil {
		t.Errorf("Run() cancelled while provisioning = %v, want nil", err)
	}
	// Run closed the listener it was given.
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Errorf("listener %s still accepts connections after Run returned", ln.Addr())
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	in := startCache(t, startNATS(t), testConfig())
	if err := in.Stop(); err != nil {
		t.Errorf("Run() after cancel = %v, want nil", err)
	}
	if resp, err := in.http.Get(in.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("GET /healthz after Run returned = %d, want the port closed", resp.StatusCode)
	}
}
