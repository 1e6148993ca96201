// Package gateway is the API gateway role: an echo server, one of N behind
// the balancer. It owns authentication (JWT), routing to the services, the
// cache-aside read of /data, task submission and task status.
//
// Routes are listed in routes.go. The gateway talks to:
//   - dbsvc over NATS request-reply (db.data) on a cache miss;
//   - the shared cache bucket "cache" (cachesvc.Client) for cache-aside reads;
//   - the worker's process service (svc.process) for GET /process;
//   - the stream TASKS (publish) and bucket "tasks" (records) for tasks.
//
// Every response carries X-Request-ID and X-Served-By: <gateway id>, so a
// person with curl can watch the balancer spread requests.
package gateway
