// Package client submits scalelab tasks and follows them: the SDK of a
// program that wants work done, as package worker is the SDK of a program
// that does it.
//
// Two clients, one method set (Tasks):
//
//   - New talks HTTP to the front door (the balancer, or a gateway) with a
//     bearer token, exactly as curl does: POST /longtask, GET /tasks/{id}
//     (with ?wait= long polls), DELETE /tasks/{id}. Use it from anywhere.
//     Beyond Tasks it lists tasks a page at a time over the gateway's
//     index (List, GET /tasks: ListOptions in, a Page with a cursor and
//     totals out) and retries a finished task (Retry, POST
//     /tasks/{id}/retry).
//   - NewNATS talks to NATS directly, for programs inside the cluster:
//     it creates the task's record in the tasks bucket and publishes the
//     task as the gateway does (internal/task.Enqueue), and reads records
//     from the bucket. Its NATS user is natsconf's "client" role, which
//     may submit, read and cancel tasks and nothing else. Its List (with
//     a Filter, not ListOptions) scans the bucket, O(records), with no
//     index and no pages: for scripts on small platforms; the HTTP List
//     is the one that stays fast with a million records.
//
// Every error the platform answers is a *Error with the HTTP status and the
// API's code and message ({"error":{"code","message"}}); the NATS client
// answers the same codes and statuses as the gateway would.
//
// A task runs at least once: docs/TASKS-WIRE.md is the contract between
// the platform and a worker; `go doc ./worker` is the Go worker SDK.
//
// Layer: roles (docs/ARCHITECTURE.md), a public SDK beside the roles: it
// must not import platform/, cli, natsconf or a role; only internal/.
package client
