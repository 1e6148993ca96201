package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/task"
)

// maxTaskWait caps ?wait=: it stays under the balancer's default
// response-header timeout (30 s), so a long poll through the balancer ends
// with the gateway's answer, not the balancer's 504.
const maxTaskWait = 25 * time.Second

// taskWait reads the optional ?wait= of a task route: how long the client
// will wait for the task to finish, a Go duration from 0 to maxTaskWait.
func taskWait(c echo.Context) (time.Duration, error) {
	s := c.QueryParam("wait")
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxTaskWait {
		return 0, apperr.New(apperr.Invalid, "wait must be a duration from 0s to %v, like 5s or 500ms", maxTaskWait)
	}
	return d, nil
}

// awaitFinal polls the record of task id until it is terminal, wait has
// passed or ctx ends, and returns the last record read. A record that
// visible rejects is task.ErrNotFound at the first read, without waiting,
// exactly as a missing one. It polls (the
// tasks bucket is read at its leader) rather than watches: a gateway's NATS
// user may read records but not create consumers, and a poll every few
// milliseconds costs less than a consumer per waiting client.
func awaitFinal(ctx context.Context, store TaskStore, id string, wait time.Duration, visible func(*task.Record) bool) (*task.Record, error) {
	deadline := time.Now().Add(wait)
	pause := 2 * time.Millisecond
	for {
		rec, _, err := store.Get(ctx, id)
		if err == nil && !visible(rec) {
			return nil, errNotVisible
		}
		if err != nil || rec.State.Terminal() || !time.Now().Add(pause).Before(deadline) {
			return rec, err
		}
		select {
		case <-ctx.Done():
			return rec, nil // the client left; it gets nothing anyway
		case <-time.After(pause):
		}
		pause = min(pause*2, 25*time.Millisecond)
	}
}

// handleGetTask answers a task's record. With ?wait=D it answers as soon as
// the task is final, or after D with the record as it is then: a client
// that wants the result waits in one request instead of polling. A task of
// another subject is a 404, as a missing one is, unless the token has
// tasks:admin.
func handleGetTask(store TaskStore) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := taskIDParam(c)
		if err != nil {
			return err
		}
		wait, err := taskWait(c)
		if err != nil {
			return err
		}
		claims := claimsOf(c)
		rec, err := awaitFinal(c.Request().Context(), store, id, wait, func(r *task.Record) bool { return visibleTo(claims, r) })
		if err != nil {
			return taskStoreError(id, err)
		}
		return c.JSON(http.StatusOK, rec)
	}
}

// handleCancelTask cancels a queued or running task. A queued task is
// dropped by the worker that pulls it; a running one has its context
// cancelled through a notice on task.CancelSubject. Cancelling a finished
// task is a 409. A task of another subject is a 404, as a missing one is,
// unless the token has tasks:admin; it is not cancelled.
func handleCancelTask(store TaskStore, notify Notifier, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := taskIDParam(c)
		if err != nil {
			return err
		}
		claims := claimsOf(c)
		rec, err := task.MarkCancelled(c.Request().Context(), store, id, func(r *task.Record) error {
			if !visibleTo(claims, r) {
				return errNotVisible // nothing is written
			}
			return nil
		})
		var final *task.FinalError
		switch {
		case errors.As(err, &final):
			return apperr.Wrap(err, apperr.Conflict, "%s", final)
		case err != nil:
			return taskStoreError(id, err)
		}
		if err := notify.Publish(task.CancelSubject(id), nil); err != nil {
			// The record says cancelled: a worker drops the task when it
			// finishes or pulls it, so the notice only saves time.
			log.Warn("publish cancel notice", "task_id", id, "request_id", requestID(c), "err", err)
		}
		return c.JSON(http.StatusOK, rec)
	}
}

// taskIDParam reads the :id of a task route, refusing (400) one that no
// task can have.
func taskIDParam(c echo.Context) (string, error) {
	id := c.Param("id")
	if !task.ValidID(id) {
		return "", apperr.New(apperr.Invalid, "task id must be 1-64 letters and digits")
	}
	return id, nil
}

// taskStoreError answers a failed read or write of task id: a missing task,
// or one the caller may not see (errNotVisible), is a 404; anything else
// is the store's failure, a 503 (taskStoreDown).
func taskStoreError(id string, err error) error {
	if errors.Is(err, task.ErrNotFound) {
		return apperr.New(apperr.NotFound, "no task %s (it may have expired)", id)
	}
	return taskStoreDown(err)
}

// taskStoreDown is the 503 of a task store that did not answer, or that
// refused a write for want of space (store_full: task.NoSpace).
func taskStoreDown(err error) error {
	if task.NoSpace(err) {
		return apperr.Wrap(err, apperr.StoreFull, task.NoSpaceMessage)
	}
	return apperr.Wrap(err, apperr.Unavailable, "task store is not available")
}
