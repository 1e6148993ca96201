package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/task"
)

// TestSleepReadsPayloadStrictly: the worker reads a payload with the
// gateway's strict reader, so a payload the gateway would refuse (here
// published past it) fails for good instead of being read some other way:
// encoding/json would sleep for the last duplicate, or for a key of
// another case.
func TestSleepReadsPayloadStrictly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, wantErr string
	}{
		{"duplicate duration", `{"task":"sleep","duration_ms":1,"duration_ms":600000}`, `duplicate key "duration_ms"`},
		{"wrong-case duration", `{"task":"sleep","Duration_MS":600000}`, `unknown field "Duration_MS"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			startWorker(t, e.ns, testConfig("w1"))
			id := e.submit(t, "sleep", tt.body)
			rec := e.waitState(t, id, task.Failed, 10*time.Second)
			if rec.Attempts != 1 || !strings.Contains(rec.Error, tt.wantErr) {
				t.Errorf("record: %d attempts, error %q, want 1 attempt and an error containing %q", rec.Attempts, rec.Error, tt.wantErr)
			}
		})
	}
}
