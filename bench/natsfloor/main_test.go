package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDesigns: every design moves every task, at the message count its
// description gives (11, 9 and 7 a task: what bench/tasks/README.md's
// budget says today's pipeline costs).
func TestDesigns(t *testing.T) {
	var out, errs bytes.Buffer
	if err := run(t.Context(), []string{"-n", "300", "-c", "8", "-slots", "4", "-rounds", "1"}, &out, &errs); err != nil {
		t.Fatalf("run = %v (%s)", err, errs.String())
	}
	for _, row := range []string{"| today | 5 |", "| no-running | 4 |", "| message | 3 |"} {
		line := ""
		for l := range strings.Lines(out.String()) {
			if strings.HasPrefix(l, row) {
				line = l
			}
		}
		if line == "" {
			t.Errorf("no row %q in\n%s", row, out.String())
			continue
		}
		want := map[string]string{"| today | 5 |": "| 11.0 |", "| no-running | 4 |": "| 9.0 |", "| message | 3 |": "| 7.0 |"}[row]
		if !strings.HasSuffix(strings.TrimSpace(line), want) {
			t.Errorf("%s: want %s NATS messages a task", strings.TrimSpace(line), want)
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-design", "nope"}, {"-n", "0"}} {
		var out, errs bytes.Buffer
		if err := run(t.Context(), args, &out, &errs); err == nil {
			t.Errorf("run(%v) = nil, want an error", args)
		}
	}
}
