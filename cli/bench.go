package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"log/slog"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/platform"
	"github.com/scalelab/scalelab/platform/bench"
)

const benchUsage = `scalelab bench: run the lab's experiments and write a report with charts.

  scalelab bench [flags] <scenario>|all     run one scenario (or every one)
  scalelab bench compare A/report.json B/report.json
  scalelab bench soak [flags]              a long steady load; resources sampled (soak -h)

Scenarios:
%s
Each scenario starts its own platforms on 127.0.0.1 (random ports, a
temporary data directory) unless --url names a running one, and writes
report.md, report.json and PNG charts to --out. Load goes to this machine
only.

Flags:
`

// runBench runs `scalelab bench`.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "compare" {
		return runBenchCompare(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "soak" {
		return runBenchSoak(ctx, args[1:], getenv, stdout, stderr)
	}
	var list strings.Builder
	for _, s := range bench.Scenarios() {
		fmt.Fprintf(&list, "  %-8s %s\n", s.Name, s.Title)
	}
	fs, s := newFlags("scalelab bench", fmt.Sprintf(benchUsage, list.String()), getenv, stderr)
	var (
		out, url, adminURL, token, logLevel string
		short, noProgress                   bool
		opts                                bench.Options
	)
	s.String(&out, "out", "SCALELAB_BENCH_OUT", "", "report directory (default bench-results/<scenario>-<time>)")
	s.Duration(&opts.Duration, "duration", "SCALELAB_BENCH_DURATION", 10*time.Second, "how long each measured load runs")
	s.Int(&opts.Connections, "connections", "SCALELAB_BENCH_CONNECTIONS", 32, "requests in flight at once (closed-loop loads)")
	s.Int(&opts.SeedRows, "seed-rows", "SCALELAB_SEED_ROWS", dbsvc.DefaultConfig().SeedRows, "rows seeded for /data in the bench's platforms")
	s.Bool(&short, "short", "", false, "a quick look: 1 s loads, a 20,000-row database (unless --duration or --seed-rows say otherwise)")
	s.String(&url, "url", "SCALELAB_BENCH_URL", "", "a running platform's balancer (loopback) instead of starting platforms")
	s.String(&adminURL, "admin-url", "SCALELAB_BENCH_ADMIN_URL", "", "with --url: its balancer's admin listener, for the retry and ejection counts (up prints it)")
	s.String(&token, "token", "TOKEN", "", "with --url: a token with every scope (up prints one)")
	s.Bool(&noProgress, "no-progress", "", false, "no progress bars")
	s.String(&logLevel, "log-level", "SCALELAB_LOG_LEVEL", "warn", "level of the platforms' logs, written to <out>/platform.log")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageErr(errors.New("bench: name one scenario, all, or compare"))
	}
	name := fs.Arg(0)
	if short {
		if !flagSet(fs, "duration") {
			opts.Duration = time.Second
		}
		if !flagSet(fs, "seed-rows") {
			opts.SeedRows = 20000
		}
	}
	opts.URL, opts.AdminURL, opts.Token = url, adminURL, token
	names := []string{name}
	if name == "all" {
		names = nil
		for _, sc := range bench.Scenarios() {
			names = append(names, sc.Name)
		}
	}
	if out == "" {
		out = filepath.Join("bench-results", name+"-"+time.Now().Format("20060102-150405"))
	}
	if !noProgress {
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			opts.Progress = stderr
		}
	}
	// Check before anything is written or started.
	if scenarioTitle(name) == "" && name != "all" {
		return usageErr(fmt.Errorf("bench: no scenario %q (run 'scalelab bench -h' for the list)", name))
	}
	check := opts
	check.Out = out
	if err := check.Validate(); err != nil {
		return usageErr(err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	// The platforms it starts are `up`'s, with up's event loops and Ps.
	opts.BcryptSlots = platform.ReserveLoopProcs(getenv)
	logFile, err := os.Create(filepath.Join(out, "platform.log"))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer logFile.Close()
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return usageErr(fmt.Errorf("bench: --log-level %q: want debug, info, warn or error", logLevel))
	}
	if opts.Log, err = newLogger(logFile, logFormatJSON, level); err != nil {
		return usageErr(err)
	}
	for _, n := range names {
		o := opts
		if len(names) > 1 {
			o.Out = filepath.Join(out, n)
		} else {
			o.Out = out
		}
		fmt.Fprintf(stdout, "bench %s: %s\n", n, scenarioTitle(n))
		r, err := bench.Run(ctx, n, o)
		if errors.Is(err, bench.ErrOptions) {
			return usageErr(err)
		}
		if err != nil {
			return err
		}
		for _, f := range r.Findings {
			fmt.Fprintf(stdout, "  - %s\n", f)
		}
		fmt.Fprintf(stdout, "  report: %s\n\n", filepath.Join(o.Out, "report.md"))
	}
	return nil
}

func scenarioTitle(name string) string {
	for _, s := range bench.Scenarios() {
		if s.Name == name {
			return s.Title
		}
	}
	return ""
}

// runBenchCompare prints two reports' runs side by side.
func runBenchCompare(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return usageErr(errors.New("bench compare: want two report.json files"))
	}
	a, err := bench.ReadReport(args[0])
	if err != nil {
		return err
	}
	b, err := bench.ReadReport(args[1])
	if err != nil {
		return err
	}
	return bench.Compare(stdout, a, b)
}

const soakUsage = `scalelab bench soak: run up's platform in this process under a steady mixed
load for --duration and report whether its resources stay flat.

  scalelab bench soak [flags]

The load goes through the balancer: GET /items/{id}, GET /data, PUT and
PATCH /items/{id}, POST /longtask (10 ms tasks). Every --sample it records
the process's RSS, heap in use, goroutines and open file descriptors, the
JetStream store size, the answers by status and the tasks accepted and
finished. The report (report.md, report.json, a chart in --out) gives each
metric's growth from the end of warm-up to the end, flags any over 10 %,
and counts the tasks lost (accepted but not final after --drain).

Flags:
`

// runBenchSoak runs `scalelab bench soak`.
func runBenchSoak(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, s := newFlags("scalelab bench soak", soakUsage, getenv, stderr)
	var (
		out, logLevel string
		noProgress    bool
		opts          = bench.SoakOptions{WarmUp: bench.DefaultSoakWarmUp}
	)
	s.String(&out, "out", "SCALELAB_BENCH_OUT", "", "report directory (default bench-results/soak-<time>)")
	s.Duration(&opts.Duration, "duration", "SCALELAB_SOAK_DURATION", 30*time.Minute, "how long the steady load runs")
	s.Duration(&opts.Sample, "sample", "SCALELAB_SOAK_SAMPLE", time.Minute, "time between two samples")
	s.Int(&opts.Rate, "rate", "SCALELAB_SOAK_RATE", 0, "requests/s of the steady load (0: measure the peak for --peak-for, then run at half of it)")
	s.Duration(&opts.PeakFor, "peak-for", "SCALELAB_SOAK_PEAK_FOR", 20*time.Second, "with --rate 0: how long the peak is measured")
	s.Func("warm-up", "SCALELAB_SOAK_WARM_UP", fmt.Sprintf("share of the run that is warm-up, growth counts from its end (default %g)", bench.DefaultSoakWarmUp),
		func(v string) error {
			f, err := strconv.ParseFloat(v, 64)
			opts.WarmUp = f
			return err
		})
	s.Duration(&opts.Drain, "drain", "SCALELAB_SOAK_DRAIN", 2*time.Minute, "how long unfinished tasks are waited for at the end before they count as lost")
	s.Int(&opts.Connections, "connections", "SCALELAB_BENCH_CONNECTIONS", 64, "requests in flight at most")
	s.Int(&opts.SeedRows, "seed-rows", "SCALELAB_SEED_ROWS", dbsvc.DefaultConfig().SeedRows, "rows seeded for /data")
	s.Bool(&noProgress, "no-progress", "", false, "no progress bar")
	s.String(&logLevel, "log-level", "SCALELAB_LOG_LEVEL", "warn", "level of the platform's logs, written to <out>/platform.log")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usageErr(fmt.Errorf("bench soak: unexpected arguments %q", fs.Args()))
	}
	if out == "" {
		out = filepath.Join("bench-results", "soak-"+time.Now().Format("20060102-150405"))
	}
	opts.Out = out
	if err := opts.Validate(); err != nil {
		return usageErr(err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return usageErr(fmt.Errorf("bench soak: --log-level %q: want debug, info, warn or error", logLevel))
	}
	if !noProgress {
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			opts.Progress = stderr
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("bench soak: %w", err)
	}
	opts.BcryptSlots = platform.ReserveLoopProcs(getenv)
	logFile, err := os.Create(filepath.Join(out, "platform.log"))
	if err != nil {
		return fmt.Errorf("bench soak: %w", err)
	}
	defer logFile.Close()
	if opts.Log, err = newLogger(logFile, logFormatJSON, level); err != nil {
		return usageErr(err)
	}
	fmt.Fprintf(stdout, "bench soak: %v of steady mixed load, a sample every %v\n", opts.Duration, opts.Sample)
	r, err := bench.RunSoak(ctx, opts)
	if errors.Is(err, bench.ErrOptions) {
		return usageErr(err)
	}
	if err != nil {
		return err
	}
	for _, f := range r.Findings {
		fmt.Fprintf(stdout, "  - %s\n", f)
	}
	fmt.Fprintf(stdout, "  report: %s\n", filepath.Join(out, "report.md"))
	return nil
}
