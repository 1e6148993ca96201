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
# Unless .env exists or SCALELAB_JWT_SECRET is set, it also writes .env
# (untracked, read by docker compose) with a new random SCALELAB_JWT_SECRET
# for the gateways: no secret is ever committed.
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

if [ ! -e .env ] && [ -z "${SCALELAB_JWT_SECRET:-}" ]; then
  umask 077
  printf 'SCALELAB_JWT_SECRET=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >.env
  echo "wrote .env with a new SCALELAB_JWT_SECRET"
fi
