#!/usr/bin/env bash
# Builds the image that compose.yaml runs, in two steps:
#   1. static binaries (CGO_ENABLED=0) in bin/: scalelab, and nats-server and
#      the nats CLI at the versions pinned in go.mod;
#   2. the image (Dockerfile, FROM scratch) that holds the three of them.
# Nothing is pulled from a registry. Needs Go and a Docker engine.
#
#   scripts/images.sh                          # tags scalelab:dev
#   SCALELAB_IMAGE=scalelab:v1 scripts/images.sh
#
# It also writes to .env (untracked, read by docker compose) the secrets
# that are not set yet: SCALELAB_JWT_SECRET for the gateways, a NATS
# password per role and one for the cluster's routes. No secret is ever
# committed.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${SCALELAB_IMAGE:-scalelab:dev}

# Build for the engine's architecture, which need not be this machine's
# (DOCKER_HOST may point elsewhere).
arch=$(docker version --format '{{.Server.Arch}}')
export CGO_ENABLED=0 GOOS=linux GOARCH="$arch"
flags=(-trimpath "-ldflags=-s -w")
go build "${flags[@]}" -o bin/scalelab .
go build "${flags[@]}" -o bin/nats-server github.com/nats-io/nats-server/v2
go build "${flags[@]}" -o bin/nats github.com/nats-io/natscli/nats
mkdir -p bin/empty # becomes /data in the image

# BuildKit comes with the buildx plugin; without it the classic builder
# does the same job (the Dockerfile needs nothing BuildKit-only).
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
docker build --quiet --tag "$image" . >/dev/null
echo "built $image ($GOARCH)"

# Secrets for compose, in .env (untracked, mode 600, read by docker compose):
# the gateways' JWT secret, a NATS password per role and the route password.
# A value already in .env or in the environment is kept; only missing ones
# are made. NATS
# passwords are letters and digits starting with a letter, because the
# server reads the variable's value as a config token.
umask 077
add_secret() { # name value
  if [ -z "${!1:-}" ] && ! grep -qs "^$1=" .env; then
    printf '%s=%s\n' "$1" "$2" >>.env
    echo "wrote a new $1 to .env"
  fi
}
add_secret SCALELAB_JWT_SECRET "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
for role in GATEWAY WORKER DBSVC CACHESVC BALANCER CLIENT ADMIN; do
  add_secret "SCALELAB_NATS_${role}_PASSWORD" "p$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
done
# The cluster's routes (natsconf/cluster.conf): it goes into route URLs, so
# letters and digits only, as above.
add_secret SCALELAB_NATS_ROUTE_PASSWORD "p$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
