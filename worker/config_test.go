package worker_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/worker"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	valid := func() worker.Config {
		cfg := worker.DefaultConfig()
		cfg.ID = "w1"
		return cfg
	}
	tests := []struct {
		name   string
		modify func(*worker.Config)
		want   []string // flags the error must name; none means valid
	}{
		{name: "defaults with id", modify: func(*worker.Config) {}},
		{name: "smallest accepted values", modify: func(c *worker.Config) {
			c.Concurrency, c.AckWait, c.MaxAttempts, c.TaskTimeout = 1, time.Second, 1, time.Nanosecond
			c.RetryDelay, c.ReportDuration, c.ShutdownTimeout, c.Provision.Replicas = 0, 0, 0, 1
		}},
		{name: "largest bounded values", modify: func(c *worker.Config) {
			c.Concurrency, c.Provision.Replicas = 1024, 5
		}},
		{name: "default config has no id", modify: func(c *worker.Config) { c.ID = "" }, want: []string{"--id"}},
		{name: "zero concurrency", modify: func(c *worker.Config) { c.Concurrency = 0 }, want: []string{"--concurrency"}},
		{name: "too much concurrency", modify: func(c *worker.Config) { c.Concurrency = 1025 }, want: []string{"--concurrency"}},
		{name: "short ack wait", modify: func(c *worker.Config) { c.AckWait = 999 * time.Millisecond }, want: []string{"--ack-wait"}},
		{name: "zero max attempts", modify: func(c *worker.Config) { c.MaxAttempts = 0 }, want: []string{"--max-attempts"}},
		{name: "zero task timeout", modify: func(c *worker.Config) { c.TaskTimeout = 0 }, want: []string{"--task-timeout"}},
		{name: "negative retry delay", modify: func(c *worker.Config) { c.RetryDelay = -time.Millisecond }, want: []string{"--retry-delay"}},
		{name: "negative report duration", modify: func(c *worker.Config) { c.ReportDuration = -1 }, want: []string{"--report-duration"}},
		{name: "negative shutdown timeout", modify: func(c *worker.Config) { c.ShutdownTimeout = -1 }, want: []string{"--shutdown-timeout"}},
		{name: "zero replicas", modify: func(c *worker.Config) { c.Provision.Replicas = 0 }, want: []string{"--replicas"}},
		{name: "one queue", modify: func(c *worker.Config) { c.Queues = []worker.Queue{{Name: "emails", Weight: 1}} }},
		{name: "no queues is the default", modify: func(c *worker.Config) { c.Queues = nil }},
		{name: "bad queue name", modify: func(c *worker.Config) { c.Queues = []worker.Queue{{Name: "a.b", Weight: 1}} }, want: []string{"--queues"}},
		{name: "zero weight", modify: func(c *worker.Config) { c.Queues = []worker.Queue{{Name: "a", Weight: 0}} }, want: []string{"--queues"}},
		{name: "queue twice", modify: func(c *worker.Config) {
			c.Queues = []worker.Queue{{Name: "a", Weight: 1}, {Name: "a", Weight: 2}}
		}, want: []string{"--queues"}},
		{name: "too many replicas", modify: func(c *worker.Config) { c.Provision.Replicas = 6 }, want: []string{"--replicas"}},
		{
			name: "everything wrong at once",
			modify: func(c *worker.Config) {
				*c = worker.Config{
					RetryDelay: -1, ReportDuration: -1, ShutdownTimeout: -1,
				}
			},
			want: []string{
				"--id", "--concurrency", "--ack-wait", "--max-attempts", "--task-timeout",
				"--retry-delay", "--report-duration", "--shutdown-timeout", "--max-task-bytes", "--replicas",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid()
			tt.modify(&cfg)
			err := cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %v", tt.want)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("Validate() = %q: %d problems, want %d (%v)", err, len(lines), len(tt.want), tt.want)
			}
			for _, flag := range tt.want {
				found := false
				for _, l := range lines {
					found = found || (strings.HasPrefix(l, "worker: ") && strings.Contains(l, flag+" "))
				}
				if !found {
					t.Errorf("Validate() = %q, want a line \"worker: %s ...\"", err, flag)
				}
			}
		})
	}
}

func TestAttemptsByType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     string
		want    map[string]int
		wantErr bool
	}{
		{"flag", []string{"--max-attempts-by-type", "report=3,sleep=10"}, "", map[string]int{"report": 3, "sleep": 10}, false},
		{"env", nil, "noop=2", map[string]int{"noop": 2}, false},
		{"flag beats env", []string{"--max-attempts-by-type", "report=1"}, "noop=2", map[string]int{"report": 1}, false},
		{"bad flag", []string{"--max-attempts-by-type", "report"}, "", nil, true},
		{"bad env", nil, "report=x", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("worker", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			s := envflag.New(fs, func(k string) string {
				if k == "SCALELAB_MAX_ATTEMPTS_BY_TYPE" {
					return tt.env
				}
				return ""
			})
			cfg := worker.DefaultConfig()
			cfg.RegisterFlags(s)
			err := errors.Join(fs.Parse(tt.args), s.Err())
			if (err != nil) != tt.wantErr {
				t.Fatalf("parse = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr {
				if diff := cmp.Diff(tt.want, cfg.AttemptsByType); diff != "" {
					t.Errorf("AttemptsByType mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestQueuesFlag(t *testing.T) {
	t.Parallel()
	weighted := []worker.Queue{{Name: "critical", Weight: 6}, {Name: "default", Weight: 3}, {Name: "low", Weight: 1}}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		want       []worker.Queue
		wantStrict bool
		wantErr    string
	}{
		{name: "default", want: weighted},
		{name: "strict by syntax", args: []string{"--queues", "critical,default,low"},
			want: []worker.Queue{{"critical", 1}, {"default", 1}, {"low", 1}}, wantStrict: true},
		{name: "weights", args: []string{"--queues", "a=3, b=1"}, want: []worker.Queue{{"a", 3}, {"b", 1}}},
		{name: "weights made strict", args: []string{"--queues", "a=3,b=1", "--strict-priority"},
			want: []worker.Queue{{"a", 3}, {"b", 1}}, wantStrict: true},
		{name: "env", env: map[string]string{"SCALELAB_QUEUES": "emails", "SCALELAB_STRICT_PRIORITY": "true"},
			want: []worker.Queue{{"emails", 1}}, wantStrict: true},
		{name: "mixed syntax", args: []string{"--queues", "a=3,b"}, wantErr: "every queue a weight"},
		{name: "zero weight", args: []string{"--queues", "a=0"}, wantErr: "at least 1"},
		{name: "bad weight", args: []string{"--queues", "a=x"}, wantErr: "whole number"},
		{name: "bad name", args: []string{"--queues", "a b"}, wantErr: "letters, digits"},
		{name: "empty", args: []string{"--queues", ""}, wantErr: "letters, digits"},
		{name: "twice", args: []string{"--queues", "a,a"}, wantErr: "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := flag.NewFlagSet("worker", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			s := envflag.New(fs, func(k string) string { return tt.env[k] })
			cfg := worker.DefaultConfig()
			cfg.RegisterFlags(s)
			err := errors.Join(fs.Parse(tt.args), s.Err())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse %v = %v, want an error containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse %v = %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.want, cfg.Queues); diff != "" {
				t.Errorf("Queues mismatch (-want +got):\n%s", diff)
			}
			if cfg.StrictPriority != tt.wantStrict {
				t.Errorf("StrictPriority = %v, want %v", cfg.StrictPriority, tt.wantStrict)
			}
		})
	}
}
