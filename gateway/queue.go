package gateway

import (
	"context"
	"encoding/json"
	"fmt"

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
// inside the dedupe window is stored once.
func (q streamQueue) Enqueue(ctx context.Context, env task.Envelope, requestID string) error {
	data, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode task %s: %w", env.ID, err)
	}
	msg := nats.NewMsg(task.Subject(env.Type))
	msg.Data = data
	msg.Header.Set(reqid.Header, requestID)
	msg.Header.Set(task.HeaderTaskID, env.ID)
	if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(env.ID), jetstream.WithExpectStream(task.Stream)); err != nil {
		return apperr.Wrap(err, apperr.Unavailable, "task queue is not available")
	}
	return nil
}
