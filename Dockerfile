# The one image of compose.yaml: every container runs a binary from it.
#
#   /scalelab      every role (the entrypoint), and `scalelab probe` for the
#                  health checks: FROM scratch has no shell and no curl
#   /nats-server   the NATS server, at the version pinned in go.mod
#   /nats          the nats CLI (natscli, a tool in go.mod), with a context
#                  named scalelab for the cluster
#
# FROM scratch because these machines have no registry to pull a base image
# from, and static binaries need nothing else. Build the binaries first;
# scripts/images.sh does both steps. Nothing is compiled in here.
FROM scratch

COPY bin/scalelab bin/nats-server bin/nats /
COPY natsconf/cluster.conf natsconf/authorization.conf /etc/nats/
COPY natsconf/compose-context.json /etc/scalelab/nats/context/scalelab.json

# /data is where dbsvc keeps its SQLite file and a NATS node its JetStream
# store. A named volume mounted there starts as a copy of this (empty)
# directory, owner included, so the unprivileged user below can write it.
COPY --chown=65534:65534 bin/empty/ /data/
# SQLite needs a temporary directory to build an index (dbsvc's first
# start), and scratch has none.
COPY --chown=65534:65534 bin/empty/ /tmp/

# The nats CLI finds its contexts under $XDG_CONFIG_HOME/nats/context.
ENV XDG_CONFIG_HOME=/etc/scalelab

# nobody: nothing here needs root, and no port below 1024 is used.
USER 65534:65534
ENTRYPOINT ["/scalelab"]
