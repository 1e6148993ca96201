// Package dashboard is the live dashboard the balancer serves at
// /-/dashboard on its admin listener (127.0.0.1:8001): the topology of the running system (client, balancer,
// gateways, NATS, workers, dbsvc, the cache) with figures that change
// every second.
//
// A Dashboard samples once per Config.Interval. The balancer's own
// figures come in-process (balancer.Status, the counters behind GET
// /-/balancer); everything else comes over NATS, read-only, as the NATS
// user natsconf.RoleBalancer:
//
//   - $SRV.STATS.cache-client: each gateway's cache tiers (internal/cache);
//   - $SRV.STATS.dbsvc: dbsvc's requests per endpoint, i.e. its queries;
//   - $SRV.STATS.process: each worker's sync calls and task counts
//     (worker.TaskStats);
//   - the info of the queues' consumers workers-<queue> on TASKS (queued
//     and in-flight tasks per queue; the oldest task's age comes from the
//     workers' stats), of the stream TASKS_DLQ (dead tasks) and of KV_cache
//     (the shared cache's size).
//
// Rates are the difference of two samples' counters over the time between
// them. Without NATS (no URL, or the server is down) the dashboard still
// shows the balancer's figures and says why the rest is missing.
//
// Routes, relative to where the balancer mounts it:
//
//	GET /         the page (embedded HTML, CSS and JS; no build step)
//	GET /state    the latest sample as JSON (Snapshot), for scripts and tests
//	GET /events   server-sent events: one "data: <Snapshot JSON>" per sample
//
// Layer: wiring (docs/ARCHITECTURE.md), above the roles: it may import the
// roles, natsconf and internal/; it must not import cli or main, and no role
// imports it.
package dashboard
