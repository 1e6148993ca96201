package gateway

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/scalelab/scalelab/gateway/console"
	"github.com/scalelab/scalelab/internal/auth"
)

// routes lists the gateway's whole HTTP API and the middleware of each
// route. Every route also passes the server-wide middleware of newServer:
// recover, request id, X-Served-By, metrics and access log, body limit.
func routes(e *echo.Echo, d deps) {
	// Ops: no auth, so probes and Prometheus need no token.
	e.GET("/healthz", echo.WrapHandler(d.ops))
	e.GET("/readyz", echo.WrapHandler(d.ops))
	e.GET("/metrics", echo.WrapHandler(d.ops))

	// API: a valid token, then the scope the route needs. requireBus fails
	// fast with 503 while NATS is disconnected, instead of letting the
	// request wait out its timeout.
	// (Per route, not an echo Group: a Group with middleware turns 405s
	// into 404s.)
	// The per-IP limit comes first, so floods of bad tokens are bounded too.
	byIP := limitByIP(newLimiter(d.cfg.Limits.PerIP, d.cfg.Limits.BurstIP, d.cfg.Limits.Keys))
	bySubject := limitBySubject(newLimiter(d.cfg.Limits.PerSubject, d.cfg.Limits.BurstSubject, d.cfg.Limits.Keys))
	api := func(scope string) []echo.MiddlewareFunc {
		return []echo.MiddlewareFunc{injectLatency(d.cfg.InjectLatency), byIP, authenticate(d.verifier), bySubject, requireScope(scope), requireBus(d.nc)}
	}
	e.POST("/auth/token", handleIssueToken(d.db, d.cfg, d.metrics, d.log), byIP, requireBus(d.nc)) // no token: it issues them
	e.GET("/data", handleGetData(d.cache, d.db), api(auth.ScopeDataRead)...)
	e.GET("/items", handleListItems(d.db), api(auth.ScopeItemsRead)...)
	e.GET("/items/:id", handleGetItem(d.cache, d.db), api(auth.ScopeItemsRead)...)
	e.POST("/items", handleCreateItem(d.cache, d.db, d.log, itemCreateKey(d.cfg.JWT.Secret)), api(auth.ScopeItemsWrite)...)
	e.PUT("/items/:id", handlePutItem(d.cache, d.db, d.log), api(auth.ScopeItemsWrite)...)
	e.PATCH("/items/:id", handlePatchItem(d.cache, d.db, d.log), api(auth.ScopeItemsWrite)...)
	e.DELETE("/items/:id", handleDeleteItem(d.cache, d.db, d.log), api(auth.ScopeItemsWrite)...)
	e.GET("/process", handleProcess(d.process), api(auth.ScopeDataRead)...)
	e.POST("/longtask", handleSubmitTask(d.tasks, d.queue, d.catalog, taskIDKey(d.cfg.JWT.Secret)), api(auth.ScopeTasksWrite)...)
	e.GET("/task-types", handleListTaskTypes(d.catalog), api(auth.ScopeTasksRead)...)
	e.GET("/tasks", handleListTasks(d.index, d.catalog), api(auth.ScopeTasksRead)...)
	// Server-sent events (taskevents.go); /tasks/events, static, wins
	// over /tasks/:id.
	e.GET("/tasks/events", handleTasksEvents(d.index, d.catalog, d.stopping), api(auth.ScopeTasksRead)...)
	e.GET("/tasks/:id/events", handleTaskEvents(d.index, d.tasks, d.stopping), api(auth.ScopeTasksRead)...)
	e.GET("/tasks/:id", handleGetTask(d.tasks), api(auth.ScopeTasksRead)...)
	// DELETE cancels; with ?purge=true (tasks:admin) it deletes a
	// finished task's record (retry.go).
	e.DELETE("/tasks/:id", handleDeleteTask(handleCancelTask(d.tasks, d.nc, d.log), handlePurgeTask(d.admin)), api(auth.ScopeTasksWrite)...)
	e.POST("/tasks/:id/retry", handleRetryTask(d.admin, d.log), api(auth.ScopeTasksWrite)...)
	// A static segment wins over :id in echo's router, so /tasks/dlq/retry
	// never reaches the route above (the ids the gateway and the SDK make
	// are 32 hex digits, never "dlq").
	e.POST("/tasks/dlq/retry", handleRetryDead(d.admin, d.catalog), api(auth.ScopeTasksAdmin)...)
	schedules := newScheduleBook(d.nc, d.catalog) // schedules.go
	e.POST("/schedules", handleCreateSchedule(schedules, deriveIDKey(d.cfg.JWT.Secret, scheduleIDLabel)), api(auth.ScopeTasksWrite)...)
	e.GET("/schedules", handleListSchedules(schedules), api(auth.ScopeTasksRead)...)
	e.GET("/schedules/:id", handleGetSchedule(schedules), api(auth.ScopeTasksRead)...)
	e.DELETE("/schedules/:id", handleDeleteSchedule(schedules), api(auth.ScopeTasksWrite)...)
	// Queues: their state, and pause and resume (queues_routes.go).
	queues := newQueueBook(d.nc, d.catalog)
	e.GET("/queues", handleListQueues(queues, d.totals), api(auth.ScopeTasksRead)...)
	e.POST("/queues/:name/pause", handlePauseQueue(queues, d.totals, true), api(auth.ScopeTasksAdmin)...)
	e.POST("/queues/:name/resume", handlePauseQueue(queues, d.totals, false), api(auth.ScopeTasksAdmin)...)
	// The task console (gateway/console): static files, so no token; every
	// call the page makes goes to the routes above with the user's token.
	// Served by the gateway, not the balancer's admin listener, so that it
	// is same-origin with the API. Only /console redirects: the page links
	// its assets relatively, which resolve under /console/ alone.
	e.GET("/console", func(c echo.Context) error { return c.Redirect(http.StatusFound, console.Prefix) })
	e.GET("/console/*", echo.WrapHandler(console.Handler()))
	// Unknown paths and methods reach errorHandler as echo's 404 and 405,
	// which it writes as JSON like every other error.
}
