// Package worker is the business-logic role. It owns:
//
//   - the micro service "process" on the subject svc.process (wire.ProcessSubject),
//     the lab's synchronous /process endpoint, load balanced over workers by
//     the service's queue group; its stats ($SRV.STATS.process) carry each
//     worker's task counts (TaskStats) as endpoint data;
//   - the durable pull consumers "workers-<queue>" on the stream TASKS, one
//     per queue (task.QueueConsumer): every worker serving a queue pulls
//     from its consumer, so each task goes to exactly one of them, and a
//     free slot picks the queue by strict priority or weight (queues.go;
//     the stream itself is admin's to provision: the worker waits for it,
//     task.Open); a queue paused in the task-type registry (the key
//     queues.<name> of task_registry, which the worker watches) is not
//     pulled from until it is resumed (pause.go);
//   - the task handlers (report, sleep, noop), registered by type name;
//   - the lifecycle of a task record while it runs:
//     queued → running → succeeded | failed (or back to queued for a retry).
//
// A task message is acked only after its outcome is recorded, so a worker
// that dies mid-task loses nothing: JetStream redelivers the message to
// another worker when the ack wait runs out.
//
// The worker has no public HTTP; with --addr set it serves /healthz, /readyz
// and /metrics (metrics.go: task outcomes by type, queue and outcome; per
// queue its depth, in-flight tasks, oldest task's age and paused state;
// dead letters per type), on which docs/grafana/scalelab-tasks.json is
// built.
//
// Layer: roles (docs/ARCHITECTURE.md). It may import internal/ and, in its
// tests, other roles as fixtures; it must not import platform/, cli or
// natsconf, nor another role except a client API allowed in layout_test.go
// (roleClients).
package worker
