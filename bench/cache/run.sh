#!/usr/bin/env bash
# bench/cache/run.sh: scalelab's cache tiers against each other and against
# the lab's Flask stack (issue #5), on this machine.
#
# Starts three `scalelab up`, one per gateway cache mode (off, kv, kv+local),
# each on its own ports and data directory, and the lab's cache.py,
# database.py, api_gateway.py and load_balancer.py (extracted at run time
# from the lab's Markdown, run unmodified by Debian's python3 and Flask).
# Then runs wrk against:
#
#   lab   /data        the lab's gateway directly, its cache warm: the lab's
#                      balancer answers with a 307 redirect, which wrk does
#                      not follow, so there is nothing to measure through it
#   <mode> /data       scalelab's balancer, one `up` per mode
#   <mode> /items/{id} ids 1..1000 drawn from Zipf(s=1.1) per request (zipf.lua)
#   ceiling /data      bench/backend, a trivial Go HTTP server, directly: no
#                      balancer, gateway, token or cache; no cache tier can
#                      make a route faster, so ceiling / off bounds what any
#                      cache could multiply /items' throughput by here
#   twohop /data       `scalelab balancer` in front of that bench/backend: the
#                      two-hop ceiling as issue #29 words it, but a process of
#                      its own over loopback TCP, which `up` is not
#   front /data        bench/backend -front: `up`'s front door (the balancer in
#                      the same process, a loop per core, abstract Unix sockets)
#                      in front of two trivial servers: the two-hop ceiling of
#                      `up` itself, what a cached read through the balancer and
#                      a gateway that did nothing would cost
#
# Every round runs each target once, in a rotating order; the table shows
# medians over the rounds, with, counted around each run: database queries
# per request (dbsvc's scalelab_db_queries_total; the lab's database.py
# access log), the hit ratio and the near-cache's share (cachesvc's GET
# /cache tiers; the lab's cache.py access log), and the CPU time the serving
# processes spent per request (scalelab's `up`; the lab's gateway, cache and
# database), which other load on the machine disturbs less than req/s.
#
# Then the issue's latency goal, HALF_ROUNDS times: wrk measures kv+local
# /items/{id}'s peak again (the load on the machine at that moment), then
# vegeta v12.13.0 sends a constant FRACTIONS of it (wrk has no constant rate
# and Debian has no wrk2), and right after the same rate to bench/backend, a
# trivial Go HTTP server: the floor, what vegeta and the machine alone cost;
# then to the two-hop ceiling, whose p99 issue #29 compares with.
# vegeta spends more CPU per request than wrk, on the same cores, so a
# fraction of wrk's peak can be nearly all that vegeta and the server manage
# together; each round therefore also measures the peak vegeta itself
# reaches (-rate=0) and sends FRACTIONS of that, with its floor.
#
# Everything listens on 127.0.0.1 and is stopped on exit. Not part of CI.
# Needs root only to apt-get install what is missing (wrk, jq, python3-flask,
# python3-requests, python3-jwt); needs the Go module proxy once for vegeta.
#
#   bash bench/cache/run.sh                    # 3 rounds of 10 s: about 5-6 minutes
#   FRACTIONS="0.5 0.25" bash bench/cache/run.sh   # also at a quarter of the peak
#   ROUNDS=5 DURATION=15s bash bench/cache/run.sh
#
# Settings (environment):
#   ROUNDS=3 DURATION=10s THREADS=2 CONNS=32   wrk: rounds, -d, -t, -c
#   WRK_TIMEOUT=5s      wrk --timeout: slower responses count as errors
#   WARMUP=2s           wrk run per target before the rounds
#   HALF_ROUNDS=3       peak + constant-rate rounds (0: skip them)
#   HALF_DURATION=$DURATION   -d of the peak run and of each constant-rate run
#   RATE_WARMUP=2       seconds each constant-rate run sends first and leaves
#                       out of its figures: vegeta opens its connections then
#   FRACTIONS=0.5       fractions of the peak to send at a constant rate
#   VEGETA_WORKERS=256  vegeta -max-workers and -max-connections: past that
#                       many requests in flight vegeta cannot hold the rate
#                       (the req/s column then falls short of the rate asked),
#                       rather than open connections without bound
#   VEGETA_PEAK_WORKERS=32   vegeta -max-workers of its own peak run (-rate=0),
#                       of which FRACTIONS are sent again at a constant rate
#   ZIPF_S=1.1 ITEMS=1000
#   LAB_DEBUG=1         run the lab's files as written (app.run(debug=True):
#                       the debugger and the reloader); 0: `flask run` without them
#   LAB_SEED=$(git rev-parse --show-toplevel)/../shared/seed/lab4-scalability.md
#   PORT_BASE=15000     scalelab mode i (0 off, 1 kv, 2 kv+local) gets gateways
#                       PORT_BASE+100i+{0,3}, dbsvc +2, cachesvc +4 and its
#                       balancer PORT_BASE+3000+100i; the lab keeps its own
#                       ports (5000-5005, 8000), which must be free
#   MAX_TIME=1200       seconds before the whole run is stopped
#   SETTLE_BUSY=15 SETTLE_MAX=30   before each run, wait (at most SETTLE_MAX
#                       s) until the machine is under SETTLE_BUSY % busy
#
# The gateways' rate limits are turned off (SCALELAB_RATE_LIMIT_IP=0,
# SCALELAB_RATE_LIMIT_SUBJECT=0): from one client IP they would answer most
# of the load with 429.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
WRK_TIMEOUT=${WRK_TIMEOUT:-5s}
WARMUP=${WARMUP:-2s}
HALF_ROUNDS=${HALF_ROUNDS:-3}
HALF_DURATION=${HALF_DURATION:-$DURATION}
RATE_WARMUP=${RATE_WARMUP:-2}
FRACTIONS=${FRACTIONS:-0.5}
VEGETA_WORKERS=${VEGETA_WORKERS:-256}
VEGETA_PEAK_WORKERS=${VEGETA_PEAK_WORKERS:-32}
ZIPF_S=${ZIPF_S:-1.1}
ITEMS=${ITEMS:-1000}
LAB_DEBUG=${LAB_DEBUG:-1}
PORT_BASE=${PORT_BASE:-15000}
MAX_TIME=${MAX_TIME:-1200}
SETTLE_BUSY=${SETTLE_BUSY:-15}
SETTLE_MAX=${SETTLE_MAX:-30}
VEGETA=github.com/tsenart/vegeta/v12@v12.13.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
LAB_SEED=${LAB_SEED:-$(git -C "$root" rev-parse --show-toplevel)/../shared/seed/lab4-scalability.md}
tmp=$(mktemp -d /tmp/scalelab-cache.XXXXXX)
pids=()
start_time=$(date +%s)

log() { printf '%s\n' "$*" >&2; }
die() {
	log "cache/run.sh: $*"
	exit 1
}

# stop (bench/lib.sh) ends what start started: each process leads its own
# process group (setsid), so the lab's Flask reloader children go with their
# parent.
cleanup() {
	((${#pids[@]})) && stop TERM "${pids[@]}"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A watchdog bounds the whole run. It leads its own process group, so
# stop ends its sleep too.
# shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
setsid bash -c 'sleep "$1" && echo "cache/run.sh: still running after $1 s; stopping" >&2 && kill -TERM "$2"' \
	watchdog "$MAX_TIME" $$ </dev/null >/dev/null &
pids+=($!)

# --- tools -------------------------------------------------------------------
# The lab runs on Debian's python3 and Flask: /usr/bin/python3, whatever
# python3 is first on PATH (pyenv, a venv).
py=/usr/bin/python3
missing=()
for tool in wrk jq curl; do
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ -x $py ]] || missing+=(python3)
for mod in flask requests jwt; do
	[[ -x $py ]] && "$py" -c "import $mod" 2>/dev/null || missing+=("python3-$mod")
done
if ((${#missing[@]})); then
	[[ $(id -u) == 0 ]] || die "${missing[*]} missing; run as root to apt-get install them"
	log "installing ${missing[*]} ..."
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || die "go is not installed"

# --- ports -------------------------------------------------------------------
modes=(off kv kv+local)
lab_ports=(5000 5001 5002 5003 5004 5005 8000)
declare -A bal gw1 gw2 dbp cp
for i in "${!modes[@]}"; do
	m=${modes[$i]}
	gw1[$m]=$((PORT_BASE + 100 * i))
	gw2[$m]=$((PORT_BASE + 100 * i + 3))
	dbp[$m]=$((PORT_BASE + 100 * i + 2))
	cp[$m]=$((PORT_BASE + 100 * i + 4))
	bal[$m]=$((PORT_BASE + 3000 + 100 * i))
done
# The floor: a trivial Go HTTP server (bench/backend), for the constant-rate
# runs to measure what the machine and vegeta alone cost.
floor_port=$((PORT_BASE + 2900))
twohop_port=$((PORT_BASE + 2901))
front_port=$((PORT_BASE + 2902))
ours=("$floor_port" "$twohop_port" "$front_port")
for m in "${modes[@]}"; do
	ours+=("${bal[$m]}" "${gw1[$m]}" "${gw2[$m]}" "${dbp[$m]}" "${cp[$m]}")
done
for p in "${ours[@]}"; do
	for q in "${lab_ports[@]}"; do
		((p != q)) || die "scalelab port $p is one of the lab's; set PORT_BASE"
	done
done
for p in "${ours[@]}" "${lab_ports[@]}"; do
	if ss -ltnH "sport = :$p" | grep -q .; then
		die "port $p is taken (the lab needs 5000-5005 and 8000; scalelab's follow PORT_BASE=$PORT_BASE)"
	fi
done

# start runs a command in the background, in its own process group, with
# its output in $tmp/<name>.log.
declare -A pid_of
start() { # name, command...
	local name=$1
	shift
	setsid "$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	pid_of[$name]=$!
}

# wait_http waits (at most $2 seconds) until curl gets a 2xx from $1.
wait_http() { # url, seconds, curl options...
	local url=$1 n=$(($2 * 10))
	shift 2
	for _ in $(seq "$n"); do
		curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# --- the lab -----------------------------------------------------------------
[[ -r $LAB_SEED ]] || die "the lab's Markdown is not at $LAB_SEED; set LAB_SEED"
lab=$tmp/lab
mkdir -p "$lab"
# Each file is the first ```python block after its "#### `name.py`" heading.
awk -v dir="$lab" '
	/^#### `[A-Za-z_0-9]+\.py`/ { name = $0; gsub(/^#### `|`.*$/, "", name); want = 1; next }
	want && /^```python/ { out = dir "/" name; inside = 1; want = 0; next }
	inside && /^```/ { inside = 0; close(out); next }
	inside { print > out }
' "$LAB_SEED"
for f in load_balancer api_gateway cache database microservice worker; do
	[[ -s $lab/$f.py ]] || die "no $f.py in $LAB_SEED"
done
# run_lab starts one of the lab's files on its port. As written, each file
# runs app.run(port=..., debug=True); LAB_DEBUG=0 runs it with `flask run`
# (threaded too, no debugger or reloader) to see what debug mode costs.
run_lab() { # file, port
	if [[ $LAB_DEBUG == 1 ]]; then
		start "lab-$1" env -C "$lab" PYTHONDONTWRITEBYTECODE=1 "$py" "$1.py"
	else
		start "lab-$1" env -C "$lab" PYTHONDONTWRITEBYTECODE=1 "$py" -m flask --app "$1" run --port "$2"
	fi
}
log "starting the lab's cache.py, database.py, api_gateway.py (:5000) and load_balancer.py (from $LAB_SEED) ..."
run_lab cache 5004
run_lab database 5002
run_lab api_gateway 5000
run_lab load_balancer 8000
lab_token=$("$py" -c 'import jwt; print(jwt.encode({"sub": "bench"}, "secret", algorithm="HS256"))')

# --- scalelab ----------------------------------------------------------------
rev=$(git -C "$root" rev-parse --short HEAD)
dirty=$(git -C "$root" status --porcelain --untracked-files=no | wc -l)
log "building scalelab ($rev, $dirty modified files) and bench/backend ..."
(cd "$root" && go build -o "$tmp/scalelab" . && go build -o "$tmp/backend" ./bench/backend)
# The gateways' per-IP and per-subject rate limits (1000/s each by default)
# would answer most of wrk's requests with 429: off, through the
# environment, which a build without them ignores.
for m in "${modes[@]}"; do
	mkdir -p "$tmp/data-$m"
	start "up-$m" env SCALELAB_RATE_LIMIT_IP=0 SCALELAB_RATE_LIMIT_SUBJECT=0 \
		"$tmp/scalelab" up --cache "$m" --addr "127.0.0.1:${bal[$m]}" --admin-addr 127.0.0.1:0 \
		--gateway-addrs "127.0.0.1:${gw1[$m]},127.0.0.1:${gw2[$m]}" \
		--dbsvc-addr "127.0.0.1:${dbp[$m]}" --cachesvc-addr "127.0.0.1:${cp[$m]}" \
		--nats-port -1 --nats-http-port 0 --data "$tmp/data-$m" \
		--shutdown-timeout 2s --log-format json --log-level warn
done

start floor "$tmp/backend" -addr "127.0.0.1:$floor_port"
# The two-hop ceiling: the balancer of `up`, as a process of its own, in
# front of the trivial server.
start twohop env SCALELAB_ADMIN_ADDR=127.0.0.1:0 "$tmp/scalelab" balancer --addr "127.0.0.1:$twohop_port" \
	--backends "http://127.0.0.1:$floor_port" --log-format json --log-level warn
start front "$tmp/backend" -addr "127.0.0.1:$front_port" -front

# vegeta, for the constant-rate runs, is built while the rest starts.
vegeta=
if ((HALF_ROUNDS > 0)); then
	log "building vegeta ($VEGETA) ..."
	if (cd "$tmp" && GOBIN="$tmp/bin" GOFLAGS='' go install "$VEGETA") >"$tmp/vegeta-build.log" 2>&1; then
		vegeta=$tmp/bin/vegeta
	else
		log "warning: could not build vegeta; the constant-rate runs are skipped:"
		tail -5 "$tmp/vegeta-build.log" >&2
	fi
fi

declare -A token
for m in "${modes[@]}"; do
	for _ in $(seq 1200); do
		token[$m]=$(sed -n 's/^export TOKEN=//p' "$tmp/up-$m.log")
		[[ -n ${token[$m]} ]] && break
		kill -0 "${pid_of[up-$m]}" 2>/dev/null || break
		sleep 0.1
	done
	if [[ -z ${token[$m]} ]]; then
		log "cache/run.sh: scalelab up --cache $m did not print its token; its log:"
		tail -20 "$tmp/up-$m.log" >&2
		exit 1
	fi
done

for m in "${modes[@]}"; do
	for path in /data /items/1; do
		wait_http "http://127.0.0.1:${bal[$m]}$path" 60 -H "Authorization: Bearer ${token[$m]}" ||
			die "scalelab --cache $m does not answer $path with a 2xx: $(curl -s --max-time 5 \
				-H "Authorization: Bearer ${token[$m]}" "http://127.0.0.1:${bal[$m]}$path")"
	done
done
wait_http "http://127.0.0.1:$floor_port/data" 60 || die "bench/backend does not answer: $(tail -5 "$tmp/floor.log")"
wait_http "http://127.0.0.1:$twohop_port/data" 60 || die "the two-hop balancer does not answer: $(tail -5 "$tmp/twohop.log")"
wait_http "http://127.0.0.1:$front_port/data" 60 || die "bench/backend -front does not answer: $(tail -5 "$tmp/front.log")"
wait_http http://127.0.0.1:5004/cache/x 60 || die "the lab's cache.py does not answer: $(tail -5 "$tmp/lab-cache.log")"
wait_http http://127.0.0.1:5002/db 60 || die "the lab's database.py does not answer: $(tail -5 "$tmp/lab-database.log")"
wait_http http://127.0.0.1:5000/data 60 -H "Authorization: $lab_token" ||
	die "the lab's api_gateway.py does not answer: $(tail -5 "$tmp/lab-api_gateway.log")"
redirect=$(curl -s -o /dev/null --max-time 5 -w '%{http_code} %{redirect_url}' -H "Authorization: $lab_token" http://127.0.0.1:8000/data || true)
first=$(curl -s --max-time 5 -H "Authorization: $lab_token" http://127.0.0.1:5000/data)
second=$(curl -s --max-time 5 -H "Authorization: $lab_token" http://127.0.0.1:5000/data)
grep -Eq '"cached": ?true' <<<"$second" || die "the lab's /data is not cached after a first call: $first / $second"

# --- targets -------------------------------------------------------------------
targets=(lab:data)
for m in "${modes[@]}"; do
	targets+=("$m:data" "$m:items")
done
# The ceiling: the trivial Go server (bench/backend) directly, under the same
# wrk load: no balancer, no gateway, no token, no cache. No cache tier can
# make a route faster than that, so ceiling / off is the most a cache could
# multiply /items' throughput by on this machine.
targets+=(ceiling:data)
# The two-hop ceiling (issue #29): the same balancer in front of that
# trivial server. A cached read goes through the balancer and a gateway;
# the goal is at least 0.85x this.
targets+=(twohop:data)
# The same, as `up` runs its front door: the balancer in the process of the
# servers behind it, over Unix sockets (bench/backend -front).
targets+=(front:data)
# wrk_args prints, one per line, the wrk arguments (after the common ones)
# that reach target t.
wrk_args() {
	local m=${1%%:*} r=${1#*:}
	if [[ $m == lab ]]; then
		printf '%s\n' -H "Authorization: $lab_token" http://127.0.0.1:5000/data
	elif [[ $m == ceiling ]]; then
		printf '%s\n' "http://127.0.0.1:$floor_port/data"
	elif [[ $m == twohop ]]; then
		printf '%s\n' "http://127.0.0.1:$twohop_port/data"
	elif [[ $m == front ]]; then
		printf '%s\n' "http://127.0.0.1:$front_port/data"
	elif [[ $r == data ]]; then
		printf '%s\n' -H "Authorization: Bearer ${token[$m]}" "http://127.0.0.1:${bal[$m]}/data"
	else
		printf '%s\n' -H "Authorization: Bearer ${token[$m]}" -s "$here/zipf.lua" "http://127.0.0.1:${bal[$m]}" -- "$ITEMS" "$ZIPF_S"
	fi
}

# alive stops the run, with the end of its log, if a named process died.
alive() { # name...
	local name
	for name in "$@"; do
		if ! kill -0 "${pid_of[$name]}" 2>/dev/null; then
			log "cache/run.sh: $name exited during the run; the end of its log:"
			grep -v '^$' "$tmp/$name.log" | tail -5 | cut -c1-300 >&2
			exit 1
		fi
	done
}

# counters prints "queries lookups answered local cpu" for target t so
# far: database queries, cache lookups, lookups a cache tier answered,
# lookups the near-cache answered and CPU clock ticks of the serving
# processes. For scalelab, dbsvc's query counter (every query type),
# cachesvc's tiers (lookups = local hits + kv hits + loads, as GET /cache's
# hit_ratio) and the `up` process; for the lab, its access logs (GET /db,
# GET /cache/my_data), no near-cache, and its gateway, cache and database.
counters() {
	local m=${1%%:*} q local_hits kv_hits loads
	if [[ $m == lab ]]; then
		q=$(grep -c '"GET /db ' "$tmp/lab-database.log" || true)
		loads=$(grep -c '"GET /cache/my_data ' "$tmp/lab-cache.log" || true)
		echo "$q $loads $((loads - q)) 0 $(cpu_ticks lab-api_gateway lab-cache lab-database)"
		return
	fi
	if [[ $m == ceiling ]]; then
		echo "0 0 0 0 $(cpu_ticks floor)"
		return
	fi
	if [[ $m == twohop ]]; then
		echo "0 0 0 0 $(cpu_ticks twohop floor)"
		return
	fi
	if [[ $m == front ]]; then
		echo "0 0 0 0 $(cpu_ticks front)"
		return
	fi
	q=$(curl -fsS --max-time 5 "http://127.0.0.1:${dbp[$m]}/metrics" |
		awk '/^scalelab_db_queries_total/ {s += $2} END {printf "%.0f", s}')
	read -r local_hits kv_hits loads < <(curl -fsS --max-time 5 "http://127.0.0.1:${cp[$m]}/cache" |
		jq -r '"\(.tiers.local.hits // 0) \(.tiers.kv.hits // 0) \(.loads // 0)"')
	if [[ -z $q || -z $local_hits || -z $kv_hits || -z $loads ]]; then
		log "warning: could not read the counters of scalelab --cache $m (dbsvc /metrics, cachesvc /cache)"
	fi
	local_hits=${local_hits:-0} kv_hits=${kv_hits:-0}
	echo "${q:-0} $((local_hits + kv_hits + ${loads:-0})) $((local_hits + kv_hits)) $local_hits $(cpu_ticks "up-$m")"
}

# cpu_ticks prints the CPU time (user + system, in clock ticks) used so far
# by the process groups of the named processes (the lab's Flask reloader
# runs the app in a child).
cpu_ticks() { # name...
	local name pids=()
	for name in "$@"; do
		# shellcheck disable=SC2207 # one word per pid
		pids+=($(pgrep -g "${pid_of[$name]}" || true))
	done
	proc_ticks "${pids[@]}"
}
clk_tck=$(getconf CLK_TCK)

# ratios prints "queries/request hit_ratio local_share cpu_us/request" from
# two counters lines (before, after) and the number of requests between.
ratios() { # before, after, requests
	awk -v b="$1" -v a="$2" -v n="$3" -v hz="$clk_tck" 'BEGIN {
		split(b, x, " "); split(a, y, " ")
		l = y[2] - x[2]
		printf "%.4f %.4f %.4f %.1f\n", n ? (y[1] - x[1]) / n : 0, l ? (y[3] - x[3]) / l : 0,
			l ? (y[4] - x[4]) / l : 0, n ? (y[5] - x[5]) / hz * 1e6 / n : 0
	}'
}

# duration_s converts a wrk/vegeta duration (10s, 2m, 1h) to whole seconds.
duration_s() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /m$/) n *= 60
		else if (v ~ /h$/) n *= 3600
		printf "%d", n
	}'
}

# settle waits, at most SETTLE_MAX seconds, until the machine has been
# nearly idle (under SETTLE_BUSY % of its CPU) for 0.5 s, and logs how long
# that took when it took long. A run must not inherit the work of the one
# before: after /data with the cache off, the requests wrk left in flight
# keep dbsvc computing the 300,000-row aggregate for seconds (3.5 s of CPU
# measured once), which lands on the next target's latencies and CPU.
settle() {
	local start=$SECONDS busy
	while ((SECONDS - start < SETTLE_MAX)); do
		busy=$(cpu_busy 0.5)
		((busy < SETTLE_BUSY)) && break
	done
	if ((SECONDS - start >= 2)); then
		log "  (waited $((SECONDS - start)) s for the machine to settle: ${busy}% busy)"
	fi
}

# prime sends one request to a /data target before its run, as the lab's
# cache was warmed: the lab's dict never expires, scalelab's entries do
# (1 min), and between two runs of one target nothing reads them. Without
# it each run began with the 300,000-row aggregate's ~170 ms, which all 32
# connections wait for, and which wrk's latency correction (it adds the
# requests a stalled connection did not send) spreads into ~1 % of the
# samples: the whole of the p99. /items runs need none: a miss there holds
# up one key's readers for a primary-key read.
prime() { # target
	[[ ${1#*:} == data ]] || return 0
	local -a args
	mapfile -t args < <(wrk_args "$1")
	curl -fsS -o /dev/null --max-time 30 "${args[@]}" || log "warning: priming $1 failed"
}

# cpu_busy prints the share (percent, whole) of all cores' time not idle
# over the next $1 seconds, from /proc/stat.
cpu_busy() { # seconds
	local a b
	a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit}' /proc/stat)
	sleep "$1"
	b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit}' /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		work = y[1] - x[1]; idle = y[2] - x[2]
		printf "%d\n", (work + idle > 0 ? 100 * work / (work + idle) : 0)
	}'
}

mkdir -p "$tmp/res"
# bench runs wrk once against target t for duration d and appends "rps p50
# p99 errors requests queries/request hit_ratio local_share cpu_us/request"
# to $tmp/res/<file>.
bench() { # target, duration, file
	local t=$1 d=$2 file=$3 out args before after
	mapfile -t args < <(wrk_args "$t")
	prime "$t"
	settle
	before=$(counters "$t")
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$d" --timeout "$WRK_TIMEOUT" --latency "${args[@]}")
	if [[ ${t%%:*} == lab ]]; then
		alive lab-api_gateway lab-cache lab-database
	elif [[ ${t%%:*} == ceiling ]]; then
		alive floor
	elif [[ ${t%%:*} == twohop ]]; then
		alive twohop floor
	elif [[ ${t%%:*} == front ]]; then
		alive front
	else
		alive "up-${t%%:*}"
	fi
	after=$(counters "$t")
	local rps p50 p99 errs n qpr hit l1 cpu
	n=$(awk '/requests in/ {print $1}' <<<"$out")
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
	p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
	errs=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
	read -r qpr hit l1 cpu < <(ratios "$before" "$after" "$n")
	echo "$rps $p50 $p99 $errs $n $qpr $hit $l1 $cpu" >>"$tmp/res/$file"
	log "$(printf '  %-14s %9.0f req/s  p50 %8.3f ms  p99 %8.3f ms  errors %-4s db/req %s  hit %s  local %s  cpu %6.1f us/req' \
		"$t" "$rps" "$p50" "$p99" "$errs" "$qpr" "$hit" "$l1" "$cpu")"
}

# summarize sets the medians (the errors summed) of results file f under key k.
declare -A rps p50 p99 errs qpr hit l1 cpu
summarize() { # file, key
	local f=$tmp/res/$1 k=$2
	rps[$k]=$(median "$f" 1)
	p50[$k]=$(median "$f" 2)
	p99[$k]=$(median "$f" 3)
	errs[$k]=$(awk '{n += $4} END {print n + 0}' "$f")
	qpr[$k]=$(median "$f" 6)
	hit[$k]=$(median "$f" 7)
	l1[$k]=$(median "$f" 8)
	cpu[$k]=$(median "$f" 9)
}

# --- measure -------------------------------------------------------------------
cores=$(nproc)
load=$(cut -d' ' -f1-3 /proc/loadavg)
machine="$(uname -srm), $cores cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
log "machine: $machine"
log "load average at the start: $load"
log "lab: its balancer answers GET /data with \"$redirect\" (a redirect, which wrk does not follow):"
log "     the lab's gateway :5000 is measured directly; it runs alone (no second one on :5003)"
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency; $ROUNDS interleaved rounds of ${#targets[@]} targets"
log "warming up (every item id once, then $WARMUP per target) ..."
for m in "${modes[@]}"; do
	wrk -t1 -c4 -d"$WARMUP" -H "Authorization: Bearer ${token[$m]}" -s "$here/zipf.lua" \
		"http://127.0.0.1:${bal[$m]}" -- "$ITEMS" "$ZIPF_S" sweep >/dev/null
done
for t in "${targets[@]}"; do
	mapfile -t args < <(wrk_args "$t")
	wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" --timeout "$WRK_TIMEOUT" "${args[@]}" >/dev/null
done
for round in $(seq "$ROUNDS"); do
	log "round $round/$ROUNDS"
	# Rotate the order so that no target always runs first (or last).
	for i in "${!targets[@]}"; do
		t=${targets[$(((i + round - 1) % ${#targets[@]}))]}
		bench "$t" "$DURATION" "$t"
	done
done
for t in "${targets[@]}"; do
	summarize "$t" "$t"
done

# --- constant rate ---------------------------------------------------------------
# Each round measures kv+local /items/{id}'s peak with wrk (32 connections,
# no pause) and at once sends each fraction of it at a constant rate with
# vegeta, the ids drawn from the same Zipf distribution into a targets file.
# Measuring the peak right before makes "half of peak" half of what the
# machine delivers at that moment, whatever else runs on it.
fractions=()
if [[ -n $vegeta ]]; then
	read -r -a fractions <<<"$FRACTIONS"
	m=kv+local
	awk -v n="$ITEMS" -v s="$ZIPF_S" -v count=200000 -v url="http://127.0.0.1:${bal[$m]}/items/" 'BEGIN {
		srand()
		for (k = 1; k <= n; k++) { sum += k ^ -s; cdf[k] = sum }
		for (i = 0; i < count; i++) {
			u = rand() * sum; lo = 1; hi = n
			while (lo < hi) { mid = int((lo + hi) / 2); if (cdf[mid] < u) lo = mid + 1; else hi = mid }
			printf "GET %s%d\n\n", url, lo
		}
	}' >"$tmp/items.targets"
	log "constant rate: $HALF_ROUNDS rounds of a kv+local /items/{id} peak (wrk) then ${fractions[*]} of it (vegeta), $HALF_DURATION each"
	# vegeta_steady prints "throughput p50 p99 errors requests" of a
	# constant-rate result file, leaving out the requests sent in its first
	# RATE_WARMUP seconds. A vegeta run starts with no connections and opens
	# them as it needs them, up to VEGETA_WORKERS: every server on the
	# machine (the trivial one too) then accepts, allocates and faults in
	# fresh memory at once, and on these guests a page fault costs 10-14 µs.
	# That start is a burst of connections, not the steady load the goal is
	# about. The percentiles are nearest-rank, as vegeta's.
	vegeta_steady() { # file
		local csv=$tmp/steady.csv t0
		"$vegeta" encode --to csv <"$1" >"$csv"
		t0=$(awk -F, 'NR == 1 || $1 < t {t = $1} END {printf "%.0f", t}' "$csv")
		awk -F, -v from="$t0" -v warm="$RATE_WARMUP" '$1 >= from + warm * 1e9 {print $3, $2, $1}' "$csv" |
			sort -g -k1,1 | awk '
				{ l[NR] = $1; if ($2 != 200) errs++; if (NR == 1 || $3 < first) first = $3; if ($3 > last) last = $3 }
				END {
					if (NR == 0) { print "0 0 0 0 0"; exit }
					p50 = l[int(NR * 0.50 + 0.999999)]; p99 = l[int(NR * 0.99 + 0.999999)]
					printf "%.1f %.3f %.3f %d %d\n", (last > first ? (NR - 1) / ((last - first) / 1e9) : NR),
						p50 / 1e6, p99 / 1e6, errs, NR
				}'
	}
	# vegeta_json prints "throughput p50 p99 errors requests" of a vegeta
	# result file (its latencies are in ns).
	vegeta_json() {
		"$vegeta" report -type=json <"$1" | jq -r \
			'"\(.throughput) \(.latencies["50th"] / 1e6) \(.latencies["99th"] / 1e6) \(.requests - (.status_codes["200"] // 0)) \(.requests)"'
	}
	# plain_rate sends rate req/s for d to the /data of the named target
	# (floor, twohop or front; its targets file $tmp/<name>.targets), checks
	# that its processes are alive and appends the result to
	# res/<prefix><name>-<fraction>.
	plain_rate() { # name, rate, fraction, result prefix, duration, description, processes...
		local name=$1 r=$2 f=$3 pre=$4 d=$5 what=$6 tput v50 v99 verrs vn
		shift 6
		settle
		"$vegeta" attack -rate="$r/s" -duration="$d" -timeout="$WRK_TIMEOUT" \
			-max-workers="$VEGETA_WORKERS" -max-connections="$VEGETA_WORKERS" \
			-targets="$tmp/$name.targets" >"$tmp/$name.bin"
		alive "$@"
		read -r tput v50 v99 verrs vn < <(vegeta_steady "$tmp/$name.bin")
		echo "$tput $v50 $v99 $verrs $vn 0 0 0 0 $r" >>"$tmp/res/${pre}$name-$f"
		log "$(printf '  %-8s %-5s %7d/s %7.0f req/s  p50 %8.3f ms  p99 %8.3f ms  errors %-4s (%s)' \
			"$pre$name" "$f" "$r" "$tput" "$v50" "$v99" "$verrs" "$what")"
	}
	# constant_rate sends rate req/s to kv+local /items/{id}, then the same
	# to the trivial server (the latency no server on this machine can beat
	# right now) and to the two-hop ceilings (plain_rate), and appends the
	# results to res/<prefix>rate-<f>, res/<prefix>floor-<f>, ....
	constant_rate() { # rate, fraction, result prefix
		local r=$1 f=$2 pre=$3 before after tput v50 v99 verrs vn qpr1 hit1 l11 cpu1 all
		local d=$(($(duration_s "$HALF_DURATION") + RATE_WARMUP))s
		settle
		before=$(counters "$m:items")
		"$vegeta" attack -rate="$r/s" -duration="$d" -timeout="$WRK_TIMEOUT" \
			-max-workers="$VEGETA_WORKERS" -max-connections="$VEGETA_WORKERS" \
			-header "Authorization: Bearer ${token[$m]}" -targets="$tmp/items.targets" >"$tmp/rate.bin"
		alive "up-$m"
		after=$(counters "$m:items")
		# Counters cover the whole run, warm-up included: divided by all its
		# requests.
		read -r _ _ _ _ all < <(vegeta_json "$tmp/rate.bin")
		read -r tput v50 v99 verrs vn < <(vegeta_steady "$tmp/rate.bin")
		read -r qpr1 hit1 l11 cpu1 < <(ratios "$before" "$after" "$all")
		echo "$tput $v50 $v99 $verrs $vn $qpr1 $hit1 $l11 $cpu1 $r" >>"$tmp/res/${pre}rate-$f"
		log "$(printf '  %srate %-5s %7d/s %7.0f req/s  p50 %8.3f ms  p99 %8.3f ms  errors %-4s db/req %s  hit %s  local %s  cpu %6.1f us/req' \
			"$pre" "$f" "$r" "$tput" "$v50" "$v99" "$verrs" "$qpr1" "$hit1" "$l11" "$cpu1")"
		# The same rate to the trivial server (the floor), then to the two
		# two-hop ceilings, whose p99 issue #29's latency goal compares with.
		plain_rate floor "$r" "$f" "$pre" "$d" "bench/backend, a trivial Go server" floor
		plain_rate twohop "$r" "$f" "$pre" "$d" "scalelab balancer -> bench/backend" twohop floor
		plain_rate front "$r" "$f" "$pre" "$d" "bench/backend -front: up's front door, trivial gateways" front
	}
	echo "GET http://127.0.0.1:$floor_port/data" >"$tmp/floor.targets"
	echo "GET http://127.0.0.1:$twohop_port/data" >"$tmp/twohop.targets"
	echo "GET http://127.0.0.1:$front_port/data" >"$tmp/front.targets"
	for round in $(seq "$HALF_ROUNDS"); do
		bench "$m:items" "$HALF_DURATION" peak
		peak=$(tail -1 "$tmp/res/peak" | cut -d' ' -f1)
		for f in "${fractions[@]}"; do
			r=$(awk -v p="$peak" -v f="$f" 'BEGIN {printf "%d", p * f}')
			((r > 0)) && constant_rate "$r" "$f" ""
		done
		# The peak as vegeta itself reaches it: vegeta costs more CPU per
		# request than wrk, and shares the cores, so a fraction of wrk's
		# peak can be most of what vegeta and the server manage together.
		settle
		"$vegeta" attack -rate=0 -max-workers="$VEGETA_PEAK_WORKERS" -duration="$HALF_DURATION" \
			-timeout="$WRK_TIMEOUT" -header "Authorization: Bearer ${token[$m]}" \
			-targets="$tmp/items.targets" >"$tmp/vpeak.bin"
		read -r tput v50 v99 verrs vn < <(vegeta_json "$tmp/vpeak.bin")
		echo "$tput $v50 $v99 $verrs $vn 0 0 0 0" >>"$tmp/res/vpeak"
		log "$(printf '  vegeta peak     %7.0f req/s  p50 %8.3f ms  p99 %8.3f ms  errors %s' "$tput" "$v50" "$v99" "$verrs")"
		for f in "${fractions[@]}"; do
			r=$(awk -v p="$tput" -v f="$f" 'BEGIN {printf "%d", p * f}')
			((r > 0)) && constant_rate "$r" "$f" v
		done
	done
	summarize peak peak
	declare -A rate
	for f in "${fractions[@]}"; do
		[[ -s $tmp/res/rate-$f ]] || continue
		summarize "rate-$f" "rate-$f"
		rate[$f]=$(median "$tmp/res/rate-$f" 10)
		[[ -s $tmp/res/floor-$f ]] && summarize "floor-$f" "floor-$f"
		[[ -s $tmp/res/twohop-$f ]] && summarize "twohop-$f" "twohop-$f"
		[[ -s $tmp/res/front-$f ]] && summarize "front-$f" "front-$f"
		[[ -s $tmp/res/vrate-$f ]] || continue
		summarize "vrate-$f" "vrate-$f"
		rate[v$f]=$(median "$tmp/res/vrate-$f" 10)
		[[ -s $tmp/res/vfloor-$f ]] && summarize "vfloor-$f" "vfloor-$f"
		[[ -s $tmp/res/vtwohop-$f ]] && summarize "vtwohop-$f" "vtwohop-$f"
		[[ -s $tmp/res/vfront-$f ]] && summarize "vfront-$f" "vfront-$f"
	done
	[[ -s $tmp/res/vpeak ]] && summarize vpeak vpeak
fi

# --- report ----------------------------------------------------------------------
ratio() { # a, b, decimals
	awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else print "n/a" }'
}
verdict() { # value, op (ge|le|lt), goal
	awk -v v="$1" -v op="$2" -v g="$3" 'BEGIN {
		if (v == "n/a") { print "not measured"; exit }
		ok = (op == "ge" && v >= g) || (op == "le" && v <= g) || (op == "lt" && v < g)
		print (ok ? "met" : "not met")
	}'
}
# row prints one table row of the results under key k.
row() { # target, route, cache, key
	printf '| %s | %s | %s | %.0f | %.2f | %.2f | %d | %.4f | %.3f | %.3f | %.0f |\n' "$1" "$2" "$3" \
		"${rps[$4]}" "${p50[$4]}" "${p99[$4]}" "${errs[$4]}" "${qpr[$4]}" "${hit[$4]}" "${l1[$4]}" "${cpu[$4]}"
}
elapsed=$(($(date +%s) - start_time))
echo
echo "Cache tiers, $(date -u +%Y-%m-%d), $machine; load average at the start $load; scalelab $rev" \
	"($dirty modified files); ${elapsed}s"
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, medians of $ROUNDS interleaved rounds;" \
	"scalelab through its balancer (2 gateways), the lab's gateway directly (LAB_DEBUG=$LAB_DEBUG)"
echo
echo "| target | route | cache | req/s | p50 ms | p99 ms | errors | db queries/req | hit ratio | near-cache share | CPU µs/req |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for t in "${targets[@]}"; do
	m=${t%%:*} r=${t#*:}
	route=/data
	[[ $r == items ]] && route="/items/{id} (Zipf $ZIPF_S)"
	if [[ $m == lab ]]; then
		row "lab (Flask)" "$route" "dict (warm)" "$t"
	elif [[ $m == ceiling ]]; then
		printf '| ceiling: bench/backend, a trivial Go HTTP server, directly | its /data | – | %.0f | %.2f | %.2f | %d | – | – | – | %.0f |\n' \
			"${rps[$t]}" "${p50[$t]}" "${p99[$t]}" "${errs[$t]}" "${cpu[$t]}"
	elif [[ $m == twohop ]]; then
		printf '| two-hop ceiling: scalelab balancer → bench/backend | its /data | – | %.0f | %.2f | %.2f | %d | – | – | – | %.0f |\n' \
			"${rps[$t]}" "${p50[$t]}" "${p99[$t]}" "${errs[$t]}" "${cpu[$t]}"
	elif [[ $m == front ]]; then
		printf '| two-hop ceiling of up: its front door → trivial gateways, one process (bench/backend -front) | its /data | – | %.0f | %.2f | %.2f | %d | – | – | – | %.0f |\n' \
			"${rps[$t]}" "${p50[$t]}" "${p99[$t]}" "${errs[$t]}" "${cpu[$t]}"
	else
		row scalelab "$route" "$m" "$t"
	fi
done
if [[ -s $tmp/res/peak ]]; then
	row scalelab "/items/{id}, peak again before the constant-rate runs (wrk)" kv+local peak
fi
# floor_row prints the trivial server's row under key k.
floor_row() { # key
	[[ -n ${p99[$1]:-} ]] &&
		printf '| floor: bench/backend, a trivial Go HTTP server | its /data at the same constant rate (vegeta) | – | %.0f | %.2f | %.2f | %d | – | – | – | – |\n' \
			"${rps[$1]}" "${p50[$1]}" "${p99[$1]}" "${errs[$1]}"
}
# twohop_row prints the two-hop ceilings' rows under key k (twohop-...) and
# its front-... twin.
twohop_row() { # key
	[[ -n ${p99[$1]:-} ]] &&
		printf '| two-hop ceiling: scalelab balancer → bench/backend | its /data at the same constant rate (vegeta) | – | %.0f | %.2f | %.2f | %d | – | – | – | – |\n' \
			"${rps[$1]}" "${p50[$1]}" "${p99[$1]}" "${errs[$1]}"
	local k=${1/twohop/front}
	[[ -n ${p99[$k]:-} ]] &&
		printf '| two-hop ceiling of up (bench/backend -front) | its /data at the same constant rate (vegeta) | – | %.0f | %.2f | %.2f | %d | – | – | – | – |\n' \
			"${rps[$k]}" "${p50[$k]}" "${p99[$k]}" "${errs[$k]}"
}
for f in "${fractions[@]}"; do
	[[ -n ${rate[$f]:-} ]] || continue
	row scalelab "/items/{id} at a constant $f of that peak (median ${rate[$f]} req/s asked, vegeta)" kv+local "rate-$f"
	floor_row "floor-$f"
	twohop_row "twohop-$f"
done
if [[ -n ${rps[vpeak]:-} ]]; then
	printf '| scalelab | /items/{id}, peak as vegeta reaches it (-rate=0, %s workers) | kv+local | %.0f | %.2f | %.2f | %d | – | – | – | – |\n' \
		"$VEGETA_PEAK_WORKERS" "${rps[vpeak]}" "${p50[vpeak]}" "${p99[vpeak]}" "${errs[vpeak]}"
	for f in "${fractions[@]}"; do
		[[ -n ${rate[v$f]:-} ]] || continue
		row scalelab "/items/{id} at a constant $f of vegeta's peak (median ${rate[v$f]} req/s asked, vegeta)" kv+local "vrate-$f"
		floor_row "vfloor-$f"
		twohop_row "vtwohop-$f"
	done
fi
echo
r1=$(ratio "${rps[kv+local:data]}" "${rps[lab:data]}")
r2=$(ratio "${p99[kv+local:data]}" "${p99[lab:data]}" 4)
c1=$(ratio "${cpu[lab:data]}" "${cpu[kv+local:data]}")
r3=$(ratio "${rps[kv+local:data]}" "${rps[off:data]}")
c3=$(ratio "${cpu[off:data]}" "${cpu[kv+local:data]}")
r4=$(ratio "${rps[kv+local:items]}" "${rps[off:items]}")
c4=$(ratio "${cpu[off:items]}" "${cpu[kv+local:items]}")
r5=$(ratio "${rps[kv:items]}" "${rps[off:items]}")
r6=$(ratio "${rps[kv+local:items]}" "${rps[kv:items]}")
r7=$(ratio "${rps[ceiling:data]}" "${rps[off:items]}")
r8=$(ratio "${rps[kv+local:data]}" "${rps[twohop:data]}")
r9=$(ratio "${rps[kv+local:items]}" "${rps[twohop:data]}")
r12=$(ratio "${rps[kv+local:data]}" "${rps[front:data]}")
r13=$(ratio "${rps[kv+local:items]}" "${rps[front:data]}")
c12=$(ratio "${cpu[kv+local:data]}" "${cpu[front:data]}")
c13=$(ratio "${cpu[kv+local:items]}" "${cpu[front:data]}")
half_p99=n/a
[[ -n ${p99[rate-0.5]:-} ]] && half_p99=$(printf '%.3f' "${p99[rate-0.5]}")
floor_p99=n/a
[[ -n ${p99[floor-0.5]:-} ]] && floor_p99=$(printf '%.3f' "${p99[floor-0.5]}")
echo "| ratio | measured | goal | |"
echo "|---|---:|---:|---|"
echo "| /data req/s: scalelab kv+local / lab gateway | ${r1}× | ≥ 50× | $(verdict "$r1" ge 50) |"
echo "| /data p99: scalelab kv+local / lab gateway | ${r2} | ≤ 0.05 | $(verdict "$r2" le 0.05) |"
echo "| /data CPU per request: lab / scalelab kv+local | ${c1}× | (≥ 50×) | $(verdict "$c1" ge 50) |"
echo "| /data req/s: kv+local / off | ${r3}× | ≥ 20× | $(verdict "$r3" ge 20) |"
echo "| /data CPU per request: off / kv+local | ${c3}× | (≥ 20×) | $(verdict "$c3" ge 20) |"
echo "| /items req/s: kv+local / off | ${r4}× | ≥ 20× | $(verdict "$r4" ge 20) |"
echo "| /items CPU per request: off / kv+local | ${c4}× | (≥ 20×) | $(verdict "$c4" ge 20) |"
echo "| /data req/s: kv+local / the two-hop ceiling (#29) | ${r8}× | ≥ 0.85× | $(verdict "$r8" ge 0.85) |"
echo "| /items req/s: kv+local / the two-hop ceiling (#29) | ${r9}× | ≥ 0.85× | $(verdict "$r9" ge 0.85) |"
echo "| /data req/s: kv+local / the two-hop ceiling of up (bench/backend -front) (#29) | ${r12}× | ≥ 0.85× | $(verdict "$r12" ge 0.85) |"
echo "| /items req/s: kv+local / the two-hop ceiling of up (bench/backend -front) (#29) | ${r13}× | ≥ 0.85× | $(verdict "$r13" ge 0.85) |"
echo "| /data CPU per request: kv+local / the two-hop ceiling of up | ${c12}× | – | |"
echo "| /items CPU per request: kv+local / the two-hop ceiling of up | ${c13}× | – | |"
echo "| /items req/s: kv / off | ${r5}× | – | |"
echo "| /items req/s: kv+local / kv | ${r6}× | – | |"
reach=$(verdict "$r7" ge 20)
reach=${reach/#not met/out of reach}
echo "| /items req/s: the ceiling (a trivial server, directly) / off: the most any cache could give | ${r7}× | (≥ 20× for the goal to be reachable) | ${reach/#met/reachable} |"
echo "| /items p99 at half peak (kv+local, constant rate) | ${half_p99} ms | < 2 ms | $(verdict "$half_p99" lt 2) |"
echo "| the floor: a trivial Go server's p99 at the same rate | ${floor_p99} ms | – | |"
if [[ -n ${p99[twohop-0.5]:-} ]]; then
	r10=$(ratio "${p99[rate-0.5]}" "${p99[twohop-0.5]}")
	echo "| /items p99 at half peak: kv+local / the two-hop ceiling at the same rate (#29) | ${r10}× | ≤ 1.5× | $(verdict "$r10" le 1.5) |"
fi
if [[ -n ${p99[front-0.5]:-} ]]; then
	r14=$(ratio "${p99[rate-0.5]}" "${p99[front-0.5]}")
	echo "| /items p99 at half peak: kv+local / the two-hop ceiling of up at the same rate (#29) | ${r14}× | ≤ 1.5× | $(verdict "$r14" le 1.5) |"
fi
if [[ -n ${p99[vrate-0.5]:-} ]]; then
	vhalf_p99=$(printf '%.3f' "${p99[vrate-0.5]}")
	echo "| /items p99 at half of vegeta's own peak (kv+local, constant rate) | ${vhalf_p99} ms | < 2 ms | $(verdict "$vhalf_p99" lt 2) |"
	[[ -n ${p99[vfloor-0.5]:-} ]] &&
		echo "| the floor at that rate | $(printf '%.3f' "${p99[vfloor-0.5]}") ms | – | |"
	if [[ -n ${p99[vtwohop-0.5]:-} ]]; then
		r11=$(ratio "${p99[vrate-0.5]}" "${p99[vtwohop-0.5]}")
		echo "| /items p99 at half of vegeta's peak: kv+local / the two-hop ceiling at that rate (#29) | ${r11}× | ≤ 1.5× | $(verdict "$r11" le 1.5) |"
	fi
	if [[ -n ${p99[vfront-0.5]:-} ]]; then
		r15=$(ratio "${p99[vrate-0.5]}" "${p99[vfront-0.5]}")
		echo "| /items p99 at half of vegeta's peak: kv+local / the two-hop ceiling of up at that rate (#29) | ${r15}× | ≤ 1.5× | $(verdict "$r15" le 1.5) |"
	fi
fi
echo
if ((${#fractions[@]})); then
	echo "Constant-rate rows: each run sent its rate for ${RATE_WARMUP}s more than $HALF_DURATION; its figures leave" \
		"out the requests of the first ${RATE_WARMUP}s, while vegeta opened its connections (RATE_WARMUP)."
fi
echo "CPU µs/req: CPU time of the serving processes (scalelab's whole \`up\`: balancer, gateways, NATS, dbsvc," \
	"cachesvc; the lab's gateway, cache and database) per request; less disturbed by other load than req/s."
if ((cores <= 4)); then
	echo "On $cores cores wrk, vegeta, the lab and the three scalelab instances share the CPU: this compares cost" \
		"per request under contention, not capacity."
fi
