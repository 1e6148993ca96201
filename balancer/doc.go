// Package balancer is scalelab's front door: an HTTP reverse proxy on :8000
// that spreads requests over the API gateways, round robin.
//
// The lab's balancer answered every request with a 307 redirect, so clients
// talked to the gateways directly and the gateways had to be reachable from
// outside. This one is a real proxy: the client's connection ends here, and
// the balancer opens (and reuses) its own connections to the gateways.
//
// # Routes
//
// Everything under /-/ belongs to the balancer; every other path, with any
// method, is proxied unchanged to the next gateway (so a gateway's own
// /healthz stays reachable through the balancer):
//
//	GET /-/healthz   the process is alive
//	GET /-/readyz    at least one gateway is configured (gateways are not probed)
//	GET /-/metrics   Prometheus metrics, scalelab_balancer_*
//	GET /-/balancer  {"policy":"round_robin","backends":[{"url","requests","errors","in_flight"}]}
//
// # Headers
//
//   - X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Proto are set by the
//     balancer. Values a client sent are dropped, never passed on: the
//     gateways are behind the balancer, so the balancer is the only party
//     that knows the client's address.
//   - X-Request-ID is passed on when the client sent a sane one (at most 128
//     token characters) and generated otherwise. The gateway receives it and
//     the client gets it back on the response, also on the balancer's own
//     error responses.
//   - The Host header sent to a gateway is the gateway's own host; the
//     client's is in X-Forwarded-Host.
//
// # Failures
//
// A gateway that refuses the connection, or does not accept it within
// Config.DialTimeout, costs the client at most that wait: the request
// (nothing of it was sent yet, so a POST too) is tried on the next gateway. When no gateway can serve it, the
// client gets 502 with the house error body, code unavailable. The balancer
// never answers with a redirect of its own; a gateway's 3xx passes through
// untouched.
//
// Gateways are a static list (--backends). Health checking and discovery of
// scaled-out gateways are not done here yet.
package balancer
