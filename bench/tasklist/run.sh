#!/usr/bin/env bash
# bench/tasklist/run.sh: the task-listing benchmark of issue #26 (see
# bench/tasklist/main.go): fill the tasks bucket with N records (default
# 1,000,000), restart the platform on them, and measure one page of
# GET /tasks by filter. Builds the program, runs it once, and writes the
# Markdown table to bench/tasklist/result.md (OUT). Run it alone on the
# machine: it is a benchmark. Not part of CI.
#
#   bench/tasklist/run.sh                 # 1,000,000 records
#   N=20000 bench/tasklist/run.sh         # a quick try
#   bench/tasklist/run.sh -requests 1000  # more flags for the program
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${N:-1000000}
OUT=${OUT:-bench/tasklist/result.md}
commit=$(git rev-parse --short=12 HEAD)
git diff --quiet HEAD -- . ':!bench/README.md' ':!bench/tasklist/result.md' || commit="$commit+dirty"

bin=$(mktemp -d)/tasklist
trap 'rm -rf "$(dirname "$bin")"' EXIT
go build -o "$bin" ./bench/tasklist
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(go version | awk '{print $3}')" >&2
"$bin" -n "$N" -commit "$commit" -out "$OUT" "$@"
echo "written to $OUT" >&2
