package task

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// OldestOnQueue returns when the oldest task on queue's subjects of the
// stream TASKS was stored: TASKS is a work queue, so the first message on
// a subject is the oldest not yet acked (waiting or running). ok is false
// when the queue holds none. The worker's metrics and GET /queues read it.
func OldestOnQueue(ctx context.Context, stream jetstream.Stream, queue string) (oldest time.Time, ok bool) {
	for _, subj := range QueueSubjects(queue) {
		m, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
		if err != nil {
			continue // ErrMsgNotFound: none on subj
		}
		if oldest.IsZero() || m.Time.Before(oldest) {
			oldest = m.Time
		}
	}
	return oldest, !oldest.IsZero()
}
