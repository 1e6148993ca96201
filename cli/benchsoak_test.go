package cli

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestBenchSoakUsageErrors checks that `bench soak` refuses bad options
// before it starts anything or writes a report.
func TestBenchSoakUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"sample longer than the run", []string{"--duration", "1m", "--sample", "2m"}, "--sample"},
		{"negative rate", []string{"--rate", "-1"}, "--rate"},
		{"warm-up of the whole run", []string{"--warm-up", "1"}, "--warm-up"},
		{"warm-up not a number", []string{"--warm-up", "a fifth"}, "warm-up"},
		{"stray argument", []string{"cache"}, "unexpected arguments"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			args := append([]string{"bench", "soak", "--out", t.TempDir()}, tt.args...)
			err := run(ctx, args, env(nil), io.Discard, io.Discard)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("run(%q) = %v, want a usage error (exit 2)", args, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %q, want it to mention %q", args, err, tt.want)
			}
		})
	}
}
