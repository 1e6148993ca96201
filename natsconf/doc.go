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
//   - embedded.go and storeguard.go: the server `up` embeds, and
//     GuardStore, which keeps its JetStream store from filling the disk
//     (an account store limit that follows the free space, less a
//     reserve) and restarts JetStream in place if a full disk broke it
//     anyway (docs/SECURITY.md, "When the disk fills").
//   - cluster.conf: the three nodes of compose.yaml's JetStream cluster,
//     each named by NATS_SERVER_NAME; compose-context.json is the nats CLI
//     context for that cluster. Both are copied into the image (Dockerfile).
//     The routes between the nodes authenticate: a route logs in as
//     RouteUser with $SCALELAB_NATS_ROUTE_PASSWORD, and each node dials
//     the others at $SCALELAB_NATS_ROUTES (RoutesValue: the route URLs with
//     the password, which compose.yaml builds, since the config language
//     cannot put a variable inside a string).
//
// # Who provisions what
//
// The task streams and bucket (TASKS, TASKS_DELAYED, TASKS_DLQ, tasks) are
// created and updated only by admin, with internal/task.Provision: `up`
// before it starts the roles, `scalelab tasks provision` elsewhere (the
// one-shot compose service provision). The gateways and workers open them
// (task.Open waits until they exist) and may not send STREAM.CREATE or
// STREAM.UPDATE: an update that shrinks a stream's limits purges it, around
// the admin-only purge. The cache bucket is cachesvc's own, and cachesvc
// provisions it; the gateways only use it.
//
// # Replies
//
// A responder may publish only into the inboxes of the roles allowed to
// call it, under the name of its service: _INBOX.<caller>.<service>.>
// (natsconn.ReplyInbox; the dbsvc and process clients and natsconn.Gather
// take their replies there), plus admin's whole inbox, since the nats CLI
// takes replies in its main inbox. So a worker, which answers the
// gateways' svc.process, cannot forge the reply to a gateway's
// db.users.get, and no request can aim its reply at $JS.API.
//
// # TLS
//
// TLS is off: `up` listens on loopback, and compose's nodes and roles talk
// over the compose network. To encrypt, uncomment the two tls blocks of
// cluster.conf (clients; routes, mutual with verify: true) and mount the
// certificates at /etc/nats/certs. The roles then connect with tls://
// URLs (SCALELAB_NATS_URL=tls://nats1:4222,...), trusting the CA through
// the system pool (SSL_CERT_FILE=/etc/nats/certs/ca.pem in a FROM scratch
// image), and the nats CLI context takes "ca": "/etc/nats/certs/ca.pem".
//
// Layer: config (docs/ARCHITECTURE.md), under the roles: it may import only
// internal/ packages; it must not import a role, platform/ or cli (the names
// it grants come from internal/wire, internal/task and internal/cache).
package natsconf
