package balancer

import (
	"errors"
	"flag"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/envflag"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string // every line of the joined error; nil for valid
	}{
		{name: "default", modify: func(*Config) {}},
		{name: "https and path prefix", modify: func(c *Config) {
			c.Backends = []string{"https://gw.example:8443", "http://10.0.0.2:5000/api/"}
		}},
		{name: "listener instead of addr", modify: func(c *Config) {
			c.Addr = ""
			c.Listener = fakeListener{}
		}},
		{name: "admin listener instead of admin addr", modify: func(c *Config) {
			c.AdminAddr = ""
			c.AdminListener = fakeListener{}
		}},
		{name: "no admin addr", modify: func(c *Config) { c.AdminAddr = "" },
			want: []string{`balancer: --admin-addr: "" is not host:port`}},
		{name: "admin addr without port", modify: func(c *Config) { c.AdminAddr = "127.0.0.1" },
			want: []string{`balancer: --admin-addr: "127.0.0.1" is not host:port`}},
		{name: "admin hosts without port", modify: func(c *Config) { c.AdminHosts = []string{"localhost:18001", "ops.example"} },
			want: []string{`balancer: --admin-hosts: "ops.example" is not host:port`}},
		{name: "short JWT secret", modify: func(c *Config) {
			c.JWT = auth.Keys{Secret: []byte("short"), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
		}, want: []string{"balancer: SCALELAB_JWT_SECRET must be at least 32 bytes, got 5"}},
		{name: "zero response header timeout means no limit", modify: func(c *Config) {
			c.ResponseHeaderTimeout = 0
		}},
		{name: "not a URL", modify: func(c *Config) { c.Backends = []string{"foo"} },
			want: []string{`balancer: --backends: "foo" is not an http(s) URL`}},
		{name: "wrong scheme", modify: func(c *Config) { c.Backends = []string{"ftp://127.0.0.1:5000"} },
			want: []string{`balancer: --backends: "ftp://127.0.0.1:5000" is not an http(s) URL`}},
		{name: "no host", modify: func(c *Config) { c.Backends = []string{"http://"} },
			want: []string{`balancer: --backends: "http://" is not an http(s) URL`}},
		{name: "host without scheme", modify: func(c *Config) { c.Backends = []string{"127.0.0.1:5000"} },
			want: []string{`balancer: --backends: "127.0.0.1:5000" is not an http(s) URL`}},
		{name: "query", modify: func(c *Config) { c.Backends = []string{"http://h:1/?a=1"} },
			want: []string{`balancer: --backends: "http://h:1/?a=1": a gateway URL has no query or fragment`}},
		{name: "user info", modify: func(c *Config) { c.Backends = []string{"http://u:p@h:1"} },
			want: []string{`balancer: --backends: "http://u:p@h:1": a gateway URL has no user info`}},
		{name: "duplicate", modify: func(c *Config) { c.Backends = []string{"http://h:1", "http://h:1"} },
			want: []string{`balancer: --backends: "http://h:1" is listed twice`}},
		{name: "empty list", modify: func(c *Config) { c.Backends = nil },
			want: []string{"balancer: --backends: at least one gateway URL is required (or --discover)"}},
		{name: "discover instead of backends", modify: func(c *Config) {
			c.Backends = nil
			c.Discover = "gateway:5000"
		}},
		{name: "discover an IPv6 literal", modify: func(c *Config) {
			c.Backends = nil
			c.Discover = "[::1]:5000"
		}},
		{name: "discover and backends", modify: func(c *Config) { c.Discover = "gateway:5000" },
			want: []string{"balancer: --backends and --discover are exclusive: set one"}},
		{name: "discover without port", modify: func(c *Config) {
			c.Backends = nil
			c.Discover = "gateway"
		}, want: []string{`balancer: --discover: "gateway" is not host:port`}},
		{name: "discover bad port", modify: func(c *Config) {
			c.Backends = nil
			c.Discover = "gateway:http"
			c.DiscoverInterval = 0
		}, want: []string{
			`balancer: --discover: "gateway:http": port "http" is not a number between 1 and 65535`,
			"balancer: --discover-interval: must be positive, got 0s",
		}},
		{name: "every policy", modify: func(c *Config) { c.Policy = PolicyPowerOfTwo }},
		{name: "unknown policy", modify: func(c *Config) { c.Policy = "random" },
			want: []string{`balancer: --policy: "random" is not one of round_robin, weighted_round_robin, least_connections, p2c`}},
		{name: "weights", modify: func(c *Config) {
			c.Policy = PolicyWeightedRoundRobin
			c.Weights = []int{3, 1}
		}},
		{name: "bad weights", modify: func(c *Config) {
			c.Weights = []int{0, 101, 1}
		}, want: []string{
			`balancer: --weights: only weighted_round_robin uses weights, --policy is "round_robin"`,
			"balancer: --weights: 3 weights for 2 --backends",
			"balancer: --weights: 0 is not between 1 and 100",
			"balancer: --weights: 101 is not between 1 and 100",
		}},
		{name: "weights from the environment that do not parse", modify: func(c *Config) {
			c.envErr = errors.New(`SCALELAB_WEIGHTS="x": "x" is not an integer`)
		}, want: []string{`balancer: SCALELAB_WEIGHTS="x": "x" is not an integer`}},
		{name: "active checks off need no settings", modify: func(c *Config) {
			c.HealthInterval = 0
			c.HealthTimeout = 0
			c.HealthyThreshold = 0
			c.HealthPath = ""
		}},
		{name: "bad health settings", modify: func(c *Config) {
			c.HealthPath = "healthz"
			c.HealthTimeout = 0
			c.HealthyThreshold = 0
			c.UnhealthyThreshold = -1
		}, want: []string{
			`balancer: --health-path: must start with /, got "healthz"`,
			"balancer: --health-timeout: must be positive, got 0s",
			"balancer: --healthy-threshold: must be at least 1, got 0",
			"balancer: --unhealthy-threshold: must be at least 1, got -1",
		}},
		{name: "negative health interval", modify: func(c *Config) { c.HealthInterval = -time.Second },
			want: []string{"balancer: --health-interval: must not be negative, got -1s"}},
		{name: "passive ejection off needs no back-off", modify: func(c *Config) {
			c.EjectAfter = 0
			c.EjectBackoff = 0
		}},
		{name: "bad ejection settings", modify: func(c *Config) {
			c.EjectBackoff = 0
			c.EjectBackoffMax = -1
		}, want: []string{
			"balancer: --eject-backoff: must be positive, got 0s",
			"balancer: --eject-backoff-max: must be at least --eject-backoff (0s), got -1ns",
		}},
		{name: "negative event loops", modify: func(c *Config) { c.EventLoops = -1 },
			want: []string{"balancer: --event-loops: must be between 0 and 1024, got -1"}},
		{name: "bad retry settings", modify: func(c *Config) {
			c.MaxRetries = 6
			c.RetryBudgetPercent = 101
			c.RetryBudgetMin = -1
		}, want: []string{
			"balancer: --max-retries: must be between 0 and 5, got 6",
			"balancer: --retry-budget: must be a percentage between 0 and 100, got 101",
			"balancer: --retry-budget-min: must not be negative, got -1",
		}},
		{name: "no addr", modify: func(c *Config) { c.Addr = "" },
			want: []string{"balancer: --addr is required"}},
		{name: "negative dial timeout", modify: func(c *Config) { c.DialTimeout = -time.Second },
			want: []string{"balancer: --dial-timeout: must be positive, got -1s"}},
		{name: "zero dial timeout", modify: func(c *Config) { c.DialTimeout = 0 },
			want: []string{"balancer: --dial-timeout: must be positive, got 0s"}},
		{name: "negative response header timeout", modify: func(c *Config) { c.ResponseHeaderTimeout = -time.Second },
			want: []string{"balancer: --response-header-timeout: must not be negative, got -1s"}},
		{name: "negative idle timeout", modify: func(c *Config) { c.IdleConnTimeout = -time.Second },
			want: []string{"balancer: IdleConnTimeout: must not be negative, got -1s"}},
		{name: "zero idle conns", modify: func(c *Config) { c.MaxIdleConnsPerHost = 0 },
			want: []string{"balancer: --max-idle-conns-per-host: must be at least 1, got 0"}},
		{name: "zero shutdown timeout", modify: func(c *Config) { c.ShutdownTimeout = 0 },
			want: []string{"balancer: --shutdown-timeout: must be positive, got 0s"}},
		{name: "every problem at once", modify: func(c *Config) {
			c.Backends = []string{"foo", "http://ok:1", "mailto:x@y"}
			c.DialTimeout = -1
			c.ShutdownTimeout = -time.Second
		}, want: []string{
			`balancer: --backends: "foo" is not an http(s) URL`,
			`balancer: --backends: "mailto:x@y" is not an http(s) URL`,
			"balancer: --dial-timeout: must be positive, got -1ns",
			"balancer: --shutdown-timeout: must be positive, got -1s",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tt.modify(&cfg)
			err := cfg.Validate()
			var got []string
			if err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRegisterFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(*Config)
	}{
		{name: "defaults", want: func(*Config) {}},
		{
			name: "environment",
			env: map[string]string{
				"SCALELAB_ADDR":                    ":9000",
				"SCALELAB_BACKENDS":                " http://a:1, http://b:2 ,",
				"SCALELAB_WEIGHTS":                 "3, 1",
				"SCALELAB_POLICY":                  "weighted_round_robin",
				"SCALELAB_DIAL_TIMEOUT":            "500ms",
				"SCALELAB_RESPONSE_HEADER_TIMEOUT": "1m",
				"SCALELAB_MAX_IDLE_CONNS_PER_HOST": "64",
				"SCALELAB_HEALTH_PATH":             "/readyz",
				"SCALELAB_HEALTH_INTERVAL":         "5s",
				"SCALELAB_HEALTH_TIMEOUT":          "2s",
				"SCALELAB_HEALTHY_THRESHOLD":       "1",
				"SCALELAB_UNHEALTHY_THRESHOLD":     "4",
				"SCALELAB_EJECT_AFTER":             "7",
				"SCALELAB_EJECT_BACKOFF":           "1s",
				"SCALELAB_EJECT_BACKOFF_MAX":       "10s",
				"SCALELAB_MAX_RETRIES":             "1",
				"SCALELAB_RETRY_BUDGET":            "10",
				"SCALELAB_RETRY_BUDGET_MIN":        "3",
				"SCALELAB_ADMIN":                   "false",
				"SCALELAB_ADMIN_ADDR":              "127.0.0.1:9001",
				"SCALELAB_JWT_SECRET":              "0123456789abcdef0123456789abcdef",
				"SCALELAB_JWT_ISSUER":              "ops",
				"SCALELAB_SHUTDOWN_TIMEOUT":        "3s",
			},
			want: func(c *Config) {
				c.Addr = ":9000"
				c.Backends = []string{"http://a:1", "http://b:2"}
				c.Weights = []int{3, 1}
				c.Policy = PolicyWeightedRoundRobin
				c.DialTimeout = 500 * time.Millisecond
				c.ResponseHeaderTimeout = time.Minute
				c.MaxIdleConnsPerHost = 64
				c.HealthPath = "/readyz"
				c.HealthInterval = 5 * time.Second
				c.HealthTimeout = 2 * time.Second
				c.HealthyThreshold = 1
				c.UnhealthyThreshold = 4
				c.EjectAfter = 7
				c.EjectBackoff = time.Second
				c.EjectBackoffMax = 10 * time.Second
				c.MaxRetries = 1
				c.RetryBudgetPercent = 10
				c.RetryBudgetMin = 3
				c.Admin = false
				c.AdminAddr = "127.0.0.1:9001"
				c.JWT.Secret = []byte("0123456789abcdef0123456789abcdef")
				c.JWT.Issuer = "ops"
				c.ShutdownTimeout = 3 * time.Second
			},
		},
		{
			name: "flags override environment",
			env:  map[string]string{"SCALELAB_ADDR": ":9000", "SCALELAB_BACKENDS": "http://a:1,http://b:2", "SCALELAB_POLICY": "p2c"},
			args: []string{"--addr", ":9001", "--backends", "http://c:3", "--dial-timeout", "1s",
				"--policy", "least_connections", "--weights", "2", "--admin=false", "--admin-addr", "[::1]:9002",
				"--admin-hosts", "127.0.0.1:19002, localhost:19002"},
			want: func(c *Config) {
				c.Addr = ":9001"
				c.Backends = []string{"http://c:3"}
				c.DialTimeout = time.Second
				c.Policy = PolicyLeastConnections
				c.Weights = []int{2}
				c.Admin = false
				c.AdminAddr = "[::1]:9002"
				c.AdminHosts = []string{"127.0.0.1:19002", "localhost:19002"}
			},
		},
		{
			name: "discover from the environment clears the default backends",
			env:  map[string]string{"SCALELAB_DISCOVER": "gateway:5000", "SCALELAB_DISCOVER_INTERVAL": "1s"},
			want: func(c *Config) {
				c.Backends = nil
				c.Discover = "gateway:5000"
				c.DiscoverInterval = time.Second
			},
		},
		{
			name: "discover flag clears the default backends",
			args: []string{"--discover", "gateway:5000"},
			want: func(c *Config) {
				c.Backends = nil
				c.Discover = "gateway:5000"
			},
		},
		{
			// Both set: kept, so that Validate reports the conflict.
			name: "discover does not clear backends that were set",
			env:  map[string]string{"SCALELAB_BACKENDS": "http://a:1"},
			args: []string{"--discover", "gateway:5000"},
			want: func(c *Config) {
				c.Backends = []string{"http://a:1"}
				c.Discover = "gateway:5000"
			},
		},
		{
			name: "backends flag after discover",
			args: []string{"--discover", "gateway:5000", "--backends", "http://a:1"},
			want: func(c *Config) {
				c.Backends = []string{"http://a:1"}
				c.Discover = "gateway:5000"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			s := envflag.New(fs, func(k string) string { return tt.env[k] })
			got := DefaultConfig()
			got.RegisterFlags(s)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse(%q) = %v", tt.args, err)
			}
			if err := s.Err(); err != nil {
				t.Fatalf("Err() = %v, want nil", err)
			}
			want := DefaultConfig()
			// The JWT keys come from the same environment as the gateways'.
			want.JWT = auth.Keys{Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Listener"),
				cmpopts.IgnoreUnexported(Config{}, auth.Keys{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRegisterFlagsBothSources checks that --backends and --discover
// together are refused by Validate, whichever source set each.
func TestRegisterFlagsBothSources(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
	env := map[string]string{"SCALELAB_DISCOVER": "gateway:5000"}
	cfg := DefaultConfig()
	cfg.RegisterFlags(envflag.New(fs, func(k string) string { return env[k] }))
	if err := fs.Parse([]string{"--backends", "http://a:1"}); err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	want := "balancer: --backends and --discover are exclusive: set one"
	if err := cfg.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
}

func TestRegisterFlagsBadWeights(t *testing.T) {
	t.Parallel()
	t.Run("environment", func(t *testing.T) {
		t.Parallel()
		fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
		env := map[string]string{"SCALELAB_WEIGHTS": "3,x", "SCALELAB_POLICY": "weighted_round_robin"}
		cfg := DefaultConfig()
		cfg.RegisterFlags(envflag.New(fs, func(k string) string { return env[k] }))
		want := `balancer: SCALELAB_WEIGHTS="3,x": "x" is not an integer`
		if err := cfg.Validate(); err == nil || err.Error() != want {
			t.Errorf("Validate() = %v, want %q", err, want)
		}
	})
	t.Run("flag", func(t *testing.T) {
		t.Parallel()
		fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg := DefaultConfig()
		cfg.RegisterFlags(envflag.New(fs, func(string) string { return "" }))
		err := fs.Parse([]string{"--weights", "1,two"})
		if err == nil || !strings.Contains(err.Error(), `"two" is not an integer`) {
			t.Errorf("Parse(--weights 1,two) = %v, want an error naming \"two\"", err)
		}
	})
}

func TestRegisterFlagsBadEnvironment(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("balancer", flag.ContinueOnError)
	env := map[string]string{"SCALELAB_DIAL_TIMEOUT": "soon", "SCALELAB_MAX_IDLE_CONNS_PER_HOST": "many"}
	s := envflag.New(fs, func(k string) string { return env[k] })
	cfg := DefaultConfig()
	cfg.RegisterFlags(s)
	err := s.Err()
	if err == nil {
		t.Fatal("Err() = nil, want the two bad values")
	}
	for _, want := range []string{`SCALELAB_DIAL_TIMEOUT="soon"`, `SCALELAB_MAX_IDLE_CONNS_PER_HOST="many"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %q, want it to mention %q", err, want)
		}
	}
}

func TestSplitList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want []string
	}{
		{in: "", want: nil},
		{in: "http://a:1", want: []string{"http://a:1"}},
		{in: " http://a:1 ,, http://b:2,", want: []string{"http://a:1", "http://b:2"}},
	}
	for _, tt := range tests {
		if got := splitList(tt.in); !cmp.Equal(got, tt.want) {
			t.Errorf("splitList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// fakeListener stands in for a bound listener in Validate tests, which never
// use it.
type fakeListener struct{ net.Listener }
