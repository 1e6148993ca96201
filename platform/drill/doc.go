// Package drill holds the failure drills of issue #7, run against the real
// containers of compose.yaml: the image is built with scripts/images.sh, the
// stack is started under a compose project of its own (a 3-node NATS
// cluster, dbsvc, cachesvc, gateways, workers, the balancer, on free host
// ports), parts of it are stopped under load, and the test checks that
// clients see nothing of it: every replica serves, no task is lost or
// stuck, no idempotent request fails once the balancer has ejected a dead
// gateway, and `down -v` leaves nothing behind. On the same stack, a short
// chaos run (platform/bench's RunChaos, the engine of `scalelab chaos`)
// injects every fault of the full schedule under load and checks issue
// #30's targets: no task lost, no read-your-writes violation, duplicate
// runs only under the faults that allow them, failed requests only inside
// each fault's window. The stack itself comes from platform/compose.
//
// The package has only this test. It needs a Docker engine and compose
// (`docker compose`, or `docker-compose` 1.29); without them, or with
// -short, it skips and says why. It takes a few minutes, most of them
// spent waiting for the cluster to notice what was done to it.
//
// Layer: wiring (docs/ARCHITECTURE.md), above the roles: it may import the
// roles, natsconf and internal/; it must not import cli or main, and no role
// imports it.
package drill
