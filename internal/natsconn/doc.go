// Package natsconn connects a role to NATS the same way everywhere: named
// connections, endless reconnects, logged state changes, and a wait for the
// server at start so that roles can start before NATS does (compose).
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package natsconn
