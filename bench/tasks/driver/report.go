package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/scalelab/scalelab/bench/tasks/internal/measure"
)

// natsCSV turns the CSV that `nats bench ... --csv` writes into one result
// line. nats bench times its own phase (publish, or consume), so Seconds is
// that phase and TasksPerSec is messages per second.
func natsCSV(args []string) error {
	fs := flag.NewFlagSet("driver natscsv", flag.ContinueOnError)
	system := fs.String("system", "", "result system name, e.g. jetstream-pub")
	round := fs.Int("round", 0, "round number")
	n := fs.Int("n", 0, "messages sent or received")
	file := fs.String("file", "", "the CSV file nats bench wrote")
	out := fs.String("out", "", "append the JSON result line to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *system == "" || *file == "" || *n < 1 {
		return errors.New("natscsv: -system, -file and -n are required")
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1
	rows, err := cr.ReadAll()
	if err != nil {
		return fmt.Errorf("read %s: %w", *file, err)
	}
	col := map[string]int{}
	var secs float64
	for _, row := range rows {
		if len(row) > 0 && strings.HasPrefix(row[0], "#") {
			for i, name := range row {
				col[strings.TrimPrefix(name, "#")] = i
			}
			continue
		}
		i, ok := col["DurationSecs"]
		if !ok || i >= len(row) {
			return fmt.Errorf("%s: no DurationSecs column", *file)
		}
		d, err := strconv.ParseFloat(row[i], 64)
		if err != nil {
			return fmt.Errorf("%s: DurationSecs %q: %w", *file, row[i], err)
		}
		secs = max(secs, d) // one row per client; the slowest bounds the run
	}
	if secs <= 0 {
		return fmt.Errorf("%s: no data rows", *file)
	}
	r := Result{System: *system, Round: *round, N: *n, OK: *n, Seconds: secs, TasksPerSec: float64(*n) / secs}
	fmt.Fprintf(os.Stderr, "%s round %d: %.0f msgs/s\n", *system, *round, r.TasksPerSec)
	if *out == "" {
		return nil
	}
	return measure.AppendResult(*out, r)
}

// report prints the Markdown table of medians over rounds.
func report(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("driver report", flag.ContinueOnError)
	in := fs.String("in", "", "results file (JSON lines)")
	asynqVersion := fs.String("asynq-version", "v0.26.0", "Asynq version, for the row label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.Open(*in)
	if err != nil {
		return err
	}
	defer f.Close()
	by := map[string][]Result{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("%s: %w", *in, err)
		}
		by[r.System] = append(by[r.System], r)
	}
	if err := sc.Err(); err != nil {
		return err
	}

	col := func(rs []Result, get func(Result) float64) float64 {
		xs := make([]float64, 0, len(rs))
		for _, r := range rs {
			xs = append(xs, get(r))
		}
		return median(xs)
	}
	tps := func(r Result) float64 { return r.TasksPerSec }
	p50 := func(r Result) float64 { return r.P50ms }
	p99 := func(r Result) float64 { return r.P99ms }
	perTask := func(get func(Result) float64) func(Result) float64 {
		return func(r Result) float64 {
			if r.OK == 0 {
				return 0
			}
			return get(r) / float64(r.OK)
		}
	}
	cpuSUT := perTask(func(r Result) float64 { return r.SUTCPU * 1e6 })
	cpuDrv := perTask(func(r Result) float64 { return r.DriverCPU * 1e6 })

	// The JetStream pipeline: one message published then consumed, the two
	// phases timed back to back in the same round.
	pipe := pairRounds(by["jetstream-pub"], by["jetstream-consume"])

	sysPerTask := perTask(func(r Result) float64 { return float64(r.SUTSyscalls) })

	sl, aq := by["scalelab"], by["asynq"]
	fmt.Fprintln(w, "| system | rounds | tasks/s median (min–max) | p50 ms | p99 ms | server CPU µs/task (scalelab up; redis-server) | server read+write syscalls/task | client CPU µs/task (driver; asynqbench = enqueuers + Asynq workers) | machine CPU busy (steal) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	row := func(name string, rs []Result, lat bool) {
		if len(rs) == 0 {
			return
		}
		cells := []string{"—", "—", "—", "—", "—", "—"}
		if lat {
			cells[0], cells[1] = fmt.Sprintf("%.1f", col(rs, p50)), fmt.Sprintf("%.1f", col(rs, p99))
		}
		for i, get := range []func(Result) float64{cpuSUT, sysPerTask, cpuDrv} {
			if v := col(rs, get); v > 0 {
				cells[2+i] = fmt.Sprintf("%.0f", v)
			}
		}
		if busy := col(rs, func(r Result) float64 { return r.MachineBusy }); busy > 0 {
			cells[5] = fmt.Sprintf("%.0f%% (%.0f%%)", 100*busy, 100*col(rs, func(r Result) float64 { return r.MachineSteal }))
		}
		lo, hi := rs[0].TasksPerSec, rs[0].TasksPerSec
		for _, r := range rs {
			lo, hi = min(lo, r.TasksPerSec), max(hi, r.TasksPerSec)
		}
		fmt.Fprintf(w, "| %s | %d | %.0f (%.0f–%.0f) | %s |\n", name, len(rs), col(rs, tps), lo, hi, strings.Join(cells, " | "))
	}
	// Rows: each system flat out, then each paced at a fixed rate.
	label := func(sys string) string {
		switch {
		case sys == "scalelab":
			return "scalelab end to end (HTTP → balancer → gateway → TASKS → worker → record succeeded)"
		case sys == "scalelab-baseline":
			return "scalelab as of BASELINE, end to end (the same path, the same rounds)"
		case sys == "scalelab-sdk":
			return "scalelab submitted with the Go SDK over NATS (client.NewNATS → TASKS → worker → record succeeded; no HTTP)"
		case sys == "asynq":
			return "Asynq " + *asynqVersion + " on Redis, defaults (enqueue → handler ran)"
		case strings.HasPrefix(sys, "asynq-poll"):
			return "Asynq " + *asynqVersion + " on Redis, TaskCheckInterval " + strings.TrimPrefix(sys, "asynq-poll")
		}
		return sys
	}
	var flat, paced []string
	for sys := range by {
		switch {
		case strings.HasPrefix(sys, "jetstream"):
		case strings.Contains(sys, "@"):
			paced = append(paced, sys)
		default:
			flat = append(flat, sys)
		}
	}
	order := func(a, b string) int { // scalelab first, then by name
		if (a == "scalelab" || strings.HasPrefix(a, "scalelab@")) != (b == "scalelab" || strings.HasPrefix(b, "scalelab@")) {
			if strings.HasPrefix(a, "scalelab") {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	}
	slices.SortFunc(flat, order)
	slices.SortFunc(paced, order)
	for _, sys := range flat {
		row(label(sys)+", flat out", by[sys], true)
	}
	for _, sys := range paced {
		name, rate, _ := strings.Cut(sys, "@")
		row(fmt.Sprintf("%s, paced at %s (latency without a backlog)", label(name), rate), by[sys], true)
	}
	row("JetStream `nats bench js pub async` (file storage)", by["jetstream-pub"], false)
	row("JetStream `nats bench js consume` (explicit acks)", by["jetstream-consume"], false)
	row("JetStream pub + consume, per message (N / (pub s + consume s))", pipe, false)
	row("JetStream `nats bench js consume --doubleack` (one consumer, synchronous acks)", by["jetstream-consume-doubleack"], false)
	fmt.Fprintln(w)

	ratio := func(a, b []Result) string {
		if len(a) == 0 || len(b) == 0 || col(b, tps) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f×", col(a, tps)/col(b, tps))
	}
	fmt.Fprintln(w, "| ratio (tasks/s medians) | value |")
	fmt.Fprintln(w, "|---|---|")
	fmt.Fprintf(w, "| scalelab / Asynq (defaults) | %s |\n", ratio(sl, aq))
	if base := by["scalelab-baseline"]; len(base) > 0 {
		fmt.Fprintf(w, "| scalelab / scalelab as of BASELINE | %s |\n", ratio(sl, base))
	}
	for _, sys := range flat {
		if strings.HasPrefix(sys, "asynq-poll") {
			fmt.Fprintf(w, "| scalelab / Asynq (TaskCheckInterval %s) | %s |\n", strings.TrimPrefix(sys, "asynq-poll"), ratio(sl, by[sys]))
		}
	}
	if sdk := by["scalelab-sdk"]; len(sdk) > 0 {
		fmt.Fprintf(w, "| scalelab via the SDK over NATS / Asynq (defaults) | %s |\n", ratio(sdk, aq))
		for _, sys := range flat {
			if strings.HasPrefix(sys, "asynq-poll") {
				fmt.Fprintf(w, "| scalelab via the SDK over NATS / Asynq (TaskCheckInterval %s) | %s |\n", strings.TrimPrefix(sys, "asynq-poll"), ratio(sdk, by[sys]))
			}
		}
		fmt.Fprintf(w, "| scalelab via the SDK over NATS / scalelab over HTTP | %s |\n", ratio(sdk, sl))
	}
	fmt.Fprintf(w, "| scalelab / JetStream pub + consume | %s |\n", ratio(sl, pipe))
	fmt.Fprintf(w, "| scalelab / JetStream consume | %s |\n", ratio(sl, by["jetstream-consume"]))
	fmt.Fprintln(w)

	if len(sl) > 0 && sl[0].InClientMsgs > 0 {
		in := col(sl, perTask(func(r Result) float64 { return float64(r.InClientMsgs) }))
		out := col(sl, perTask(func(r Result) float64 { return float64(r.OutClientMsgs - r.WatchMsgs) }))
		watch := col(sl, perTask(func(r Result) float64 { return float64(r.WatchMsgs) }))
		fmt.Fprintf(w, "NATS messages per scalelab task (server /varz in_client_msgs and out_client_msgs deltas over the measured phase, median over rounds): "+
			"%.1f in + %.1f out = %.1f, not counting the %.1f per task sent to the driver (its KV watcher with -observe watch, its polls of the queue with -observe after).\n", in, out, in+out, watch)
		if lag := col(sl, func(r Result) float64 { return r.WatchLagP50ms }); lag > 0 {
			fmt.Fprintf(w, "Watcher lag (record stored → seen by the driver), median of per-round p50: %.1f ms.\n", lag)
		}
		fmt.Fprintf(w, "scalelab submit rate (202s/s, median): %.0f.\n", col(sl, func(r Result) float64 { return r.SubmitPerS }))
	}
	if len(aq) > 0 {
		fmt.Fprintf(w, "Asynq enqueue rate (median): %.0f/s.\n", col(aq, func(r Result) float64 { return r.SubmitPerS }))
	}
	var bad []string
	for sys, rs := range by {
		for _, r := range rs {
			if r.Failed > 0 || r.Errors > 0 || r.OK < r.N {
				bad = append(bad, fmt.Sprintf("%s round %d: %d/%d ok, %d failed, %d errors", sys, r.Round, r.OK, r.N, r.Failed, r.Errors))
			}
		}
	}
	if len(bad) > 0 {
		fmt.Fprintln(w, "\nIncomplete runs (kept in the medians above):")
		for _, b := range bad {
			fmt.Fprintln(w, "- "+b)
		}
	}
	return nil
}

// pairRounds combines the publish and consume phases of each round into one
// result: N messages through both, back to back.
func pairRounds(pub, cons []Result) []Result {
	var out []Result
	for _, p := range pub {
		for _, c := range cons {
			if c.Round == p.Round && p.Seconds+c.Seconds > 0 {
				s := p.Seconds + c.Seconds
				out = append(out, Result{System: "jetstream-pipeline", Round: p.Round, N: p.N, OK: p.N, Seconds: s, TasksPerSec: float64(p.N) / s})
			}
		}
	}
	return out
}
