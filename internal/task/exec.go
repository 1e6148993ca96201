package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The executions stream: the built-in task type "tally" records each run of
// its handler there, so that a chaos run counts how many times a task ran
// from the handler's side, not from the record (issue #30).
const (
	// ExecStream holds one message per run of a tally task.
	ExecStream = "TASKS_EXEC"
	// ExecFirstPrefix prefixes a task id to make the subject of its first
	// recorded run; a run that finds it already taken records itself on
	// ExecAgainPrefix+id instead. So the stream's subjects under
	// ExecAgainPrefix are the tasks that ran more than once, each counted
	// once per extra run, and a reader never lists every task.
	ExecFirstPrefix = "taskexec.first."
	ExecAgainPrefix = "taskexec.again."
	// ExecRetention is how long a run is remembered.
	ExecRetention = 24 * time.Hour
	// execPublishTimeout bounds each publish of RecordExec. A request
	// whose reply is lost (the node it went through killed mid-request)
	// waits for its context's deadline, and a handler's is the task
	// timeout (15 min by default), during which the worker keeps the task
	// alive: the chaos run saw a task stay running so after a NATS node's
	// kill -9. Bounded, the run fails and is retried.
	execPublishTimeout = 5 * time.Second
)

// Exec is one recorded run of a task: the message body on ExecStream.
type Exec struct {
	Task    string    `json:"task"`
	Attempt int       `json:"attempt"`
	Worker  string    `json:"worker"`
	At      time.Time `json:"at"`
}

// RecordExec records a run of e.Task on ExecStream and returns once the
// stream has acknowledged it (stored on a majority of its replicas).
// again reports that an earlier run of the task was already recorded. The
// first run is a publish on ExecFirstPrefix+id that expects the subject
// empty; a later run fails that expectation and is stored under
// ExecAgainPrefix+id. It returns the publish's error otherwise.
func RecordExec(ctx context.Context, js jetstream.JetStream, e Exec) (again bool, err error) {
	body, err := json.Marshal(e)
	if err != nil {
		return false, fmt.Errorf("record run of task %s: %w", e.Task, err)
	}
	ctx, cancel := context.WithTimeout(ctx, execPublishTimeout)
	defer cancel()
	_, err = js.Publish(ctx, ExecFirstPrefix+e.Task, body, jetstream.WithExpectLastSequencePerSubject(0))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		if _, err := js.Publish(ctx, ExecAgainPrefix+e.Task, body); err != nil {
			return true, fmt.Errorf("record run %d of task %s: %w", e.Attempt, e.Task, err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("record run %d of task %s: %w", e.Attempt, e.Task, err)
	}
	return false, nil
}

// execStreamConfig is the executions stream: limits, kept ExecRetention.
func execStreamConfig(cfg ProvisionConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        ExecStream,
		Description: "scalelab runs of tally tasks, recorded by their handler (taskexec.first.<id>, taskexec.again.<id>)",
		Subjects:    []string{ExecFirstPrefix + ">", ExecAgainPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      ExecRetention,
		MaxBytes:    cfg.MaxQueueBytes,
		Discard:     jetstream.DiscardOld,
		Duplicates:  cfg.DedupeWindow,
	}
}
