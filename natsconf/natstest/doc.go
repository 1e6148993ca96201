// Package natstest starts, for tests, the embedded NATS server of `up`
// with its permission table on (natsconf/permissions.go): every role must
// connect as its own user, so a test sees the refusals production would.
// (internal/testutil starts a server without users; it cannot import
// natsconf, which the packages it serves are imported by.)
//
// Layer: config (docs/ARCHITECTURE.md), under the roles: it may import only
// internal/ packages; it must not import a role, platform/ or cli (the names
// it grants come from internal/wire, internal/task and internal/cache).
package natstest
