package worker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/task"
)

// Config is the worker's configuration.
type Config struct {
	// ID names this worker in logs, task records and process replies.
	ID string
	// Addr is the ops HTTP address; empty disables ops HTTP.
	Addr string
	// Listener, when set, is served for ops instead of listening on Addr.
	Listener net.Listener
	// Concurrency is how many tasks this worker runs at once. It also sizes
	// the pull buffer, so a worker never holds tasks it is not running.
	Concurrency int
	// AckWait is how long JetStream waits for an ack (or an InProgress
	// heartbeat) before it redelivers a task to another worker.
	AckWait time.Duration
	// MaxAttempts is how many times a task is tried before it is dead
	// (moved to TASKS_DLQ), unless its type has its own limit in
	// AttemptsByType.
	MaxAttempts int
	// AttemptsByType overrides MaxAttempts per task type.
	AttemptsByType map[string]int
	// TaskTimeout cancels a handler that runs longer.
	TaskTimeout time.Duration
	// RetryDelay is the base of the exponential back-off between attempts.
	RetryDelay time.Duration
	// ReportDuration is how long the lab's report task works.
	ReportDuration time.Duration
	// ShutdownTimeout is how long running tasks may take to finish on
	// shutdown before they are interrupted and handed back to the queue.
	ShutdownTimeout time.Duration
	// Provision is how the TASKS stream and tasks bucket are expected to
	// be sized; their provisioner (admin) sizes them, and Run warns when
	// they differ (task.Open).
	Provision task.ProvisionConfig
	// Handlers adds or replaces task handlers by type, for the worker
	// role's Run; tests use it. A program of its own uses Handle.
	Handlers map[string]Handler
	// Logger receives the worker's logs; nil is slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of DESIGN.md.
func DefaultConfig() Config {
	return Config{
		Concurrency:     4,
		AckWait:         30 * time.Second,
		MaxAttempts:     5,
		TaskTimeout:     15 * time.Minute,
		RetryDelay:      time.Second,
		ReportDuration:  5 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		Provision:       task.DefaultProvisionConfig(),
	}
}

// RegisterFlags defines the worker's flags on s, with SCALELAB_* fallbacks.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.ID, "id", "SCALELAB_ID", c.ID, "worker id shown in logs and task records")
	s.String(&c.Addr, "addr", "SCALELAB_ADDR", c.Addr, "ops HTTP address for /healthz, /readyz, /metrics (empty: none)")
	s.Int(&c.Concurrency, "concurrency", "SCALELAB_CONCURRENCY", c.Concurrency, "tasks run at once by this worker")
	s.Duration(&c.AckWait, "ack-wait", "SCALELAB_ACK_WAIT", c.AckWait, "redeliver a task whose worker went silent for this long")
	s.Int(&c.MaxAttempts, "max-attempts", "SCALELAB_MAX_ATTEMPTS", c.MaxAttempts, "attempts before a task is dead (moved to TASKS_DLQ)")
	s.Func("max-attempts-by-type", "SCALELAB_MAX_ATTEMPTS_BY_TYPE", "per-type attempts, e.g. report=3,sleep=10", func(v string) error {
		m, err := parseAttempts(v)
		if err == nil {
			c.AttemptsByType = m
		}
		return err
	})
	s.Duration(&c.TaskTimeout, "task-timeout", "SCALELAB_TASK_TIMEOUT", c.TaskTimeout, "cancel a task running longer")
	s.Duration(&c.RetryDelay, "retry-delay", "SCALELAB_RETRY_DELAY", c.RetryDelay, "base delay between attempts (doubles each attempt)")
	s.Duration(&c.ReportDuration, "report-duration", "SCALELAB_REPORT_DURATION", c.ReportDuration, "how long the report task works")
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", "SCALELAB_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "grace period for running tasks on shutdown")
	c.Provision.RegisterFlags(s)
}

// Validate reports every bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("worker: --id must not be empty"))
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		errs = append(errs, fmt.Errorf("worker: --concurrency must be 1..1024, got %d", c.Concurrency))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("worker: --ack-wait must be at least 1s, got %v", c.AckWait))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("worker: --max-attempts must be at least 1, got %d", c.MaxAttempts))
	}
	for typ, n := range c.AttemptsByType {
		if n < 1 {
			errs = append(errs, fmt.Errorf("worker: --max-attempts-by-type %q: want type=N with N at least 1", typ))
		}
	}
	if c.TaskTimeout <= 0 {
		errs = append(errs, fmt.Errorf("worker: --task-timeout must be positive, got %v", c.TaskTimeout))
	}
	if c.RetryDelay < 0 {
		errs = append(errs, fmt.Errorf("worker: --retry-delay must not be negative, got %v", c.RetryDelay))
	}
	if c.ReportDuration < 0 {
		errs = append(errs, fmt.Errorf("worker: --report-duration must not be negative, got %v", c.ReportDuration))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("worker: --shutdown-timeout must not be negative, got %v", c.ShutdownTimeout))
	}
	if err := c.Provision.Validate("worker"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// maxAttempts is the attempt limit of tasks of type typ.
func (c Config) maxAttempts(typ string) int {
	if n, ok := c.AttemptsByType[typ]; ok {
		return n
	}
	return c.MaxAttempts
}

// attemptsOf is the attempt limit of the task rec: the operator's
// --max-attempts-by-type for its type, else its type's registered limit
// (copied into the record at submission), else --max-attempts.
func (c Config) attemptsOf(rec *task.Record) int {
	if n, ok := c.AttemptsByType[rec.Type]; ok {
		return n
	}
	if rec.MaxAttempts > 0 {
		return rec.MaxAttempts
	}
	return c.MaxAttempts
}

// timeoutOf is how long one attempt of the task rec may run: its type's
// registered timeout (copied into the record at submission), else
// --task-timeout.
func (c Config) timeoutOf(rec *task.Record) time.Duration {
	if rec != nil && rec.TimeoutMS > 0 {
		return time.Duration(rec.TimeoutMS) * time.Millisecond
	}
	return c.TaskTimeout
}

// parseAttempts parses "type=N,type=N".
func parseAttempts(v string) (map[string]int, error) {
	m := map[string]int{}
	for _, part := range strings.Split(v, ",") {
		typ, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		count, err := strconv.Atoi(n)
		if !ok || typ == "" || err != nil {
			return nil, fmt.Errorf("%q: want type=N", part)
		}
		m[typ] = count
	}
	return m, nil
}
