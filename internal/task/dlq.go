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

// RetryDead re-queues the dead task id with Retry (a fresh budget of
// attempts, published again, then the dead letter removed), as `scalelab
// tasks dlq retry` does. It returns ErrNotFound if the task is not dead
// (not in the dead-letter queue: retried already, or never dead).
func RetryDead(ctx context.Context, js jetstream.JetStream, store *Store, id string) error {
	_, err := Retry(ctx, js, store, id, func(r *Record) error {
		if r.State != Dead {
			return fmt.Errorf("task %s is %s, not in %s: %w", id, r.State, DLQStream, ErrNotFound)
		}
		return nil
	})
	return err
}
