package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
