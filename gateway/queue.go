package gateway

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
)

// streamQueue publishes tasks to the TASKS stream.
type streamQueue struct {
	js jetstream.JetStream
}

// Enqueue publishes env and waits for the stream's ack, so a 202 means the
// task is stored on disk (task.Enqueue: the one way a task is published,
// whoever submits it; a full stream is a 429, a stream that does not
// answer a 503).
func (q streamQueue) Enqueue(ctx context.Context, env task.Envelope, requestID string, runAt time.Time) error {
	return task.Enqueue(ctx, q.js, env, requestID, runAt)
}
