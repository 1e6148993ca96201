// Package tasktest starts a provisioned bus for the SDK's examples and
// tests: an embedded NATS server with the task streams, buckets and
// registry made as `scalelab up` makes them. Example functions have no
// *testing.T, so it exits on failure instead of failing a test.
//
// It is imported only from _test.go files. (Not in internal/testutil:
// internal/task's own tests import that, and this imports internal/task.)
//
// Layer: plumbing (docs/ARCHITECTURE.md): it must not import a role,
// natsconf, platform/ or cli; only other internal/ packages.
package tasktest
