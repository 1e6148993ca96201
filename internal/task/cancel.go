package task

import (
	"context"
	"fmt"
	"time"
)

// FinalError is MarkCancelled's refusal of a task that already ended.
type FinalError struct {
	ID    string
	State State
}

func (e *FinalError) Error() string { return fmt.Sprintf("task %s already %s", e.ID, e.State) }

// Updater updates task records with compare-and-set: a Store, or a
// gateway's view of one.
type Updater interface {
	Update(ctx context.Context, id string, fn func(*Record) error) (*Record, error)
}

// MarkCancelled marks the task id cancelled, as DELETE /tasks/{id} and the
// SDK's Cancel do, and returns its record. check, when not nil, sees the
// record first: its error stops the cancel, nothing is written, and the
// error is returned as it is (the gateway's check that the caller may see
// the task). A task that already ended is a *FinalError. The caller then
// publishes the notice on CancelSubject(id), which only saves time: a
// worker drops a cancelled task when it pulls it or finishes it.
func MarkCancelled(ctx context.Context, s Updater, id string, check func(*Record) error) (*Record, error) {
	return s.Update(ctx, id, func(r *Record) error {
		if check != nil {
			if err := check(r); err != nil {
				return err
			}
		}
		if r.State.Terminal() {
			return &FinalError{ID: id, State: r.State}
		}
		now := time.Now().UTC()
		r.State, r.Error, r.FinishedAt = Cancelled, "cancelled by client", &now
		return nil
	})
}
