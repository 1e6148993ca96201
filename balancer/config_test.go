package balancer

import (
	"flag"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

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
			want: []string{"balancer: --backends: at least one gateway URL is required"}},
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
				"SCALELAB_DIAL_TIMEOUT":            "500ms",
				"SCALELAB_RESPONSE_HEADER_TIMEOUT": "1m",
				"SCALELAB_MAX_IDLE_CONNS_PER_HOST": "64",
				"SCALELAB_SHUTDOWN_TIMEOUT":        "3s",
			},
			want: func(c *Config) {
				c.Addr = ":9000"
				c.Backends = []string{"http://a:1", "http://b:2"}
				c.DialTimeout = 500 * time.Millisecond
				c.ResponseHeaderTimeout = time.Minute
				c.MaxIdleConnsPerHost = 64
				c.ShutdownTimeout = 3 * time.Second
			},
		},
		{
			name: "flags override environment",
			env:  map[string]string{"SCALELAB_ADDR": ":9000", "SCALELAB_BACKENDS": "http://a:1,http://b:2"},
			args: []string{"--addr", ":9001", "--backends", "http://c:3", "--dial-timeout", "1s"},
			want: func(c *Config) {
				c.Addr = ":9001"
				c.Backends = []string{"http://c:3"}
				c.DialTimeout = time.Second
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
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Listener")); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
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
