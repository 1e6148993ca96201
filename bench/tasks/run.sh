#!/usr/bin/env bash
# bench/tasks/run.sh — issue #3 "Measure": no-op tasks through
#   1. scalelab end to end (POST /longtask → balancer → gateway → TASKS →
#      worker → record "succeeded"),
#   2. Asynq v0.26.0 on Redis (Debian's redis-server),
#   3. raw JetStream (`nats bench js pub async` + `nats bench js consume`),
# on this machine, 127.0.0.1 only, rounds interleaved, then a Markdown table
# of medians. One run, bounded: it starts no new round once BUDGET seconds
# have gone, and every step has its own timeout.
#
# Usage, from anywhere:  bash bench/tasks/run.sh
# Knobs (environment):   N=10000 C=32 ROUNDS=5 WORKERS=2 WORKER_CONCURRENCY=4
#                        RATE=500 N_PACED=2000 (paced latency runs; RATE=0: none)
#                        BUDGET=420 (s) JS_DOUBLEACK=1 PROFILE=1 KEEP_TMP=0
#                        ASYNQ_TASK_CHECK_INTERVAL=0 (Asynq default 1s)
#                        ASYNQ_TUNED=10ms (a second Asynq, polling an empty
#                        queue this often; empty: none)
#                        ASYNQ_RETENTION=24h (0: delete tasks when done)
#                        BUILD_FROM=worktree (head: the last commit)
#                        SCALELAB_BIN=path (benchmark this binary; no build)
#                        BASELINE=<commit> (also scalelab as of that commit,
#                        built with git archive, as a second `up` on its own
#                        ports: the systems scalelab_baseline and, with RATE,
#                        scalelab_baseline_paced run in the same rounds)
#                        SYSTEMS="scalelab asynq ..." (a subset; default all:
#                        scalelab, scalelab_sdk (submitted with the Go SDK
#                        over NATS), asynq, jetstream, and the ones above)
#                        CLIENT=fasthttp (the driver's HTTP client; or net/http)
#                        OBSERVE=after (the driver reads outcomes once the
#                        queue is drained; watch: watches the bucket live)
#                        REPORT=path.md (also keep the report and raw results)
#
# Durability, the same kind on both sides: JetStream's file store (the TASKS
# stream and the tasks bucket) writes every message to its files at once and
# fsyncs them every 2 minutes by default; Redis runs with appendonly yes and
# appendfsync everysec (its documented "durable" setting: at most a second
# of writes lost on a crash), which fsyncs more often than JetStream does.
set -euo pipefail

N=${N:-10000}
C=${C:-32}
ROUNDS=${ROUNDS:-5}
RATE=${RATE:-500}
N_PACED=${N_PACED:-2000}
PROFILE=${PROFILE:-1}
WORKERS=${WORKERS:-2}
WORKER_CONCURRENCY=${WORKER_CONCURRENCY:-4}
BUDGET=${BUDGET:-420}
JS_DOUBLEACK=${JS_DOUBLEACK:-1}
KEEP_TMP=${KEEP_TMP:-0}
ASYNQ_TASK_CHECK_INTERVAL=${ASYNQ_TASK_CHECK_INTERVAL:-0}
ASYNQ_RETENTION=${ASYNQ_RETENTION:-24h}
ASYNQ_TUNED=${ASYNQ_TUNED-10ms}
TOTAL_WORKERS=$((WORKERS * WORKER_CONCURRENCY))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
HERE=$ROOT/bench/tasks
TMP=$(mktemp -d /tmp/scalelab-bench.XXXXXX)
RES=$TMP/results.jsonl
SECONDS=0

say() { printf '[%4ds] %s\n' "$SECONDS" "$*" >&2; }

PIDS=()
cleanup() {
	# scalelab drains on SIGTERM; stop gives it a moment, then insists.
	((${#PIDS[@]})) && stop TERM "${PIDS[@]}"
	if [[ $KEEP_TMP == 1 ]]; then
		say "kept $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prerequisites -----------------------------------------------------------
if ! command -v redis-server >/dev/null; then
	if [[ $(id -u) != 0 ]]; then
		echo "run.sh: redis-server is missing; install Debian's redis-server (apt-get install -y redis-server)" >&2
		exit 1
	fi
	say "installing redis-server (Debian)"
	timeout 300 apt-get update -qq
	DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq redis-server >/dev/null
fi

say "building scalelab, the driver and asynqbench"
# Others edit the product while benchmarks run: if the work tree does not
# build, fall back to the last commit (git archive, read-only on the repo)
# and say so in the report. BUILD_FROM=head always builds the last commit.
SCALELAB_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')
build_head() {
	mkdir -p "$TMP/src"
	(cd "$ROOT" && git archive HEAD) | tar -x -C "$TMP/src"
	(cd "$TMP/src" && timeout 300 go build -o "$TMP/scalelab" .)
	SCALELAB_REV="$SCALELAB_REV (last commit)"
}
if [[ -n ${SCALELAB_BIN:-} ]]; then
	cp "$SCALELAB_BIN" "$TMP/scalelab"
	SCALELAB_REV="binary $SCALELAB_BIN"
elif [[ ${BUILD_FROM:-worktree} == head ]]; then
	build_head
elif (cd "$ROOT" && timeout 300 go build -o "$TMP/scalelab" . 2>"$TMP/build.err"); then
	(cd "$ROOT" && git diff --quiet HEAD -- . ':!bench' 2>/dev/null) || SCALELAB_REV="$SCALELAB_REV + uncommitted work tree"
else
	say "the work tree does not build; benchmarking the last commit instead:"
	head -5 "$TMP/build.err" >&2
	build_head
fi
if [[ -n ${BASELINE:-} ]]; then
	BASELINE_REV=$(cd "$ROOT" && git rev-parse --short "$BASELINE")
	say "building the baseline, scalelab at $BASELINE ($BASELINE_REV)"
	mkdir -p "$TMP/base-src"
	(cd "$ROOT" && git archive "$BASELINE") | tar -x -C "$TMP/base-src"
	(cd "$TMP/base-src" && timeout 300 go build -o "$TMP/scalelab-baseline" .)
fi
# One module (bench/tasks/go.mod), two programs: $TMP/driver, $TMP/asynqbench.
(cd "$HERE" && timeout 300 go build -o "$TMP/" ./driver ./asynqbench)
nats() { (cd "$ROOT" && timeout 120 go tool nats "$@"); }
nats --version >/dev/null # the first run compiles the CLI
ASYNQ_VERSION=$(cd "$HERE" && go list -m -f '{{.Version}}' github.com/hibiken/asynq)
NATS_SERVER_VERSION=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)

# Anything else running skews every number: say so up front.
cpu_busy_pct() { # share of all CPUs busy over one second, from /proc/stat
	local a b
	read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
	sleep 1
	read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
	a=$((b1 + b2 + b3 + b6 + b7 - a1 - a2 - a3 - a6 - a7))
	b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8 - a1 - a2 - a3 - a4 - a5 - a6 - a7 - a8))
	echo $((b > 0 ? 100 * a / b : 0))
}
IDLE_BUSY=$(cpu_busy_pct)
if ((IDLE_BUSY > 15)); then
	say "warning: the machine is already ${IDLE_BUSY}% busy before the benchmark starts; results will be noisy"
fi

# ---- redis -------------------------------------------------------------------
REDIS_PORT=$("$TMP/driver" freeport)
mkdir -p "$TMP/redis"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$TMP/redis" \
	--appendonly yes --appendfsync everysec --save '' \
	--protected-mode yes --daemonize no --logfile "$TMP/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
for _ in $(seq 100); do
	redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
	sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping | grep -q PONG || { echo "run.sh: redis did not start" >&2; cat "$TMP/redis.log" >&2; exit 1; }
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
say "redis $REDIS_VERSION on 127.0.0.1:$REDIS_PORT (appendonly yes, appendfsync everysec)"

# ---- scalelab up ---------------------------------------------------------------
# start_up NAME BIN: runs `BIN up` on free ports with its data under
# $TMP/NAME, waits until it prints its banner, and sets NAME_PID,
# NAME_BALANCER, NAME_NATS, NAME_TOKEN, NAME_PASSWORD (the operator's NATS
# password, for the driver's reads of the tasks bucket) and NAME_VARZ.
start_up() {
	local name=$1 bin=$2 http_port pid out=$TMP/$1.out
	http_port=$("$TMP/driver" freeport)
	# No rate limits: one client sends everything, far past the defaults.
	SCALELAB_RATE_LIMIT_IP=0 SCALELAB_RATE_LIMIT_SUBJECT=0 \
		"$bin" up --data "$TMP/$name" --addr 127.0.0.1:0 \
		--gateway-addrs 127.0.0.1:0,127.0.0.1:0 --dbsvc-addr 127.0.0.1:0 --cachesvc-addr 127.0.0.1:0 \
		--admin-addr 127.0.0.1:0 \
		--nats-port -1 --nats-http-port "$http_port" --seed-rows 1000 --log-level warn \
		--workers "$WORKERS" --worker-concurrency "$WORKER_CONCURRENCY" \
		>"$out" 2>"$TMP/$name.err" &
	pid=$!
	PIDS+=("$pid")
	for _ in $(seq 1200); do
		grep -q '^export TOKEN=' "$out" 2>/dev/null && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! grep -q '^export TOKEN=' "$out"; then
		echo "run.sh: $bin up did not come up" >&2
		tail -20 "$TMP/$name.err" >&2
		exit 1
	fi
	printf -v "${name}_PID" %s "$pid"
	printf -v "${name}_TOKEN" %s "$(sed -n 's/^export TOKEN=//p' "$out")"
	printf -v "${name}_BALANCER" %s "$(awk '$1 == "balancer" { print $2 }' "$out")"
	printf -v "${name}_NATS" %s "$(awk '$1 == "nats" { print $2 }' "$out")"
	printf -v "${name}_PASSWORD" %s "$(sed -n 's/^export NATS_CONTEXT=.* SCALELAB_NATS_PASSWORD=//p' "$out")"
	printf -v "${name}_VARZ" %s "http://127.0.0.1:$http_port/varz"
}
start_up up "$TMP/scalelab"
UP_PID=$up_PID BALANCER=$up_BALANCER NATS_URL=$up_NATS VARZ=$up_VARZ
export SCALELAB_NATS_USER=admin
say "scalelab up: balancer $BALANCER, nats $NATS_URL, $WORKERS workers × $WORKER_CONCURRENCY"
if [[ -n ${BASELINE:-} ]]; then
	start_up base "$TMP/scalelab-baseline"
	say "baseline up ($BASELINE_REV): balancer $base_BALANCER, nats $base_NATS"
fi

# ---- the three systems -----------------------------------------------------------
# run_scalelab ROUND [N RATE [OUT]]: the driver submits through the balancer
# and reads the outcomes from the tasks bucket once the queue is drained
# (OBSERVE=watch: watches the bucket live instead).
run_scalelab() { drive up scalelab "$@"; }

# drive UP SYSTEM ROUND [N RATE [OUT]]: the driver against the `up` that
# start_up named UP, its results recorded as SYSTEM.
drive() {
	local up=$1 sys=$2
	shift 2
	local -n pid=${up}_PID balancer=${up}_BALANCER nats_url=${up}_NATS token=${up}_TOKEN password=${up}_PASSWORD varz=${up}_VARZ
	SCALELAB_NATS_PASSWORD=$password timeout 300 "$TMP/driver" run -system "$sys" -url "$balancer" -token "$token" -nats "$nats_url" \
		-varz "$varz" -pid "$pid" -n "${2:-$N}" -c "$C" -rate "${3:-0}" -round "$1" \
		-out "${4-$RES}" -timeout 4m -client "${CLIENT:-fasthttp}" -observe "${OBSERVE:-after}" -submit "${SUBMIT:-http}" ||
		say "$sys round $1 failed (see above)"
}
run_scalelab_baseline() { drive base scalelab-baseline "$@"; }
# run_scalelab_sdk ROUND: the same up, tasks submitted with the Go SDK's
# NATS client (client.NewNATS) instead of POST /longtask: no HTTP.
run_scalelab_sdk() { SUBMIT=sdk-nats drive up scalelab-sdk "$@"; }
run_scalelab_baseline_paced() { drive base scalelab-baseline "$1" "$N_PACED" "$RATE"; }

# run_asynq ROUND [N RATE NAME TASK_CHECK_INTERVAL]
run_asynq() {
	timeout 300 "$TMP/asynqbench" -redis "127.0.0.1:$REDIS_PORT" -redis-pid "$REDIS_PID" \
		-n "${2:-$N}" -c "$C" -rate "${3:-0}" -workers "$TOTAL_WORKERS" -round "$1" -out "$RES" -timeout 4m \
		-name "${4:-asynq}" -task-check-interval "${5:-$ASYNQ_TASK_CHECK_INTERVAL}" -retention "$ASYNQ_RETENTION" ||
		say "asynq round $1 failed (see above)"
}

# Asynq's dispatcher sleeps TaskCheckInterval (default 1s, ± half) whenever
# it finds the queue empty, which is at the start of every run and all the
# time in a paced run. The tuned variant shows Asynq without that sleep.
run_asynq_tuned() { run_asynq "$1" "$N" 0 "asynq-poll$ASYNQ_TUNED" "$ASYNQ_TUNED"; }
run_asynq_tuned_paced() { run_asynq "$1" "$N_PACED" "$RATE" "asynq-poll$ASYNQ_TUNED" "$ASYNQ_TUNED"; }

# Paced runs: RATE tasks/s, well under either system's ceiling, so latency
# is the pipeline's own and not the backlog of a flat-out run.
run_scalelab_paced() { run_scalelab "$1" "$N_PACED" "$RATE"; }
run_asynq_paced() { run_asynq "$1" "$N_PACED" "$RATE"; }

# Raw JetStream on scalelab's own embedded server: a file-storage stream, N
# 128-byte messages published asynchronously, then consumed by a durable pull
# consumer with explicit acks. Each round uses fresh streams and removes them.
run_jetstream() {
	local r=$1 s=BENCH_R$1
	if nats -s "$NATS_URL" --user admin --password "$up_PASSWORD" bench js pub async "bench.r$r" --create --storage file --stream "$s" \
		--msgs "$N" --size 128B --no-progress --csv "$TMP/pub$r.csv" >"$TMP/js$r.log" 2>&1 &&
		nats -s "$NATS_URL" --user admin --password "$up_PASSWORD" bench js consume --stream "$s" --msgs "$N" --acks explicit \
			--no-progress --csv "$TMP/cons$r.csv" >>"$TMP/js$r.log" 2>&1; then
		"$TMP/driver" natscsv -system jetstream-pub -round "$r" -n "$N" -file "$TMP/pub$r.csv" -out "$RES"
		"$TMP/driver" natscsv -system jetstream-consume -round "$r" -n "$N" -file "$TMP/cons$r.csv" -out "$RES"
	else
		say "jetstream round $r failed:"
		tail -5 "$TMP/js$r.log" >&2
	fi
	nats -s "$NATS_URL" --user admin --password "$up_PASSWORD" stream rm -f "$s" >/dev/null 2>&1 || true
	if [[ $JS_DOUBLEACK == 1 ]]; then
		# What a single serial consumer gets when it waits for each ack
		# (DoubleAck), one message at a time, as scalelab's workers did
		# until they switched to a plain ack.
		s=BENCH_DA_R$r
		if nats -s "$NATS_URL" --user admin --password "$up_PASSWORD" bench js pub async "bench.da$r" --create --storage file --stream "$s" \
			--msgs "$N" --size 128B --no-progress >"$TMP/jsda$r.log" 2>&1 &&
			nats -s "$NATS_URL" --user admin --password "$up_PASSWORD" bench js consume --stream "$s" --msgs "$N" --acks explicit --doubleack \
				--no-progress --csv "$TMP/consda$r.csv" >>"$TMP/jsda$r.log" 2>&1; then
			"$TMP/driver" natscsv -system jetstream-consume-doubleack -round "$r" -n "$N" -file "$TMP/consda$r.csv" -out "$RES"
		else
			say "jetstream doubleack round $r failed:"
			tail -5 "$TMP/jsda$r.log" >&2
		fi
		nats -s "$NATS_URL" --user admin --password "$up_PASSWORD" stream rm -f "$s" >/dev/null 2>&1 || true
	fi
}

systems=(scalelab scalelab_sdk asynq jetstream)
[[ -n $ASYNQ_TUNED ]] && systems+=(asynq_tuned)
[[ -n ${BASELINE:-} ]] && systems+=(scalelab_baseline)
if ((RATE > 0)); then
	systems+=(scalelab_paced asynq_paced)
	[[ -n $ASYNQ_TUNED ]] && systems+=(asynq_tuned_paced)
	[[ -n ${BASELINE:-} ]] && systems+=(scalelab_baseline_paced)
fi
if [[ -n ${SYSTEMS:-} ]]; then
	read -r -a systems <<<"$SYSTEMS"
fi
round_secs=0
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r > 1 && SECONDS + round_secs > BUDGET)); then
		say "time budget ($BUDGET s) reached: stopping after $((r - 1)) rounds"
		break
	fi
	t0=$SECONDS
	# Rotate the order so no system always runs first (or right after another).
	for ((k = 0; k < ${#systems[@]}; k++)); do
		sys=${systems[$(((r - 1 + k) % ${#systems[@]}))]}
		say "round $r: $sys"
		"run_$sys" "$r"
	done
	round_secs=$((SECONDS - t0))
	kill -0 "$UP_PID" 2>/dev/null || { echo "run.sh: scalelab up died" >&2; tail -20 "$TMP/up.err" >&2; break; }
done

# ---- profile -------------------------------------------------------------------
# One more flat-out scalelab run, not measured, under `perf record` (Debian's
# linux-perf; skipped without it): where scalelab's CPU goes, by the
# cumulative share of a few entry points. The shares overlap (a syscall
# made by the worker counts for both).
profile_scalelab() {
	perf record -F 499 -g -p "$UP_PID" -o "$TMP/perf.data" >"$TMP/perf.log" 2>&1 &
	local pp=$!
	sleep 0.5
	run_scalelab 0 "$N" 0 "" 2>/dev/null
	kill -INT "$pp" 2>/dev/null || true
	wait "$pp" 2>/dev/null || true
	timeout 120 perf report -i "$TMP/perf.data" --stdio --children --sort sym -g none --percent-limit 0 \
		>"$TMP/perf.txt" 2>/dev/null || return 0
	share() { awk -v s="$1" '$4 == s { print $1; exit }' "$TMP/perf.txt"; }
	echo "| where scalelab up's CPU goes (perf, cumulative, overlapping) | share of samples |"
	echo "|---|---|"
	local line label sym
	while IFS='|' read -r label sym; do
		line=$(share "$sym")
		if [[ -n $line ]]; then echo "| $label | $line |"; fi
	done <<-'EOF'
		all HTTP servers (balancer + 2 gateways), net/http conn.serve|net/http.(*conn).serve
		balancer: reverse proxy to a gateway|github.com/scalelab/scalelab/balancer.(*balancer).ServeHTTP
		balancer: HTTP client side (Transport persistConn loops)|net/http.(*persistConn).writeLoop
		gateway: echo, middleware + handlers|github.com/labstack/echo/v4.(*Echo).ServeHTTP
		gateway: JWT verify per request|github.com/scalelab/scalelab/internal/auth.(*Verifier).Verify
		gateway: POST /longtask handler (KV create + publish)|github.com/scalelab/scalelab/gateway.routes.handleSubmitTask.func7
		worker: pull loop (pull + handle)|github.com/scalelab/scalelab/worker.(*runner).pull
		worker: record updates (KV get + compare-and-set)|github.com/scalelab/scalelab/worker.(*runner).update
		nats-server: client read loops (parse, route, JS API)|github.com/nats-io/nats-server/v2/server.(*client).readLoop
		nats-server: client write loops|github.com/nats-io/nats-server/v2/server.(*client).writeLoop
		nats-server: stream internal loop (store messages)|github.com/nats-io/nats-server/v2/server.(*stream).internalLoop
		nats-server: file store writes|github.com/nats-io/nats-server/v2/server.(*fileStore).storeRawMsg
		nats.go clients: read loops|github.com/nats-io/nats%2ego.(*Conn).readLoop
		nats.go clients: flushers (socket writes)|github.com/nats-io/nats%2ego.(*Conn).flusher
		encoding/json (Marshal + Unmarshal)|encoding/json.Unmarshal
		garbage collector (background mark workers)|runtime.gcBgMarkWorker
		scheduler (runtime.mcall: park, switch)|runtime.mcall
		kernel: all system calls|do_syscall_64
		kernel: TCP sends over loopback|tcp_sendmsg
	EOF
}

# ---- report ----------------------------------------------------------------------
if [[ ! -s $RES ]]; then
	echo "run.sh: no results" >&2
	exit 1
fi
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
{
	echo "## bench/tasks results, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "Machine: $(nproc) cores ($CPU_MODEL), shared by the load driver and the system under test;" \
		"${IDLE_BUSY}% busy with other work just before the run."
	paced_note=""
	((RATE > 0)) && paced_note=" ($N_PACED per paced run at $RATE/s)"
	echo "N = $N no-op tasks per flat-out run$paced_note, C = $C submitters at once, $TOTAL_WORKERS task workers on each side" \
		"(scalelab: $WORKERS workers × $WORKER_CONCURRENCY; Asynq: Concurrency $TOTAL_WORKERS), medians over rounds, rounds interleaved."
	echo "Versions: scalelab $SCALELAB_REV, nats-server $NATS_SERVER_VERSION (embedded)," \
		"Asynq $ASYNQ_VERSION, redis-server $REDIS_VERSION (appendonly yes, appendfsync everysec)."
	echo "Asynq settings: TaskCheckInterval $([[ $ASYNQ_TASK_CHECK_INTERVAL == 0 ]] && echo 'default (1s)' || echo "$ASYNQ_TASK_CHECK_INTERVAL"), Retention $ASYNQ_RETENTION."
	echo
	"$TMP/driver" report -in "$RES" -asynq-version "$ASYNQ_VERSION"
	echo
	if [[ $PROFILE == 1 ]] && command -v perf >/dev/null && kill -0 "$UP_PID" 2>/dev/null; then
		profile_scalelab
		echo
	fi
	# Peak resident memory (VmHWM) of the servers over the whole run.
	peak_rss() { awk '/^VmHWM:/ { printf "%.0f MB", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"; }
	echo "Peak resident memory: scalelab up $(peak_rss "$UP_PID"), redis-server $(peak_rss "$REDIS_PID")."
	echo
	echo "Run in $SECONDS s: bash bench/tasks/run.sh (N=$N C=$C ROUNDS=$ROUNDS)."
} | tee "$TMP/report.md"
if [[ -n ${REPORT:-} ]]; then
	cp "$TMP/report.md" "$REPORT"
	cp "$RES" "${REPORT%.md}.jsonl"
fi
