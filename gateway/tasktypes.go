package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// taskTypeView is one task type as GET /task-types lists it: its
// registration and the workers alive now that serve it.
type taskTypeView struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Queue       string          `json:"queue"`
	MaxAttempts int             `json:"max_attempts,omitempty"`
	TimeoutMS   int64           `json:"timeout_ms,omitempty"`
	Unique      *task.Unique    `json:"unique,omitempty"`
	UpdatedAt   time.Time       `json:"updated_at"`
	Workers     int             `json:"workers"`
	// WorkerIDs name those workers, for tasks:admin only: a worker's id
	// carries its host name, which is the operator's business.
	WorkerIDs []string `json:"worker_ids,omitempty"`
}

// queueView is one queue as GET /task-types lists it.
type queueView struct {
	Name    string `json:"name"`
	Workers int    `json:"workers"`
}

// handleListTaskTypes answers the registered task types and queues (from
// the catalog, which watches the registry) with the live workers of each
// (task.Registry.Workers: those that announced themselves within
// task.WorkerTTL). A type with no live worker is listed with 0: it is
// still accepted, and its tasks wait, queued, until a worker serving it
// starts.
func handleListTaskTypes(catalog *task.Catalog) echo.HandlerFunc {
	return func(c echo.Context) error {
		workers, err := catalog.Registry().Workers(c.Request().Context())
		if err != nil {
			return apperr.Wrap(err, apperr.Unavailable, "task registry is not available")
		}
		byType := map[string][]string{}
		byQueue := map[string]int{}
		for _, w := range workers {
			for _, t := range slices.Compact(slices.Sorted(slices.Values(w.Types))) {
				byType[t] = append(byType[t], w.ID)
			}
			for _, q := range slices.Compact(slices.Sorted(slices.Values(w.Queues))) {
				byQueue[q]++
			}
		}
		admin := claimsOf(c).HasScope(auth.ScopeTasksAdmin)
		types := []taskTypeView{}
		for _, d := range catalog.Types() {
			queue := d.Queue
			if queue == "" {
				queue = task.DefaultQueue
			}
			ids := byType[d.Name]
			v := taskTypeView{
				Name: d.Name, Description: d.Description, Schema: d.Schema, Queue: queue,
				MaxAttempts: d.MaxAttempts, TimeoutMS: d.TimeoutMS, Unique: d.Unique, UpdatedAt: d.UpdatedAt,
				Workers: len(ids),
			}
			if admin {
				v.WorkerIDs = ids
				if v.WorkerIDs == nil {
					v.WorkerIDs = []string{}
				}
			}
			types = append(types, v)
		}
		queues := []queueView{}
		for _, q := range catalog.Queues() {
			queues = append(queues, queueView{Name: q, Workers: byQueue[q]})
		}
		return c.JSON(http.StatusOK, struct {
			TaskTypes []taskTypeView `json:"task_types"`
			Queues    []queueView    `json:"queues"`
		}{types, queues})
	}
}
