#!/usr/bin/env bash
# Runs every fuzz target of the parsers for a bounded time each and prints
# how many inputs each one tried. Not part of CI (the seed corpora under
# */testdata/fuzz run in every `go test`); a crash fails the script and
# leaves the input under the package's testdata/fuzz, to commit with the fix.
#
#   scripts/fuzz.sh                 # 30s per target
#   FUZZTIME=2m scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-30s}

targets=(
  "./internal/auth/ FuzzVerify"          # bearer tokens
  "./internal/auth/ FuzzFromHeader"      # the Authorization header
  "./internal/task/ FuzzValidate"        # POST /longtask bodies
  "./internal/task/ FuzzValidID"         # task ids (they become KV keys and subjects)
  "./internal/cache/ FuzzValidKey"       # cache keys (KV keys, subjects)
  "./internal/cache/ FuzzDecode"         # values anyone may put in the cache bucket
  "./gateway/ FuzzDecodeStrict"          # PUT /items/{id} and POST /auth/token bodies
  "./gateway/ FuzzDecodeMergePatch"      # PATCH /items/{id} bodies (JSON Merge Patch)
  "./internal/strictjson/ FuzzStrictAgreesWithIndependentDecoder" # every body type, against encoding/json
  "./balancer/ FuzzClientBytes"          # what clients send the balancer (the event loops read it)
  "./balancer/ FuzzFromHTTP2"            # HTTP/2 requests turned into HTTP/1.1 for the gateways
  "./balancer/ FuzzAppendJSONString"     # request paths in the access log
)
printf '%-24s %-40s %12s\n' package target execs
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1) || {
    echo "$out"
    echo "fuzz.sh: $name in $pkg failed" >&2
    exit 1
  }
  # The fuzzer's last progress line: "fuzz: elapsed: 30s, execs: 123456 (...)".
  execs=$(grep -o 'execs: [0-9]*' <<<"$out" | tail -1 | cut -d' ' -f2)
  printf '%-24s %-40s %12s\n' "$pkg" "$name" "${execs:-?}"
done
