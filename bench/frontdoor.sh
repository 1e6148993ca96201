#!/usr/bin/env bash
# bench/frontdoor.sh: the latency of `up`'s front door against a standalone
# balancer in front of the same gateways, at a constant rate.
#
# Starts one `scalelab up` (rate limits off, a temporary data directory) and
# one `scalelab balancer`, a process of its own, whose backends are that up's
# two gateways. vegeta sends a constant RATE of cached GET /items/42 and
# GET /data to each in turn (interleaved rounds, rotating order), and the
# table shows the medians over the rounds of p50 and p99 and the ratios of up
# to the standalone balancer: the cost of sharing one process with every
# other role. The goal of issue #29: p50 <= 1.2x and p99 <= 1.5x at 3,000/s.
# With BASELINE it also starts `up` as built from another commit, whose front
# door joins the same rounds: an A/B of a change.
#
# Everything listens on 127.0.0.1 and is stopped on exit. Not part of CI.
#
#   bash bench/frontdoor.sh                      # 5 rounds of 2 x 8 s per target: about 3 minutes
#   BASELINE=HEAD~1 bash bench/frontdoor.sh      # also up as of another commit
#   RATE=1000 ROUNDS=7 bash bench/frontdoor.sh
#
# Settings (environment):
#   RATE=3000 DURATION=8s ROUNDS=5   vegeta: constant rate, -duration, rounds
#   WARMUP=2s           vegeta run per target before the rounds (connections, caches)
#   VEGETA_WORKERS=64   vegeta -max-workers and -max-connections
#   PORT_BASE=18180     ports PORT_BASE..PORT_BASE+19 must be free
#   BASELINE=<commit>   also `up` built from that commit (git archive, so
#                       uncommitted changes are left out), target "baseline"
#   SCALELAB_ENV=...    extra environment of up (VAR=value words); BASELINE=HEAD
#   BASELINE_ENV=...    with different environments is an A/B of a setting
#   PEAK=1              also each target's peak, GET /items/42 with wrk
#                       (-t2 -c32, DURATION) in every round: throughput and
#                       p99 at full load, as req/s ratios (installs wrk when
#                       missing, as root)
set -euo pipefail

RATE=${RATE:-3000}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2s}
VEGETA_WORKERS=${VEGETA_WORKERS:-64}
PORT_BASE=${PORT_BASE:-18180}
VEGETA=github.com/tsenart/vegeta/v12@v12.13.0

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
tmp=$(mktemp -d /tmp/scalelab-frontdoor.XXXXXX)
pids=()

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
	((${#pids[@]})) && stop INT "${pids[@]}"
	rm -rf "$tmp"
}
trap cleanup EXIT

command -v go >/dev/null || die "go is missing"
command -v python3 >/dev/null || die "python3 is missing"
if [[ -n ${PEAK:-} ]] && ! command -v wrk >/dev/null; then
	[[ $(id -u) == 0 ]] || die "wrk missing; run as root to apt-get install it"
	log "installing wrk ..."
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
fi

log "building scalelab and vegeta ..."
(cd "$root" && go build -o "$tmp/scalelab" .)
GOBIN="$tmp" go install "$VEGETA"
if [[ -n ${BASELINE:-} ]]; then
	log "building the baseline, scalelab at $BASELINE ..."
	mkdir "$tmp/baseline-src"
	git -C "$root" archive "$BASELINE" | tar -x -C "$tmp/baseline-src"
	(cd "$tmp/baseline-src" && go build -o "$tmp/scalelab-baseline" .)
fi

SCALELAB_JWT_SECRET=$(head -c 32 /dev/urandom | base64)
export SCALELAB_JWT_SECRET
token=$("$tmp/scalelab" token --sub frontdoor --scope 'data:read items:read' --ttl 1h)

# start_up NAME BINARY PORT_OFFSET ENV...: an up on ports PORT_BASE+offset..+9.
start_up() {
	local name=$1 bin=$2 o=$((PORT_BASE + $3)) admin=()
	shift 3
	# Builds since the admin listener (127.0.0.1:8001 by default) need a
	# port of their own for it; older ones have no such flag.
	if "$bin" up -h 2>&1 | grep -q -- -admin-addr; then
		admin=(--admin-addr "127.0.0.1:$((o + 5))")
	fi
	# shellcheck disable=SC2086 # the rest are VAR=value words
	env "$@" "$bin" up --addr "127.0.0.1:$o" --gateway-addrs "127.0.0.1:$((o + 1)),127.0.0.1:$((o + 2))" \
		--dbsvc-addr "127.0.0.1:$((o + 3))" --cachesvc-addr "127.0.0.1:$((o + 4))" --nats-port -1 --nats-http-port 0 \
		--data "$tmp/data-$name" --rate-limit-ip 0 --rate-limit-subject 0 --seed-rows 20000 --log-level warn "${admin[@]}" \
		>"$tmp/$name.log" 2>&1 &
	pids+=($!)
}

# shellcheck disable=SC2086
start_up up "$tmp/scalelab" 0 ${SCALELAB_ENV:-}
"$tmp/scalelab" balancer --addr "127.0.0.1:$((PORT_BASE + 9))" --admin-addr "127.0.0.1:$((PORT_BASE + 8))" \
	--backends "http://127.0.0.1:$((PORT_BASE + 1)),http://127.0.0.1:$((PORT_BASE + 2))" --log-level warn \
	>"$tmp/standalone.log" 2>&1 &
pids+=($!)
declare -A port=([up]=$PORT_BASE [standalone]=$((PORT_BASE + 9)))
targets=(up standalone)
if [[ -n ${BASELINE:-} ]]; then
	# shellcheck disable=SC2086
	start_up baseline "$tmp/scalelab-baseline" 10 ${BASELINE_ENV:-}
	port[baseline]=$((PORT_BASE + 10))
	targets+=(baseline)
fi

routes=(/items/42 /data)
for t in "${targets[@]}"; do
	for r in "${routes[@]}"; do
		printf 'GET http://127.0.0.1:%s%s\nAuthorization: Bearer %s\n' "${port[$t]}" "$r" "$token" \
			>"$tmp/targets-$t-${r//\//_}"
	done
	log "waiting for $t (127.0.0.1:${port[$t]}) ..."
	for _ in $(seq 1 240); do
		curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:${port[$t]}/items/42" && break
		sleep 0.5
	done
	curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:${port[$t]}/data" ||
		die "$t does not answer; its log: $(tail -5 "$tmp/$t.log" 2>/dev/null)"
done

attack() { # attack TARGET ROUTE DURATION OUT
	"$tmp/vegeta" attack -rate="$RATE/s" -duration="$3" -max-workers "$VEGETA_WORKERS" \
		-max-connections "$VEGETA_WORKERS" -targets "$tmp/targets-$1-${2//\//_}" >"$4"
}

log "warming up ($WARMUP per target and route) ..."
for t in "${targets[@]}"; do
	for r in "${routes[@]}"; do attack "$t" "$r" "$WARMUP" /dev/null; done
done

results="$tmp/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
	n=${#targets[@]}
	for i in $(seq 0 $((n - 1))); do
		t=${targets[$(((i + round) % n))]}
		for r in "${routes[@]}"; do
			attack "$t" "$r" "$DURATION" "$tmp/out.bin"
			"$tmp/vegeta" report -type=json <"$tmp/out.bin" | python3 -c '
import json, sys
d = json.load(sys.stdin); l = d["latencies"]
print("\t".join([sys.argv[1], sys.argv[2], sys.argv[3], "%.3f" % (l["50th"] / 1e6), "%.3f" % (l["99th"] / 1e6),
                 "%.4f" % d["success"], "%.0f" % d["throughput"]]))' "$round" "$t" "$r" >>"$results"
			log "round $round $t $r: $(tail -1 "$results" | cut -f4-7 | tr '\t' ' ') (p50 ms, p99 ms, success, req/s)"
		done
		if [[ -n ${PEAK:-} ]]; then
			wrk -t2 -c32 -d"$DURATION" --latency -H "Authorization: Bearer $token" \
				"http://127.0.0.1:${port[$t]}/items/42" >"$tmp/wrk.out"
			rps=$(awk '/^Requests\/sec/ {print $2}' "$tmp/wrk.out")
			p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")")
			printf '%s\t%s\t%s\t%s\n' "$round" "$t" "$rps" "$p99" >>"$tmp/peak.tsv"
			log "round $round $t peak: $rps req/s, p99 $p99 ms"
		fi
	done
done

printf '\n%s at %s/s, %s x %s rounds (%s), commit %s\n\n' "cached reads" "$RATE" "$DURATION" "$ROUNDS" \
	"$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
	"$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo '+changes')"
python3 - "$results" "${targets[@]}" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
targets = sys.argv[2:]
med = {}
print("| target | route | p50 ms | p99 ms | success | req/s |")
print("|---|---|--:|--:|--:|--:|")
for r in ("/items/42", "/data"):
    for t in targets:
        sel = [x for x in rows if x[1] == t and x[2] == r]
        p50 = statistics.median(float(x[3]) for x in sel)
        p99 = statistics.median(float(x[4]) for x in sel)
        ok = min(float(x[5]) for x in sel)
        rps = statistics.median(float(x[6]) for x in sel)
        med[t, r] = (p50, p99)
        print(f"| {t} | {r} | {p50:.3f} | {p99:.3f} | {ok:.4f} | {rps:.0f} |")
print()
print("| ratio to standalone | route | p50 (goal <= 1.2) | p99 (goal <= 1.5) |")
print("|---|---|--:|--:|")
for t in targets:
    if t == "standalone":
        continue
    for r in ("/items/42", "/data"):
        a, b = med[t, r], med["standalone", r]
        print(f"| {t} | {r} | {a[0] / b[0]:.2f} | {a[1] / b[1]:.2f} |")
EOF
if [[ -n ${PEAK:-} ]]; then
	python3 - "$tmp/peak.tsv" "${targets[@]}" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
targets = sys.argv[2:]
print()
print("| peak, wrk -t2 -c32, /items/42 | req/s | p99 ms | req/s ratio to up |")
print("|---|--:|--:|--:|")
med = {t: (statistics.median(float(x[2]) for x in rows if x[1] == t),
           statistics.median(float(x[3]) for x in rows if x[1] == t)) for t in targets}
for t in targets:
    print(f"| {t} | {med[t][0]:.0f} | {med[t][1]:.2f} | {med[t][0] / med['up'][0]:.2f} |")
EOF
fi
