package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// TaskAdmin retries and purges tasks (taskAdmin: internal/task's Retry,
// RetryDeadByType and Purge over the gateway's bus and tasks bucket).
type TaskAdmin interface {
	Retry(ctx context.Context, id string, check func(*task.Record) error) (*task.Record, error)
	RetryDeadByType(ctx context.Context, typ string, check func(*task.Record) error) (retried int, failed []task.RetryFailure, found bool, err error)
	Purge(ctx context.Context, id string, check func(*task.Record) error) error
}

// taskAdmin is the TaskAdmin of a running gateway.
type taskAdmin struct {
	js    jetstream.JetStream
	store *task.Store
}

// Retry is task.Retry.
func (a taskAdmin) Retry(ctx context.Context, id string, check func(*task.Record) error) (*task.Record, error) {
	return task.Retry(ctx, a.js, a.store, id, check)
}

// RetryDeadByType is task.RetryDeadByType.
func (a taskAdmin) RetryDeadByType(ctx context.Context, typ string, check func(*task.Record) error) (int, []task.RetryFailure, bool, error) {
	return task.RetryDeadByType(ctx, a.js, a.store, typ, check)
}

// Purge is task.Purge.
func (a taskAdmin) Purge(ctx context.Context, id string, check func(*task.Record) error) error {
	return task.Purge(ctx, a.js, a.store, id, check)
}

// visibleCheck is the check of task.Retry and task.Purge: a task the
// caller may not see stops them as a missing one (errNotVisible).
func visibleCheck(claims *auth.Claims) func(*task.Record) error {
	return func(r *task.Record) error {
		if !visibleTo(claims, r) {
			return errNotVisible
		}
		return nil
	}
}

// handleRetryTask queues a failed, dead or cancelled task again with a
// fresh budget of attempts (task.Retry; a dead task's dead letter goes
// away) and answers 202 with its record, queued, as POST /longtask
// answers 202 for a task it queued. A task in any other state is a 409; a
// task of another subject is a 404, as a missing one is, unless the token
// has tasks:admin.
func handleRetryTask(admin TaskAdmin, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := taskIDParam(c)
		if err != nil {
			return err
		}
		rec, err := admin.Retry(c.Request().Context(), id, visibleCheck(claimsOf(c)))
		switch {
		case err != nil && rec != nil:
			// Queued again: the answer is the retry's. Only its dead
			// letter stayed behind (`tasks dlq ls` lists it; retrying
			// it is refused while the task is not dead).
			log.Warn("retry task: queued again, dead letter not removed", "task_id", id, "request_id", requestID(c), "err", err)
		case err != nil:
			return taskAdminError(id, err)
		}
		return c.JSON(http.StatusAccepted, rec)
	}
}

// handleRetryDead retries every dead task of ?type= (tasks:admin only, by
// its route): 200 with how many were queued again and which were not, and
// why. A type that is not a task type's name, or that neither the
// registry nor the dead-letter queue knows, is a 400.
func handleRetryDead(admin TaskAdmin, catalog *task.Catalog) echo.HandlerFunc {
	type reply struct {
		Type    string              `json:"type"`
		Retried int                 `json:"retried"`
		Failed  []task.RetryFailure `json:"failed"`
	}
	return func(c echo.Context) error {
		typ := c.QueryParam("type")
		if !task.ValidName(typ) {
			return apperr.New(apperr.Invalid, "type must name a task type: 1-%d letters, digits, '_' and '-'", task.MaxNameLen)
		}
		retried, failed, found, err := admin.RetryDeadByType(c.Request().Context(), typ, visibleCheck(claimsOf(c)))
		if err != nil {
			return apperr.Wrap(err, apperr.Unavailable, "dead-letter queue is not available")
		}
		if !found && !registered(catalog, typ) {
			return apperr.New(apperr.Invalid, "unknown task type %q", typ)
		}
		return c.JSON(http.StatusOK, reply{Type: typ, Retried: retried, Failed: failed})
	}
}

// registered reports whether the registry knows the task type typ.
func registered(catalog *task.Catalog, typ string) bool {
	if catalog == nil {
		return false
	}
	for _, d := range catalog.Types() {
		if d.Name == typ {
			return true
		}
	}
	return false
}

// handleDeleteTask is DELETE /tasks/{id}: a cancel (handleCancelTask), or
// with ?purge=true the deletion of a finished task's record
// (handlePurgeTask).
func handleDeleteTask(cancel, purge echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.QueryParam("purge") {
		case "", "false":
			return cancel(c)
		case "true":
			return purge(c)
		}
		return apperr.New(apperr.Invalid, "purge must be true or false")
	}
}

// handlePurgeTask deletes the record of a finished task (succeeded,
// failed, dead or cancelled; a dead task's dead letter with it) and
// answers 200 {"id":…,"purged":true}. It needs tasks:admin (403 without);
// a queued or running task is a 409.
func handlePurgeTask(admin TaskAdmin) echo.HandlerFunc {
	type reply struct {
		ID     string `json:"id"`
		Purged bool   `json:"purged"`
	}
	return func(c echo.Context) error {
		claims := claimsOf(c)
		if claims == nil || !claims.HasScope(auth.ScopeTasksAdmin) {
			return apperr.New(apperr.Forbidden, "purging a task needs the scope %q", auth.ScopeTasksAdmin)
		}
		id, err := taskIDParam(c)
		if err != nil {
			return err
		}
		if err := admin.Purge(c.Request().Context(), id, visibleCheck(claims)); err != nil {
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return apperr.Wrap(err, apperr.Conflict, "task %s changed while it was purged; try again", id)
			}
			return taskAdminError(id, err)
		}
		return c.JSON(http.StatusOK, reply{ID: id, Purged: true})
	}
}

// taskAdminError answers a failed retry or purge of task id: a state that
// does not allow it is a 409 naming the state; a publish refused by a
// full queue keeps its apperr code (429); the rest is taskStoreError's.
func taskAdminError(id string, err error) error {
	var se *task.StateError
	var ae *apperr.Error
	switch {
	case errors.As(err, &se):
		return apperr.Wrap(err, apperr.Conflict, "%s", se)
	case errors.As(err, &ae):
		return err
	}
	return taskStoreError(id, err)
}
