package task

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestRecordExec: the first run of a task takes its subject under
// ExecFirstPrefix; every later run is stored under ExecAgainPrefix, so the
// subjects there count the extra runs, task by task.
func TestRecordExec(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	provision(t, js)
	for i, want := range []bool{false, true, true} {
		again, err := RecordExec(t.Context(), js, Exec{Task: "t1", Attempt: i + 1, Worker: "w1", At: time.Now()})
		if err != nil || again != want {
			t.Fatalf("RecordExec(t1, run %d) = %v, %v, want %v, nil", i+1, again, err, want)
		}
	}
	if again, err := RecordExec(t.Context(), js, Exec{Task: "t2", Attempt: 1}); err != nil || again {
		t.Fatalf("RecordExec(t2) = %v, %v, want false, nil", again, err)
	}
	s, err := js.Stream(t.Context(), ExecStream)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", ExecStream, err)
	}
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(ExecAgainPrefix+">"))
	if err != nil {
		t.Fatalf("Info() = %v", err)
	}
	if info.State.Msgs != 4 || len(info.State.Subjects) != 1 || info.State.Subjects[ExecAgainPrefix+"t1"] != 2 {
		t.Errorf("stream: %d messages, again subjects %v, want 4 and {t1: 2}", info.State.Msgs, info.State.Subjects)
	}
	msg, err := s.GetLastMsgForSubject(t.Context(), ExecAgainPrefix+"t1")
	if err != nil {
		t.Fatalf("GetLastMsgForSubject() = %v", err)
	}
	var e Exec
	if err := json.Unmarshal(msg.Data, &e); err != nil || e.Task != "t1" || e.Attempt != 3 || e.Worker != "w1" {
		t.Errorf("last again record = %+v, %v, want task t1, attempt 3, worker w1", e, err)
	}
}
