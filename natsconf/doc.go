// Package natsconf holds the NATS server configurations of scalelab and
// starts the embedded server that `scalelab up` and the tests use.
//
// Files:
//   - single.conf: a one-node JetStream server for running the roles as
//     separate processes (go run github.com/nats-io/nats-server/v2 -c natsconf/single.conf).
//   - permissions.go: the NATS users, one per role plus admin, with
//     least-privilege permissions (Table). Users gives them to the embedded
//     server; RenderAuthorization writes them as a config block.
//   - authorization.conf: that block, for the clustered configs to
//     include, with passwords from $SCALELAB_NATS_<ROLE>_PASSWORD
//     (regenerate with go generate ./natsconf; a test fails while it is
//     stale).
//   - cluster.conf: the three nodes of compose.yaml's JetStream cluster,
//     each named by NATS_SERVER_NAME; compose-context.json is the nats CLI
//     context for that cluster. Both are copied into the image (Dockerfile).
//
// The streams and buckets themselves are provisioned by the roles that own
// them (TASKS and tasks by gateway and worker through internal/task, cache by
// cachesvc), so a bare server is all a role needs.
package natsconf
