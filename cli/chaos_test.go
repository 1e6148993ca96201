package cli

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestChaosUsageErrors checks that `chaos` refuses bad options before it
// builds an image or starts a stack.
func TestChaosUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"too short", []string{"--duration", "1s"}, "--duration"},
		{"negative rate", []string{"--rate-tasks", "-1"}, "--rate-tasks"},
		{"unknown fault", []string{"--faults", "kill-worker,unplug-everything"}, `no fault "unplug-everything"`},
		{"one worker", []string{"--workers", "1"}, "--workers"},
		{"stray argument", []string{"now"}, "unexpected arguments"},
		{"bad log level", []string{"--log-level", "loud"}, "--log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			args := append([]string{"chaos", "--out", t.TempDir()}, tt.args...)
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
