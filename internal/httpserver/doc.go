// Package httpserver runs an http.Handler the way every scalelab role does:
// listen first (so a busy port fails at start), serve with timeouts, and shut
// down gracefully when the context ends.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package httpserver
