# bench/lib.sh: the shell functions the benchmark scripts share (lb.sh,
# frontdoor.sh, cache/run.sh, tasks/run.sh). Source it; it runs nothing and
# sets no variables.

# stop SIGNAL PID... sends SIGNAL to each process, gives each up to 10 s to
# exit, and then kills it. A process that leads its own process group
# (started with setsid, as cache/run.sh does so that the lab's Flask reloader
# children go with their parent) is signalled with its whole group; for the
# others the group signal fails and the process alone is signalled.
stop() {
	local sig=$1 pid
	shift
	for pid in "$@"; do
		kill -"$sig" -- "-$pid" 2>/dev/null || kill -"$sig" "$pid" 2>/dev/null || true
	done
	for pid in "$@"; do
		for _ in $(seq 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

# to_ms converts a wrk latency (850.00us, 1.23ms, 1.05s) to milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000
		else if (v ~ /ms$/) n = n
		else if (v ~ /m$/) n *= 60000
		else if (v ~ /s$/) n *= 1000
		printf "%.3f", n
	}'
}

# median prints the median of column $2 of file $1.
median() {
	sort -g -k"$2","$2" "$1" | awk -v c="$2" '{v[NR] = $c} END {
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
	}'
}

# proc_ticks prints the CPU time (user + system, in clock ticks) the given
# processes have used so far, threads included; a process gone counts 0.
proc_ticks() { # pid...
	local pid total=0 t
	for pid in "$@"; do
		# Fields after "(comm) ": state is 1, utime 12, stime 13.
		t=$(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat" 2>/dev/null || echo 0)
		total=$((total + t))
	done
	echo "$total"
}
