// Package reqid makes and checks request ids, the X-Request-ID value that
// follows a request from the balancer through the gateway and NATS to the
// workers and services, so one id finds every log line of a request.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package reqid
