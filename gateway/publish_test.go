package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// lostAck is the task queue of a NATS failover: it publishes the message
// for real when stored is set, then fails with err, as a publish whose ack
// never came does.
type lostAck struct {
	js     jetstream.JetStream
	stored bool
	err    error
}

func (q lostAck) Enqueue(ctx context.Context, env task.Envelope, requestID string, runAt time.Time) error {
	if q.stored {
		if err := task.Enqueue(ctx, q.js, env, requestID, runAt); err != nil {
			return err
		}
	}
	return q.err
}

// TestPublishUndoesOnlyARefusal: a submission whose publish failed deletes
// its record only when the stream refused the message. A publish that
// timed out may have been stored (the compose drill saw one: the task ran,
// then its record was deleted and the client's keyed retry stored a new
// "queued" record whose message the stream dropped as a duplicate, so it
// stayed queued forever); its record stays, and the task's run settles it.
func TestPublishUndoesOnlyARefusal(t *testing.T) {
	t.Parallel()
	js, store := provisionedTasks(t)
	refused := &jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeStreamNotFound, Description: "stream not found"}
	for i, tc := range []struct {
		name  string
		queue lostAck
		keep  bool
	}{
		{"ack lost after the message was stored", lostAck{js: js, stored: true, err: context.DeadlineExceeded}, true},
		{"refused by JetStream", lostAck{js: js, err: refused}, false},
	} {
		now := time.Now().UTC()
		rec := &task.Record{ID: "0123456789abcdef0123456789abcde" + string(rune('0'+i)), Type: "sleep",
			State: task.Queued, Owner: "alice", Payload: []byte(`{"duration_ms":1}`), CreatedAt: now, UpdatedAt: now}
		s := &submission{rec: rec}
		rev, err := s.create(t.Context(), store)
		if err != nil {
			t.Fatalf("%s: create = %v", tc.name, err)
		}
		if err := s.publish(t.Context(), store, tc.queue, rev); err == nil {
			t.Fatalf("%s: publish = nil, want its error", tc.name)
		}
		_, _, err = store.Get(t.Context(), rec.ID)
		switch {
		case tc.keep && err != nil:
			t.Errorf("%s: the record is gone (%v), though its message may be stored", tc.name, err)
		case !tc.keep && !errors.Is(err, task.ErrNotFound):
			t.Errorf("%s: Get = %v, want the record deleted (the stream stored nothing)", tc.name, err)
		}
	}
}

// provisionedTasks starts a NATS server with the task streams and bucket
// provisioned, and returns its JetStream and the task store.
func provisionedTasks(t *testing.T) (jetstream.JetStream, *task.Store) {
	t.Helper()
	ns := testutil.StartNATS(t)
	js, err := jetstream.New(testutil.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	store, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig())
	if err != nil {
		t.Fatal(err)
	}
	return js, store
}
