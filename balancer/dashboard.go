package balancer

import (
	"context"
	"net/http"
)

// DashboardPath is where a Dashboard is served: GET /-/dashboard and every
// path under it.
const DashboardPath = opsPrefix + "/dashboard"

// Dashboard is a live view of the running system that the balancer serves
// under DashboardPath (Config.Dashboard). It is an interface so that the
// balancer need not know where the other figures come from: the
// dashboard of scalelab (platform/dashboard) reads NATS, which the
// balancer itself never connects to.
type Dashboard interface {
	// Handler returns the handler of DashboardPath and the paths under it,
	// which it receives with DashboardPath stripped (the page itself is ""
	// or "/"). status reads the balancer's Status, the figures of GET
	// /-/balancer; it only reads atomics and is safe from any goroutine.
	// Handler is called once, before the balancer serves.
	//
	// The handler may stream (server-sent events): the balancer's net/http
	// routes go through fasthttpadaptor, which sends a response as it is
	// written once the handler calls Flush. The request's context ends
	// when the balancer shuts down, not when the client goes away; a
	// stream notices that when its next write fails.
	Handler(status func() Status) http.Handler
	// Run does the dashboard's background work (sampling) until ctx
	// ends. The balancer runs it from start until it has drained.
	Run(ctx context.Context)
}
