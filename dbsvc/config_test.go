package dbsvc

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/scalelab/scalelab/internal/envflag"
)

func TestConfigFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(*Config)
	}{
		{"defaults", nil, nil, func(*Config) {}},
		{
			"env",
			map[string]string{
				"SCALELAB_ADDR":             ":6000",
				"SCALELAB_DATA":             "/var/lib/scalelab",
				"SCALELAB_SEED_ROWS":        "42",
				"SCALELAB_QUERY_TIMEOUT":    "2s",
				"SCALELAB_SHUTDOWN_TIMEOUT": "1m",
			},
			nil,
			func(c *Config) {
				c.Addr, c.DataDir, c.SeedRows = ":6000", "/var/lib/scalelab", 42
				c.QueryTimeout, c.ShutdownTimeout = 2*time.Second, time.Minute
			},
		},
		{
			"flags override env",
			map[string]string{"SCALELAB_ADDR": ":6000", "SCALELAB_SEED_ROWS": "42"},
			[]string{"--addr", ":7000", "--seed-rows", "7", "--data", "d", "--shutdown-timeout", "3s"},
			func(c *Config) { c.Addr, c.SeedRows, c.DataDir, c.ShutdownTimeout = ":7000", 7, "d", 3*time.Second },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := DefaultConfig()
			fs := flag.NewFlagSet("dbsvc", flag.ContinueOnError)
			s := envflag.New(fs, func(k string) string { return tt.env[k] })
			got.RegisterFlags(s)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatalf("Parse(%q) = %v", tt.args, err)
			}
			if err := s.Err(); err != nil {
				t.Fatalf("Err() = %v", err)
			}
			want := DefaultConfig()
			tt.want(&want)
			if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(Config{}, "Listener", "Queries")); diff != "" {
				t.Errorf("config mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestConfigBadEnv(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("dbsvc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	env := map[string]string{"SCALELAB_SEED_ROWS": "many", "SCALELAB_QUERY_TIMEOUT": "5"}
	s := envflag.New(fs, func(k string) string { return env[k] })
	cfg := DefaultConfig()
	cfg.RegisterFlags(s)
	err := s.Err()
	for _, want := range []string{"SCALELAB_SEED_ROWS", "SCALELAB_QUERY_TIMEOUT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %v, want it to name %s", err, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none: valid
	}{
		{"default", func(*Config) {}, nil},
		{"no seed rows", func(c *Config) { c.SeedRows = 0 }, nil},
		{"negative seed rows", func(c *Config) { c.SeedRows = -1 }, []string{"dbsvc: --seed-rows must be >= 0"}},
		{"too many seed rows", func(c *Config) { c.SeedRows = MaxSeedRows + 1 }, []string{"dbsvc: --seed-rows must be <= 50000000"}},
		{"empty addr", func(c *Config) { c.Addr = "" }, []string{"dbsvc: --addr must not be empty"}},
		{"empty data", func(c *Config) { c.DataDir = "" }, []string{"dbsvc: --data must not be empty"}},
		{"question mark in data", func(c *Config) { c.DataDir = "a?b" }, []string{"dbsvc: --data must not contain '?'"}},
		{"zero query timeout", func(c *Config) { c.QueryTimeout = 0 }, []string{"dbsvc: --query-timeout must be > 0"}},
		{"zero shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, []string{"dbsvc: --shutdown-timeout must be > 0"}},
		{
			"every problem at once",
			func(c *Config) { c.SeedRows, c.DataDir, c.ShutdownTimeout = -5, "", -time.Second },
			[]string{"--seed-rows", "--data", "--shutdown-timeout"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			for _, want := range tt.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %v, want it to contain %q", err, want)
				}
			}
		})
	}
}
