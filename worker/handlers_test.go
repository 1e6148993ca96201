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

// TestTallyRecordsItsRun: a tally task succeeds only once its run is on
// the executions stream, under its first-run subject.
func TestTallyRecordsItsRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	startWorker(t, e.ns, testConfig("w1"))
	id := e.submit(t, "tally", `{"task":"tally","duration_ms":5}`)
	rec := e.waitState(t, id, task.Succeeded, 10*time.Second)
	if !strings.Contains(string(rec.Result), `"ran_before":false`) {
		t.Errorf("result %s, want ran_before false", rec.Result)
	}
	s, err := e.js.Stream(t.Context(), task.ExecStream)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", task.ExecStream, err)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), task.ExecFirstPrefix+id)
	if err != nil {
		t.Fatalf("the run of %s is not on %s: %v", id, task.ExecStream, err)
	}
	if !strings.Contains(string(msg.Data), `"worker":"w1"`) {
		t.Errorf("run record %s, want worker w1", msg.Data)
	}
}
