package gateway

import (
	"context"
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
