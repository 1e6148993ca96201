// Package ops serves the operational endpoints every role exposes:
// GET /healthz (the process is alive), GET /readyz (its dependencies are
// reachable) and GET /metrics (Prometheus).
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package ops
