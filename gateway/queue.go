package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
)

// streamQueue publishes tasks to the TASKS stream.
type streamQueue struct {
	js jetstream.JetStream
}

// Enqueue publishes env and waits for the stream's ack, so a 202 means the
// task is stored on disk. The task id is the Nats-Msg-Id: a retried publish
// inside the dedupe window is stored once. A task with a runAt is stored
// as a schedule in TASKS_DELAYED, which hands it to TASKS when due.
func (q streamQueue) Enqueue(ctx context.Context, env task.Envelope, requestID string, runAt time.Time) error {
	data, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode task %s: %w", env.ID, err)
	}
	queue := env.QueueOrDefault()
	msg := nats.NewMsg(task.Subject(queue, env.Type))
	stream := task.Stream
	if !runAt.IsZero() {
		msg.Subject, stream = task.DelayedAtPrefix+env.ID, task.DelayedStream
		msg.Header.Set("Nats-Schedule", "@at "+runAt.UTC().Format(time.RFC3339))
		msg.Header.Set("Nats-Schedule-Target", task.DelayedDuePrefix+queue+"."+env.Type)
	}
	msg.Data = data
	msg.Header.Set(reqid.Header, requestID)
	msg.Header.Set(task.HeaderTaskID, env.ID)
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(env.ID), jetstream.WithExpectStream(stream)); err != nil {
		if queueFull(err) {
			return apperr.Wrap(err, apperr.RateLimited, "task queue is full, try again later")
		}
		return apperr.Wrap(err, apperr.Unavailable, "task queue is not available")
	}
	return nil
}

// queueFull reports the stream refusing a message because it is at its
// message or byte limit (DiscardNew): back-pressure, answered with 429.
func queueFull(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeStreamStoreFailed &&
		strings.Contains(apiErr.Description, "maximum")
}

// errCodeStreamStoreFailed is the server's JSStreamStoreFailedF, which
// nats.go does not name: "maximum messages exceeded" and friends.
const errCodeStreamStoreFailed jetstream.ErrorCode = 10077
