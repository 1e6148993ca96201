package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/scalelab/scalelab/platform/bench"
	"github.com/scalelab/scalelab/platform/compose"
)

const chaosUsage = `scalelab chaos: faults at load on the compose stack, counted (issue #30).

  scalelab chaos [flags]

It builds the image (scripts/images.sh), starts compose.yaml as a project
of its own on free loopback ports, and drives a steady mixed load through
the balancer: tally tasks (POST /longtask; the handler records each run on
the stream TASKS_EXEC) and GET /data, PUT then GET /items/{id}. Meanwhile
each fault of the schedule comes in turn, each followed by its recovery:

%s
At the end it waits for the tasks, counts them (submitted, succeeded, dead,
lost, ran more than once), and writes report.md, report.json and timeline
charts to --out, with each fault's failures against its window. Then it
takes the project down. Needs a Docker engine with compose, and the
repository (--repo) for compose.yaml and scripts/images.sh.

Flags:
`

// runChaos runs `scalelab chaos`.
func runChaos(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var list strings.Builder
	for _, f := range bench.ChaosFaults() {
		fmt.Fprintf(&list, "  %-17s %s\n", f.Name, f.Title)
	}
	fs, s := newFlags("scalelab chaos", fmt.Sprintf(chaosUsage, list.String()), getenv, stderr)
	var (
		out, repo, faults, logLevel string
		noProgress                  bool
		gateways, workers           int
		o                           bench.ChaosOptions
	)
	s.String(&out, "out", "SCALELAB_BENCH_OUT", "", "report directory (default bench-results/chaos-<time>)")
	s.Duration(&o.Duration, "duration", "SCALELAB_CHAOS_DURATION", 10*time.Minute, "how long the load runs; the faults share it")
	s.Int(&o.RateTasks, "rate-tasks", "SCALELAB_CHAOS_RATE_TASKS", 200, "tally tasks submitted per second")
	s.Int(&o.RateHTTP, "rate-http", "SCALELAB_CHAOS_RATE_HTTP", 500, "other requests per second: 40% GET /data, 60% PUT then GET /items/{id}")
	s.Int(&o.TaskMillis, "task-ms", "", 20, "each task's duration_ms")
	s.Duration(&o.Hold, "hold", "", 0, "how long each fault lasts before its recovery (0: a quarter of its share of --duration, 1s..10s)")
	s.String(&faults, "faults", "", "", "comma-separated faults to run, in order (default: all, as listed above)")
	s.Duration(&o.Drain, "drain", "", 5*time.Minute, "how long unfinished tasks are waited for at the end (a backlog drains) before they count as lost")
	s.Int(&gateways, "gateways", "", 2, "gateway replicas")
	s.Int(&workers, "workers", "", 2, "worker replicas")
	s.String(&repo, "repo", "", ".", "the repository: compose.yaml and scripts/images.sh")
	s.Bool(&noProgress, "no-progress", "", false, "no progress lines on stderr")
	s.String(&logLevel, "log-level", "SCALELAB_LOG_LEVEL", "warn", "level of the run's own log, on stderr")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := s.Err(); err != nil {
		return usageErr(err)
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return usageErr(fmt.Errorf("chaos: unexpected arguments %q", fs.Args()))
	}
	if faults != "" {
		o.Faults = strings.Split(faults, ",")
	}
	if out == "" {
		out = filepath.Join("bench-results", "chaos-"+time.Now().Format("20060102-150405"))
	}
	o.Out = out
	if err := o.Validate(); err != nil {
		return usageErr(err)
	}
	if gateways < 2 || workers < 2 {
		return usageErr(errors.New("chaos: --gateways and --workers must be at least 2: the run kills one of each"))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return usageErr(fmt.Errorf("chaos: --log-level %q: want debug, info, warn or error", logLevel))
	}
	log, err := newLogger(stderr, logFormatJSON, level)
	if err != nil {
		return usageErr(err)
	}
	o.Log = log
	if !noProgress {
		o.Progress = stderr
	}
	root, err := filepath.Abs(repo)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	cmd, err := compose.Find(ctx)
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	logf := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "chaos: "+format+"\n", args...)
		}
	}
	st, err := compose.Start(ctx, compose.Options{Command: cmd, Root: root, Prefix: "scalelabchaos",
		Gateways: gateways, Workers: workers, Logf: logf})
	if err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	r, runErr := bench.RunChaos(ctx, st, o)
	if runErr != nil {
		logf("the stack's last logs:\n%s", st.Logs(40))
	}
	logf("taking %s down", st.Project)
	if err := errors.Join(runErr, st.Down()); err != nil {
		if errors.Is(runErr, bench.ErrOptions) {
			return usageErr(err)
		}
		return fmt.Errorf("chaos: %w", err)
	}
	for _, f := range r.Findings {
		fmt.Fprintf(stdout, "  - %s\n", f)
	}
	fmt.Fprintf(stdout, "  report: %s\n", filepath.Join(out, "report.md"))
	return nil
}
