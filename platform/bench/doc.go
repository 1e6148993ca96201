// Package bench is `scalelab bench`: the lab's experiments (cache,
// scale, async, balance) run against platforms it starts (package
// platform) or a running one, with reports, charts and compare.
//
// Layer: wiring (docs/ARCHITECTURE.md), above the roles: it may import the
// roles, natsconf and internal/; it must not import cli or main, and no role
// imports it.
package bench
