// Package logging passes the log lines of the libraries scalelab embeds
// (gnet's event loops and fasthttp in the balancer, the NATS server in
// natsconf) to the process's slog.Logger, each at one level.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must
// not import a role, natsconf, platform/ or cli; only other internal/
// packages.
package logging
