#!/usr/bin/env bash
# bench/lb.sh: scalelab's balancer next to nginx and HAProxy, on this machine.
#
# Starts two identical trivial backends (bench/backend), then nginx, HAProxy
# and `scalelab balancer` on their own ports in front of the same two, and runs
# wrk against each of them and against one backend directly. The targets are
# interleaved (every round runs each once, in a rotating order) and the table
# shows medians over the rounds, with scalelab's ratios to nginx and HAProxy.
#
# Everything listens on 127.0.0.1 and is stopped on exit. Not part of CI.
# Needs root only to apt-get install wrk, nginx and haproxy when missing.
#
#   bash bench/lb.sh                     # 3 rounds of 10 s per target: about 3 minutes
#   ROUNDS=5 DURATION=15s bash bench/lb.sh
#   BASELINE=HEAD~1 bash bench/lb.sh     # also scalelab as of another commit
#   EVPROXY=1 bash bench/lb.sh           # also bench/evproxy's two bare proxy cores: about 4.5 minutes
#   PERFSTAT=1 bash bench/lb.sh          # also count system calls and context switches
#   TLS=1 bash bench/lb.sh               # also HTTPS: HTTP/1.1 (wrk) and HTTP/2 (h2load) rows
#   COLD=1 bash bench/lb.sh              # also the constant-rate cold-start row (vegeta)
#
# Settings (environment):
#   ROUNDS=3 DURATION=10s THREADS=2 CONNS=64   wrk: rounds, -d, -t, -c
#   WORKERS=$(nproc)   worker processes of nginx, threads of HAProxy, event
#                      loops of scalelab (with GOMAXPROCS twice that, as the
#                      balancer command sets by itself: a loop per core, and as
#                      many Ps again for its goroutines): every proxy gets the
#                      same number of cores
#   PORT_BASE=18080    ports PORT_BASE..PORT_BASE+7 must be free
#   BASELINE=<commit>  also run the balancer built from that commit (git
#                      archive, so uncommitted changes are left out) as the
#                      target "baseline", in the same interleaved rounds:
#                      an A/B of a change to the balancer on the same load
#   EVPROXY=1          also run bench/evproxy (see its doc), the balancer's
#                      per-request header work and nothing else, with two cores:
#                      event loops (target "ev-gnet") and a goroutine per
#                      connection like the balancer's (target "ev-fasthttp")
#   PERFSTAT=1         count the target's system calls and context switches per
#                      request with perf stat (installs linux-perf; the counting
#                      slows every target, so compare req/s only within a run)
#   TLS=1              also each proxy terminating TLS with the same certificate
#                      (ECDSA P-256, made with openssl) and the same suite (TLS
#                      1.3, TLS_AES_128_GCM_SHA256: Go's choice, set on nginx and
#                      HAProxy too), in front of the same plain backends: targets
#                      <proxy>-tls (HTTP/1.1, wrk over https) and <proxy>-h2
#                      (HTTP/2 over ALPN h2, h2load with CONNS connections of one
#                      stream each, so that h2 is measured as the same closed loop
#                      as wrk's; p50 and p99 from h2load's per-request log).
#                      Also the Go TLS ceiling, gotls-tls and gotls-h2:
#                      bench/backend terminating TLS with the balancer's
#                      libraries and answering itself, no proxying (the most a
#                      Go front door built on them can reach here).
#                      Installs nghttp2-client (h2load) when missing, as root
#   COLD=1             also, after the rounds, a constant-rate cold start per proxy
#                      and round: the proxy is started afresh, then vegeta sends
#                      half of nginx's median req/s (from the rounds) for
#                      COLD_DURATION (10s) with up to 1024 connections, opened as
#                      it needs them; p50 and p99 of those first seconds, the tail
#                      issue #27 item 7 is about (needs go, for vegeta).
#                      COLD_RATE=3600 sets the rate instead: on 2 cores vegeta
#                      itself cannot send half of wrk's peak without saturating
#                      the machine (every proxy's p50 then grows)
#   SCALELAB_ENV="GOGC=400"  extra environment of the scalelab balancer (VAR=value
#   BASELINE_ENV=...         words), and of the baseline: BASELINE=HEAD with
#                            different environments is an A/B of a setting
#
# Fairness: every proxy keeps idle connections to the backends (nginx
# upstream keepalive 64, HAProxy http-reuse always, scalelab 256 per host),
# logs no requests, sets X-Forwarded-For and an X-Request-ID, and balances
# round robin. On a machine with few cores wrk, the proxy and both backends
# compete for CPU, so the numbers compare the proxies' CPU cost per request
# under contention rather than their capacity; the script says so in its
# output.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-$(nproc)}
PORT_BASE=${PORT_BASE:-18080}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
tmp=$(mktemp -d /tmp/scalelab-lb.XXXXXX)
pids=()

cleanup() {
	((${#pids[@]})) && stop TERM "${pids[@]}"
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------
missing=()
for tool in wrk nginx haproxy; do
	command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
done
if [[ -n ${PERFSTAT:-} ]] && ! command -v perf >/dev/null 2>&1; then
	missing+=(linux-perf)
fi
if [[ -n ${COLD:-} ]]; then
	log "building vegeta ..."
	GOBIN="$tmp" go install github.com/tsenart/vegeta/v12@v12.13.0
fi
if [[ -n ${TLS:-} ]]; then
	command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
	command -v openssl >/dev/null 2>&1 || missing+=(openssl)
fi
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		log "lb.sh: ${missing[*]} missing; run as root to apt-get install them"
		exit 1
	fi
	log "installing ${missing[*]} ..."
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
export PATH=$PATH:/usr/sbin

# --- ports -------------------------------------------------------------------
p_backend1=$PORT_BASE
p_backend2=$((PORT_BASE + 1))
p_nginx=$((PORT_BASE + 2))
p_haproxy=$((PORT_BASE + 3))
p_scalelab=$((PORT_BASE + 4))
p_baseline=$((PORT_BASE + 5))
p_evgnet=$((PORT_BASE + 6))
p_evfasthttp=$((PORT_BASE + 7))
p_nginx_tls=$((PORT_BASE + 8))
p_haproxy_tls=$((PORT_BASE + 9))
p_scalelab_tls=$((PORT_BASE + 10))
p_gotls=$((PORT_BASE + 11))
for p in "$p_backend1" "$p_backend2" "$p_nginx" "$p_haproxy" "$p_scalelab" "$p_baseline" "$p_evgnet" "$p_evfasthttp" \
	"$p_nginx_tls" "$p_haproxy_tls" "$p_scalelab_tls" "$p_gotls"; do
	if ss -ltnH "sport = :$p" | grep -q .; then
		log "lb.sh: port $p is taken; set PORT_BASE"
		exit 1
	fi
done

# --- build and start -----------------------------------------------------------
log "building bench/backend and scalelab ..."
(cd "$root" && go build -o "$tmp/backend" ./bench/backend && go build -o "$tmp/scalelab" .)
if [[ -n ${BASELINE:-} ]]; then
	log "building the baseline, scalelab at $BASELINE ..."
	mkdir -p "$tmp/baseline-src"
	git -C "$root" archive "$BASELINE" | tar -x -C "$tmp/baseline-src"
	(cd "$tmp/baseline-src" && go build -o "$tmp/scalelab-baseline" .)
fi
if [[ -n ${EVPROXY:-} ]]; then
	log "building bench/evproxy ..."
	(cd "$root/bench/evproxy" && go build -o "$tmp/evproxy" .)
fi

declare -A pid_of cmd_of
start() { # name, command...
	local name=$1
	shift
	"$@" >"$tmp/$name.log" 2>&1 &
	pids+=($!)
	pid_of[$name]=$!
	cmd_of[$name]=$(printf '%q ' "$@")
}

# restart stops a started process and starts it again with its command:
# a fresh process, for the cold-start row.
restart() { # name
	stop TERM "${pid_of[$1]}"
	eval "start $1 ${cmd_of[$1]}"
}

# pids_of prints a process and its children (nginx's workers), comma-separated.
pids_of() {
	local list=$1 pid
	for pid in $(pgrep -P "$1" || true); do
		list+=",$pid"
	done
	echo "$list"
}

# machine_ticks prints the machine's idle and total CPU time so far, in
# clock ticks, from the first line of /proc/stat.
machine_ticks() {
	awk '$1 == "cpu" {t = 0; for (i = 2; i <= NF; i++) t += $i; print $5, t; exit}' /proc/stat
}

# cpu_ticks prints the CPU time (user + system, in clock ticks) used so far
# by a process, its threads and its children (nginx's workers).
cpu_ticks() {
	# shellcheck disable=SC2046 # one word per child pid
	proc_ticks "$1" $(pgrep -P "$1" || true)
}
clk_tck=$(getconf CLK_TCK)

# Backends get the same GOMAXPROCS as scalelab, so no process has more
# threads than cores to fight with.
scalelab_tls=()
if [[ -n ${TLS:-} ]]; then
	# One certificate and key for the three proxies (HAProxy wants both in
	# one file).
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
	cat "$tmp/cert.pem" "$tmp/key.pem" >"$tmp/haproxy.pem"
	nginx_tls="
	server {
		listen 127.0.0.1:$p_nginx_tls ssl http2;
		ssl_certificate $tmp/cert.pem;
		ssl_certificate_key $tmp/key.pem;
		ssl_protocols TLSv1.2 TLSv1.3;
		ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
		location / {
			proxy_pass http://backends;
			proxy_http_version 1.1;
			proxy_set_header Connection \"\";
			proxy_set_header X-Forwarded-For \$remote_addr;
			proxy_set_header X-Request-ID \$request_id;
		}
	}"
	haproxy_tls="
frontend fe_tls
	bind 127.0.0.1:$p_haproxy_tls ssl crt $tmp/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.2 ciphersuites TLS_AES_128_GCM_SHA256
	option forwardfor
	unique-id-format %{+X}o\\ %ci%cp%fi%fp%Ts%rt%pid
	unique-id-header X-Request-ID
	default_backend be"
	scalelab_tls=(--tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --tls-addr "127.0.0.1:$p_scalelab_tls")
fi

start backend1 env GOMAXPROCS="$WORKERS" "$tmp/backend" -addr "127.0.0.1:$p_backend1"
start backend2 env GOMAXPROCS="$WORKERS" "$tmp/backend" -addr "127.0.0.1:$p_backend2"
if [[ -n ${TLS:-} ]]; then
	start gotls env GOMAXPROCS="$WORKERS" "$tmp/backend" -addr "127.0.0.1:$p_gotls" -tls-cert "$tmp/cert.pem" -tls-key "$tmp/key.pem"
fi

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $tmp/nginx/body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	upstream backends {
		server 127.0.0.1:$p_backend1;
		server 127.0.0.1:$p_backend2;
		keepalive 64;
	}
	server {
		listen 127.0.0.1:$p_nginx;
		location / {
			proxy_pass http://backends;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For \$remote_addr;
			proxy_set_header X-Request-ID \$request_id;
		}
	}${nginx_tls:-}
}
EOF
start nginx nginx -e "$tmp/nginx-error.log" -p "$tmp/nginx" -c "$tmp/nginx.conf"

cat >"$tmp/haproxy.cfg" <<EOF
global
	nbthread $WORKERS
	maxconn 4096
defaults
	mode http
	timeout connect 2s
	timeout client 30s
	timeout server 30s
	option http-keep-alive
	http-reuse always
frontend fe
	bind 127.0.0.1:$p_haproxy
	option forwardfor
	unique-id-format %{+X}o\ %ci%cp%fi%fp%Ts%rt%pid
	unique-id-header X-Request-ID
	default_backend be
backend be
	balance roundrobin
	server s1 127.0.0.1:$p_backend1
	server s2 127.0.0.1:$p_backend2
${haproxy_tls:-}
EOF
start haproxy haproxy -db -f "$tmp/haproxy.cfg"

# scalelab's event loops, and its Ps: what `scalelab balancer` does by
# itself on a machine of WORKERS cores (cli/run.go, reserveLoopProcs). An
# idle loop holds its P in epoll_wait, so with a loop per P the goroutines
# (HTTPS, h2) wait for sysmon to free one.
scalelab_procs=(GOMAXPROCS="$((2 * WORKERS))" SCALELAB_EVENT_LOOPS="$WORKERS")
# shellcheck disable=SC2086 # SCALELAB_ENV and BASELINE_ENV are lists of VAR=value
# Each balancer's admin listener on a free port (SCALELAB_ADMIN_ADDR, an
# environment variable that builds older than the listener ignore): two
# cannot share the default 127.0.0.1:8001.
start scalelab env "${scalelab_procs[@]}" SCALELAB_ADMIN_ADDR=127.0.0.1:0 ${SCALELAB_ENV:-} "$tmp/scalelab" balancer --addr "127.0.0.1:$p_scalelab" \
	--backends "http://127.0.0.1:$p_backend1,http://127.0.0.1:$p_backend2" --log-format json --log-level warn "${scalelab_tls[@]}"

targets=(direct nginx haproxy scalelab)
[[ -n ${TLS:-} ]] && targets+=(nginx-tls haproxy-tls scalelab-tls gotls-tls nginx-h2 haproxy-h2 scalelab-h2 gotls-h2)
if [[ -n ${BASELINE:-} ]]; then
	# shellcheck disable=SC2086
	start baseline env "${scalelab_procs[@]}" SCALELAB_ADMIN_ADDR=127.0.0.1:0 ${BASELINE_ENV:-} "$tmp/scalelab-baseline" balancer --addr "127.0.0.1:$p_baseline" \
		--backends "http://127.0.0.1:$p_backend1,http://127.0.0.1:$p_backend2" --log-format json --log-level warn
	targets+=(baseline)
fi
if [[ -n ${EVPROXY:-} ]]; then
	for engine in gnet fasthttp; do
		port=$p_evgnet
		[[ $engine == fasthttp ]] && port=$p_evfasthttp
		start "ev-$engine" env GOMAXPROCS="$WORKERS" "$tmp/evproxy" -engine "$engine" -addr "127.0.0.1:$port" \
			-backends "127.0.0.1:$p_backend1,127.0.0.1:$p_backend2"
		targets+=("ev-$engine")
	done
fi
declare -A url=(
	[direct]="http://127.0.0.1:$p_backend1/data"
	[nginx]="http://127.0.0.1:$p_nginx/data"
	[haproxy]="http://127.0.0.1:$p_haproxy/data"
	[scalelab]="http://127.0.0.1:$p_scalelab/data"
	[baseline]="http://127.0.0.1:$p_baseline/data"
	[ev-gnet]="http://127.0.0.1:$p_evgnet/data"
	[ev-fasthttp]="http://127.0.0.1:$p_evfasthttp/data"
	[nginx-tls]="https://127.0.0.1:$p_nginx_tls/data"
	[haproxy-tls]="https://127.0.0.1:$p_haproxy_tls/data"
	[scalelab-tls]="https://127.0.0.1:$p_scalelab_tls/data"
	[nginx-h2]="https://127.0.0.1:$p_nginx_tls/data"
	[haproxy-h2]="https://127.0.0.1:$p_haproxy_tls/data"
	[scalelab-h2]="https://127.0.0.1:$p_scalelab_tls/data"
	[gotls-tls]="https://127.0.0.1:$p_gotls/data"
	[gotls-h2]="https://127.0.0.1:$p_gotls/data"
)
for t in "${targets[@]}"; do
	ok=
	for _ in $(seq 100); do
		if curl -fsS -o /dev/null --max-time 1 --cacert "$tmp/cert.pem" "${url[$t]}" 2>/dev/null; then
			ok=1
			break
		fi
		sleep 0.1 # waiting for a process to bind its port
	done
	if [[ -z $ok ]]; then
		log "lb.sh: $t does not answer on ${url[$t]}; its log:"
		cat "$tmp/$t.log" "$tmp/nginx-error.log" 2>/dev/null | tail -20 >&2
		exit 1
	fi
done

# --- measure -------------------------------------------------------------------
# The process whose CPU is measured for each target.
declare -A proc=([direct]=backend1 [nginx]=nginx [haproxy]=haproxy [scalelab]=scalelab [baseline]=baseline [ev-gnet]=ev-gnet [ev-fasthttp]=ev-fasthttp
	[nginx-tls]=nginx [haproxy-tls]=haproxy [scalelab-tls]=scalelab [nginx-h2]=nginx [haproxy-h2]=haproxy [scalelab-h2]=scalelab
	[gotls-tls]=gotls [gotls-h2]=gotls)
if [[ -n ${TLS:-} ]]; then
	# Each proxy's TLS must agree: the same version and suite, h2 where asked.
	for t in nginx-tls haproxy-tls scalelab-tls gotls-tls; do
		got=$(curl -sS -o /dev/null --cacert "$tmp/cert.pem" --http1.1 -w '%{http_version}' "${url[$t]}")
		h2=$(curl -sS -o /dev/null --cacert "$tmp/cert.pem" --http2 -w '%{http_version}' "${url[$t]}")
		hostport=${url[$t]#https://}
		suite=$(openssl s_client -connect "${hostport%%/*}" -servername 127.0.0.1 </dev/null 2>/dev/null |
			awk '/^New, / {sub(/,$/, "", $2); print $2, $NF; exit}' || true)
		log "  ${t%-tls}: $suite, http/$got with --http1.1, http/$h2 with --http2"
		(( ${h2%%.*} == 2 )) || { log "lb.sh: $t does not speak h2"; exit 1; }
	done
fi

# bench runs wrk once against target and appends "rps p50 p99 errors tw
# cpu idle syscalls switches" to $tmp/<target>.results; cpu is the target's
# CPU time per request in microseconds, which other load on the machine
# disturbs far less than throughput; idle is the machine's idle percentage;
# syscalls and switches are per request, with PERFSTAT (0 without).
bench() {
	local t=$1 out before after idle0 total0 idle1 total1
	local pid=${pid_of[${proc[$t]}]}
	read -r idle0 total0 < <(machine_ticks)
	before=$(cpu_ticks "$pid")
	if [[ $t == *-h2 ]]; then
		# h2load: the same closed loop as wrk (CONNS connections, one
		# stream in flight on each); its per-request log gives p50, p99.
		rm -f "$tmp/h2load.log"
		local h2out
		h2out=$(h2load -t"$THREADS" -c"$CONNS" -m1 -D"${DURATION%s}" --log-file="$tmp/h2load.log" "${url[$t]}")
		out=$(h2load_as_wrk "$h2out" "$tmp/h2load.log")
	elif [[ -n ${PERFSTAT:-} ]]; then
		out=$(perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$(pids_of "$pid")" -o "$tmp/perf.out" -- \
			wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${url[$t]}")
	else
		out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${url[$t]}")
	fi
	after=$(cpu_ticks "$pid")
	read -r idle1 total1 < <(machine_ticks)
	local rps p50 p99 errs tw requests cpu idle syscalls=0 switches=0
	requests=$(awk '/requests in/ {print $1}' <<<"$out")
	cpu=$(awk -v d=$((after - before)) -v hz="$clk_tck" -v n="$requests" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
	p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
	errs=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
	# Sockets in TIME_WAIT: a proxy that does not reuse its backend
	# connections leaves thousands.
	tw=$(ss -tanH state time-wait | wc -l)
	# How much of the run the whole machine sat idle: a proxy that is slow
	# to wake up leaves the cores idle while wrk waits for it.
	idle=$(awk -v i=$((idle1 - idle0)) -v t=$((total1 - total0)) 'BEGIN {printf "%.1f", (t > 0 ? 100 * i / t : 0)}')
	if [[ -n ${PERFSTAT:-} ]]; then
		syscalls=$(awk -F, -v n="$requests" '$3 ~ /raw_syscalls/ {printf "%.2f", $1 / n}' "$tmp/perf.out")
		switches=$(awk -F, -v n="$requests" '$3 ~ /context-switches/ {printf "%.3f", $1 / n}' "$tmp/perf.out")
	fi
	echo "$rps $p50 $p99 $errs $tw $cpu $idle $syscalls $switches" >>"$tmp/$t.results"
	log "$(printf '  %-11s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %6.1f us/req  idle %4.1f%%  errors %s  time-wait %s' \
		"$t" "$rps" "$p50" "$p99" "$cpu" "$idle" "$errs" "$tw")"
}

# h2load_as_wrk prints the lines of wrk's output that bench reads, from
# h2load's summary ($1) and per-request log ($2: start, status, microseconds).
h2load_as_wrk() {
	local summary=$1 logfile=$2
	awk '/^requests:/ {print $6, "requests in"} /^finished in/ {gsub(",", ""); print "Requests/sec:", $4}
		/^status codes:/ {print "Non-2xx or 3xx responses:", $7 + $9}' <<<"$summary"
	sort -n -k3 "$logfile" | awk '{v[NR] = $3} END {
		if (NR == 0) exit
		i = int(NR * 0.50); if (i < 1) i = 1
		j = int(NR * 0.99); if (j < 1) j = 1
		printf "50%% %.3fms\n", v[i] / 1000
		printf "99%% %.3fms\n", v[j] / 1000 }'
}

cores=$(nproc)
log "machine: $(uname -srm), $cores cores, $(awk '/model name/ {sub(/.*: /, ""); print; exit}' /proc/cpuinfo)"
load=$(cut -d' ' -f1 /proc/loadavg)
log "load average before the run: $load"
if awk -v l="$load" -v c="$cores" 'BEGIN {exit !(l > c / 4)}'; then
	log "warning: the machine is busy (load $load on $cores cores): throughput will suffer; cpu_us/req less so"
fi
log "wrk -t$THREADS -c$CONNS -d$DURATION --latency; $ROUNDS rounds; proxies get $WORKERS workers/threads/event loops"
if ((cores <= 4)); then
	log "note: only $cores cores: wrk, the proxy and both backends share them, so this compares CPU cost per"
	log "      request under contention, not capacity; expect noise of several percent between rounds"
fi
log "warming up ..."
for t in "${targets[@]}"; do
	if [[ $t == *-h2 ]]; then
		h2load -t"$THREADS" -c"$CONNS" -m1 -D2 "${url[$t]}" >/dev/null
	else
		wrk -t"$THREADS" -c"$CONNS" -d2s "${url[$t]}" >/dev/null
	fi
done
for round in $(seq "$ROUNDS"); do
	log "round $round/$ROUNDS"
	# Rotate the order so that no target always runs first (or last).
	for i in "${!targets[@]}"; do
		bench "${targets[$(((i + round - 1) % ${#targets[@]}))]}"
	done
done

# --- report ----------------------------------------------------------------------
declare -A rps p50 p99 errs cpu idle syscalls switches
for t in "${targets[@]}"; do
	rps[$t]=$(median "$tmp/$t.results" 1)
	p50[$t]=$(median "$tmp/$t.results" 2)
	p99[$t]=$(median "$tmp/$t.results" 3)
	cpu[$t]=$(median "$tmp/$t.results" 6)
	idle[$t]=$(median "$tmp/$t.results" 7)
	syscalls[$t]=$(median "$tmp/$t.results" 8)
	switches[$t]=$(median "$tmp/$t.results" 9)
	errs[$t]=$(awk '{n += $4} END {print n + 0}' "$tmp/$t.results")
done
echo
echo "scalelab balancer vs nginx $(nginx -v 2>&1 | sed 's/.*\///') and HAProxy $(haproxy -v | awk 'NR == 1 {print $3}')," \
	"$(date -u +%Y-%m-%d), $cores cores"
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, medians of $ROUNDS interleaved rounds, 2 backends, $WORKERS workers per proxy"
echo "cpu_us/req: CPU time of the target process (the backend for direct) per request; idle%: of the whole machine"
if [[ -n ${PERFSTAT:-} ]]; then
	echo "syscalls/req, ctxsw/req: the target's, counted by perf stat (which slows it)"
	printf '%-12s %12s %10s %10s %12s %7s %8s %13s %10s\n' target req/s p50_ms p99_ms cpu_us/req idle% errors syscalls/req ctxsw/req
	for t in "${targets[@]}"; do
		printf '%-12s %12.0f %10.3f %10.3f %12.1f %7.1f %8d %13.2f %10.3f\n' "$t" "${rps[$t]}" "${p50[$t]}" "${p99[$t]}" \
			"${cpu[$t]}" "${idle[$t]}" "${errs[$t]}" "${syscalls[$t]}" "${switches[$t]}"
	done
else
	printf '%-12s %12s %10s %10s %12s %7s %8s\n' target req/s p50_ms p99_ms cpu_us/req idle% errors
	for t in "${targets[@]}"; do
		printf '%-12s %12.0f %10.3f %10.3f %12.1f %7.1f %8d\n' "$t" "${rps[$t]}" "${p50[$t]}" "${p99[$t]}" "${cpu[$t]}" "${idle[$t]}" "${errs[$t]}"
	done
fi
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
printf '%-22s %8s %8s %8s %12s\n' ratio req/s p50 p99 cpu/req
others=(nginx haproxy)
[[ -n ${BASELINE:-} ]] && others+=(baseline)
pairs=()
for other in "${others[@]}"; do
	pairs+=("scalelab/$other")
done
# The Go TLS ceiling against nginx and HAProxy: where it is below 1, no
# front door on Go's TLS and h2 libraries reaches them here.
[[ -n ${TLS:-} ]] && pairs+=(scalelab-tls/nginx-tls scalelab-tls/haproxy-tls scalelab-h2/nginx-h2 scalelab-h2/haproxy-h2
	gotls-tls/nginx-tls gotls-tls/haproxy-tls gotls-h2/nginx-h2 gotls-h2/haproxy-h2 scalelab-tls/gotls-tls scalelab-h2/gotls-h2)
# The features' cost (the balancer against the bare core of its kind), the
# architecture's (event loops against goroutines), and the event loops
# against nginx and HAProxy.
[[ -n ${EVPROXY:-} ]] && pairs+=(scalelab/ev-fasthttp ev-gnet/ev-fasthttp ev-gnet/nginx ev-gnet/haproxy)
for pair in "${pairs[@]}"; do
	a=${pair%/*} b=${pair#*/}
	printf '%-22s %8s %8s %8s %12s\n' "$pair" "$(ratio "${rps[$a]}" "${rps[$b]}")" \
		"$(ratio "${p50[$a]}" "${p50[$b]}")" "$(ratio "${p99[$a]}" "${p99[$b]}")" \
		"$(ratio "${cpu[$a]}" "${cpu[$b]}")"
done
if ((cores <= 4)); then
	echo "(on $cores cores the load generator competes with the proxies and backends for CPU)"
fi

# --- the constant-rate cold start (COLD=1) ---------------------------------------
if [[ -n ${COLD:-} ]]; then
	cold_targets=(nginx haproxy scalelab)
	rate=${COLD_RATE:-$(awk -v r="${rps[nginx]}" 'BEGIN {printf "%d", r / 2}')}
	COLD_DURATION=${COLD_DURATION:-10s}
	log "cold start: each proxy started afresh, then vegeta at $rate req/s (half of nginx's median) for $COLD_DURATION"
	for round in $(seq "$ROUNDS"); do
		for i in "${!cold_targets[@]}"; do
			t=${cold_targets[$(((i + round - 1) % ${#cold_targets[@]}))]}
			restart "${proc[$t]}"
			for _ in $(seq 100); do
				curl -fsS -o /dev/null --max-time 1 "${url[$t]}" 2>/dev/null && break
				sleep 0.1 # waiting for the fresh process to bind its port
			done
			echo "GET ${url[$t]}" | "$tmp/vegeta" attack -rate="$rate" -duration="$COLD_DURATION" -max-workers=1024 \
				-max-connections=1024 >"$tmp/cold.bin"
			"$tmp/vegeta" report -type=json <"$tmp/cold.bin" >"$tmp/cold.json"
			read -r p50 p99 ok < <(python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
print(r["latencies"]["50th"] / 1e6, r["latencies"]["99th"] / 1e6, r["success"])' "$tmp/cold.json")
			echo "$p50 $p99 $ok" >>"$tmp/$t.cold"
			log "$(printf '  cold %-9s p50 %7.3f ms  p99 %8.3f ms  success %s' "$t" "$p50" "$p99" "$ok")"
		done
	done
	echo
	echo "cold start: vegeta -rate=$rate -duration=$COLD_DURATION on a freshly started proxy, medians of $ROUNDS rounds"
	printf '%-12s %10s %10s\n' target p50_ms p99_ms
	declare -A cold99
	for t in "${cold_targets[@]}"; do
		cold99[$t]=$(median "$tmp/$t.cold" 2)
		printf '%-12s %10.3f %10.3f\n' "$t" "$(median "$tmp/$t.cold" 1)" "${cold99[$t]}"
	done
	printf 'p99 ratio scalelab/nginx %s, scalelab/haproxy %s (issue #27 item 7: at most 1.2)\n' \
		"$(ratio "${cold99[scalelab]}" "${cold99[nginx]}")" "$(ratio "${cold99[scalelab]}" "${cold99[haproxy]}")"
fi
