package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is a task in TASKS_DLQ.
type DeadLetter struct {
	Seq      uint64    `json:"seq"`
	ID       string    `json:"id"`
	Type     string    `json:"type"`
	Attempts int       `json:"attempts"`
	Error    string    `json:"error"`
	DiedAt   time.Time `json:"died_at"`
	// Owner is the task's submitter, from the record its message carries;
	// empty when the message carries none (a large payload).
	Owner    string `json:"owner,omitempty"`
	envelope []byte
}

// maxListed bounds ListDead: the dead-letter queue is for people to read.
const maxListed = 1000

// ListDead returns the dead letters, oldest first, at most 1000.
func ListDead(ctx context.Context, js jetstream.JetStream) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", DLQStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", DLQStream, err)
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0 && len(out) < maxListed; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // retried (deleted)
		}
		if err != nil {
			return nil, fmt.Errorf("read dead letter %d: %w", seq, err)
		}
		out = append(out, deadLetter(m))
	}
	return out, nil
}

func deadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	h := nats.Header(m.Header)
	attempts, _ := strconv.Atoi(h.Get(HeaderAttempts))
	var env Envelope
	owner := ""
	if json.Unmarshal(m.Data, &env) == nil && env.Record != nil {
		owner = env.Record.Owner
	}
	return DeadLetter{
		Seq: m.Sequence, ID: h.Get(HeaderTaskID), Type: strings.TrimPrefix(m.Subject, DLQSubjectPrefix),
		Attempts: attempts, Error: h.Get(HeaderError), DiedAt: m.Time, Owner: owner, envelope: m.Data,
	}
}

// RetryDead re-queues the dead task id: its record goes back to queued
// with a fresh budget of attempts, its message is published to TASKS again,
// and only then is the dead letter removed (a crash in between leaves a
// dead letter of a task that runs: visible, and retrying it again is
// deduplicated by its Nats-Msg-Id). It returns ErrNotFound if id is not in
// the dead-letter queue.
func RetryDead(ctx context.Context, js jetstream.JetStream, store *Store, id string) error {
	dead, err := ListDead(ctx, js)
	if err != nil {
		return err
	}
	for _, d := range dead {
		if d.ID != id {
			continue
		}
		var env Envelope
		if err := json.Unmarshal(d.envelope, &env); err != nil {
			return fmt.Errorf("decode dead letter %d: %w", d.Seq, err)
		}
		queued, err := store.UpdateFrom(ctx, id, nil, func(r *Record) error {
			r.State, r.Attempts, r.Progress, r.ProgressMessage = Queued, 0, 0, ""
			r.Error, r.FinishedAt, r.StartedAt = "retried from the dead-letter queue after: "+d.Error, nil, nil
			return nil
		})
		if err != nil {
			return fmt.Errorf("retry task %s: %w", id, err)
		}
		// The message carries the record as it is now, not as it was
		// created, so the worker need not read it (see Envelope.Record).
		if env.Record != nil {
			env.Record, env.Revision = queued.Record, queued.Rev
		}
		data, err := json.Marshal(env)
		if err != nil {
			return fmt.Errorf("retry task %s: encode: %w", id, err)
		}
		msg := nats.NewMsg(Subject(env.QueueOrDefault(), env.Type))
		msg.Data = data
		msg.Header.Set(HeaderTaskID, id)
		msgID := fmt.Sprintf("retry-%s-%d", id, d.Seq)
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(Stream)); err != nil {
			return fmt.Errorf("retry task %s: publish: %w", id, err)
		}
		s, err := js.Stream(ctx, DLQStream)
		if err == nil {
			err = s.DeleteMsg(ctx, d.Seq)
		}
		if err != nil {
			return fmt.Errorf("retry task %s: remove dead letter %d: %w", id, d.Seq, err)
		}
		return nil
	}
	return fmt.Errorf("task %s in %s: %w", id, DLQStream, ErrNotFound)
}
