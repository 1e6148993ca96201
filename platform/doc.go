// Package platform starts the whole of scalelab in one process: an
// embedded NATS server and every role over it, each role with its own
// connection and least-privilege NATS user, as `scalelab up` runs them.
// `up`, `scalelab bench` and the end-to-end tests all start it here, so
// what they measure and test is what a newcomer runs.
//
// Layer: wiring (docs/ARCHITECTURE.md), above the roles: it may import the
// roles, natsconf and internal/; it must not import cli or main, and no role
// imports it.
package platform
