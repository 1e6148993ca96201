// Package compose runs compose.yaml's stack for the programs that need the
// real containers: the failure drills (platform/drill) and `scalelab chaos`
// (platform/bench). It finds the compose command (`docker compose`, or
// `docker-compose` 1.29), builds the image with scripts/images.sh, starts a
// project of its own on free loopback ports with fresh secrets, waits until
// every container is healthy and the API serves, and takes it down with its
// volumes. It also lists a service's containers, reads nats1's /jsz and the
// balancer's /-/balancer, and sends authenticated requests through the
// balancer: what a drill or a chaos run needs to act on the stack and see
// what it did.
//
// Layer: wiring (docs/ARCHITECTURE.md), above the roles: it may import the
// roles, natsconf and internal/; it must not import cli or main, and no role
// imports it.
package compose
