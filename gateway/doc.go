// Package gateway is the API gateway role: an echo server, one of N behind
// the balancer. It owns authentication (JWT), routing to the services, the
// cached reads of /data and /items/{id}, item writes, task submission and
// task status.
//
// Routes are listed in routes.go. The gateway talks to:
//   - dbsvc over NATS request-reply (db.data, db.items.*) on a cache miss
//     and for writes;
//   - the cache tiers (package internal/cache): its own near-cache, then
//     the shared bucket "cache"; --cache off|kv|kv+local picks them;
//   - the worker's process service (svc.process) for GET /process;
//   - the stream TASKS (publish) and bucket "tasks" (records) for tasks,
//     and the task-type registry (buckets "task_registry", watched by a
//     task.Catalog, and "task_workers"), which admin provisions: the
//     gateway waits for them (task.Open, task.OpenCatalog).
//
// A task belongs to the token subject that submitted it (the record's
// owner): the task routes answer 404 for another subject's task unless the
// token has tasks:admin (taskowner.go, which also derives the ids of
// Idempotency-Key submissions and item creates). A submission (POST
// /longtask) goes through submit.go's steps in order: validate (against
// the registry: type, queue, the type's JSON Schema), create the record
// (or replay the first one of a repeated key or unique task), publish
// (deleting the record if that fails), answer, at once or after ?wait=.
// The other task routes (GET with ?wait=, DELETE) are in tasks.go; retry,
// bulk retry of the dead letters of a type and purge in retry.go; GET
// /task-types in tasktypes.go. Schedules (/schedules, on the stream
// SCHEDULES that the server's scheduler fires) are in schedules.go, and
// the loop that turns their ticks into tasks, on every gateway, in
// schedules_run.go. GET /queues (depth, in flight, oldest age, workers,
// paused, the caller's totals) and the pause and resume of a queue (the
// registry's QueueDef.Paused, which workers watch) are in
// queues_routes.go; queue.go is the publisher of tasks.
//
// The client's address, for the per-IP rate limit and the login throttle,
// is the connection's peer, or the X-Forwarded-For entry the balancer
// added when the peer is one of --trusted-proxies (clientip.go). Failed
// logins are throttled per user name and per address before any bcrypt
// work, and bcrypt runs on at most half the cores (loginthrottle.go,
// authroute.go, bcrypt.go).
//
// The item writes (items.go) are POST /items (create), PUT /items/{id}
// (replace: every field required), PATCH /items/{id} (JSON Merge Patch)
// and DELETE. Every item has a version that each write raises; GET answers
// it as the ETag, cached reads included (read from the cached JSON), and
// the writes of an existing item honour If-Match, checked by dbsvc in the
// write's transaction: a stale tag is a 412 and writes nothing. A create
// with an Idempotency-Key happens once: dbsvc keeps the key with the item,
// and a repeat answers that item with Idempotent-Replayed: true.
//
// Every response carries X-Request-ID and X-Served-By: <gateway id>, so a
// person with curl can watch the balancer spread requests; cached routes
// add X-Cache: local, kv or miss.
//
// The task console (package gateway/console) is served at /console/
// without a token: it is three static files, and every call the page makes
// is to the API above, with the token of the user who logged in on it.
//
// Layer: roles (docs/ARCHITECTURE.md). It may import internal/ and, in its
// tests, other roles as fixtures; it must not import platform/, cli or
// natsconf, nor another role except a client API allowed in layout_test.go
// (roleClients).
package gateway
