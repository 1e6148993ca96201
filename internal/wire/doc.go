// Package wire names the NATS subjects and micro services that more than
// one package speaks: a role that serves them, the clients that call them,
// and natsconf, whose permission table grants them. They live here, under
// the roles, so that the bus's configuration never imports a role.
//
// Owns: names only (no code). Must not import anything of this module.
// The task pipeline's names are internal/task's, the cache's are
// internal/cache's; docs/WIRE.md is the contract in prose.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package wire
