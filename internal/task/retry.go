package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Retryable reports whether a task in state s may be retried: it ended
// without succeeding (failed, dead or cancelled).
func (s State) Retryable() bool { return s == Failed || s == Dead || s == Cancelled }

// StateError is the refusal of a task whose state does not allow what was
// asked (Retry of a task that is queued, running or succeeded; Purge of
// one that is queued or running). The gateway answers it 409.
type StateError struct {
	ID    string
	State State
	// Op is what was refused: "retried", "purged".
	Op string
}

func (e *StateError) Error() string {
	return fmt.Sprintf("task %s is %s and cannot be %s", e.ID, e.State, e.Op)
}

// Retry queues the task id again: POST /tasks/{id}/retry, `scalelab tasks
// dlq retry` and the bulk retry of the dead-letter queue all come here. A
// failed, dead or cancelled task's record goes back to queued with a fresh
// budget of attempts (attempts, progress, start and finish cleared; the old
// error kept as "retried after: …"), its message is published again to the
// record's queue with task.Enqueue's code path, and, for a dead task, its
// dead letter is removed — after the publish, so a crash in between leaves
// a visible dead letter of a task that runs, never a lost task. Any other
// state is a *StateError, with nothing written.
//
// check, when not nil, sees the record first: its error stops the retry
// and is returned as it is (the gateway's check that the caller may see
// the task). A missing record is ErrNotFound.
//
// The message's Nats-Msg-Id is "retry-<id>-<revision>", the revision of
// the queued record: unique per retry, so the stream's dedupe window does
// not drop it as a repeat of the first submission, while a publish that
// this function repeats itself is stored once. If the publish fails, the
// record is put back as it was (when nobody wrote it since) and the
// publish's error returned.
func Retry(ctx context.Context, js jetstream.JetStream, store *Store, id string, check func(*Record) error) (*Record, error) {
	var before Record
	queued, err := store.UpdateFrom(ctx, id, nil, func(r *Record) error {
		if check != nil {
			if err := check(r); err != nil {
				return err
			}
		}
		if !r.State.Retryable() {
			return &StateError{ID: id, State: r.State, Op: "retried"}
		}
		before = *r
		r.State, r.Attempts, r.Progress, r.ProgressMessage = Queued, 0, 0, ""
		r.Error, r.FinishedAt, r.StartedAt, r.Worker = retriedError(r.Error), nil, nil, ""
		r.Generation++
		return nil
	})
	if err != nil {
		return nil, err
	}
	env := NewEnvelope(queued.Record, queued.Rev)
	if err := enqueue(ctx, js, env, "", time.Time{}, fmt.Sprintf("retry-%s-%d", id, queued.Rev)); err != nil {
		// Put the record back, unless somebody wrote it since: a queued
		// record without a message would stay queued for ever.
		if rerr := store.restore(ctx, &before, queued.Rev); rerr != nil {
			err = errors.Join(err, fmt.Errorf("retry task %s: restore record: %w", id, rerr))
		}
		return nil, err
	}
	if before.State == Dead {
		if err := deleteDead(ctx, js, id, before.Type); err != nil {
			return queued.Record, fmt.Errorf("retry task %s: queued again, but its dead letter stays: %w", id, err)
		}
	}
	return queued.Record, nil
}

// restore writes rec back if the record is still at revision rev, and
// does nothing if somebody wrote it since (their write wins).
func (s *Store) restore(ctx context.Context, rec *Record, rev uint64) error {
	rec.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := s.kv.Update(ctx, rec.ID, b, rev); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return err
	}
	return nil
}

// retriedError is a retried record's error: the previous one, said to be
// past.
func retriedError(prev string) string {
	if prev == "" {
		return "retried"
	}
	return "retried after: " + prev
}

// Purge deletes the record of the finished task id (DELETE
// /tasks/{id}?purge=true): succeeded, failed, dead or cancelled; a dead
// task's dead letter goes with it. A queued or running task is a
// *StateError, and nothing is deleted. check is as Retry's. The delete is
// conditional on the revision read, so a task retried meanwhile is not
// purged (its error then wraps jetstream.ErrKeyRevisionMismatch).
func Purge(ctx context.Context, js jetstream.JetStream, store *Store, id string, check func(*Record) error) error {
	rec, rev, err := store.Get(ctx, id)
	if err != nil {
		return err
	}
	if check != nil {
		if err := check(rec); err != nil {
			return err
		}
	}
	if !rec.State.Terminal() {
		return &StateError{ID: id, State: rec.State, Op: "purged"}
	}
	if err := store.kv.Delete(ctx, id, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("purge task %s: %w", id, err)
	}
	if rec.State == Dead {
		if err := deleteDead(ctx, js, id, rec.Type); err != nil {
			return fmt.Errorf("purge task %s: record deleted, but its dead letter stays: %w", id, err)
		}
	}
	return nil
}

// RetryFailure is one task that RetryDeadByType could not queue again.
type RetryFailure struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// RetryDeadByType retries (Retry) every dead letter of task type typ, and
// returns how many were queued again and the ones that were not, with
// why. check is as Retry's, applied to each. It reads the dead-letter
// queue by the type's subject (dlq.tasks.<type>), so letters of other
// types are not read. found reports whether the queue held any letter of
// the type at all.
func RetryDeadByType(ctx context.Context, js jetstream.JetStream, store *Store, typ string, check func(*Record) error) (retried int, failed []RetryFailure, found bool, err error) {
	letters, err := deadOfType(ctx, js, typ)
	if err != nil {
		return 0, nil, false, err
	}
	failed = []RetryFailure{}
	seen := map[string]bool{}
	for _, d := range letters {
		if d.ID == "" || seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		if rec, err := Retry(ctx, js, store, d.ID, check); err != nil && rec == nil {
			failed = append(failed, RetryFailure{ID: d.ID, Reason: retryReason(err)})
			continue
		} // else queued again (a dead letter left behind is only a leftover)
		retried++
	}
	return retried, failed, len(letters) > 0, nil
}

// retryReason is a bulk retry's short reason for err.
func retryReason(err error) string {
	var se *StateError
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, ErrNotFound):
		return "no record (expired or purged)"
	}
	return err.Error()
}

// deadOfType returns the dead letters of task type typ, oldest first,
// reading only that type's subject.
func deadOfType(ctx context.Context, js jetstream.JetStream, typ string) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, DLQStream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", DLQStream, err)
	}
	var out []DeadLetter
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(DLQSubject(typ)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil // no more
		}
		if err != nil {
			return nil, fmt.Errorf("read dead letters of %s: %w", typ, err)
		}
		out = append(out, deadLetter(m))
		seq = m.Sequence + 1
	}
}

// deleteDead removes the dead letters of task id, of type typ. None is not
// an error: retried already, or aged out of the stream.
func deleteDead(ctx context.Context, js jetstream.JetStream, id, typ string) error {
	letters, err := deadOfType(ctx, js, typ)
	if err != nil {
		return err
	}
	var s jetstream.Stream
	for _, d := range letters {
		if d.ID != id {
			continue
		}
		if s == nil {
			if s, err = js.Stream(ctx, DLQStream); err != nil {
				return fmt.Errorf("open stream %s: %w", DLQStream, err)
			}
		}
		if err := s.DeleteMsg(ctx, d.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("remove dead letter %d: %w", d.Seq, err)
		}
	}
	return nil
}
