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
	// Queues are the queues this worker serves, in priority order, each
	// with its weight (ParseQueues reads the --queues syntax). Empty is,
	// for the worker role, DefaultQueues, and for a program's own Worker
	// the queues of the types it handles (WithQueue, else the default
	// queue), weight 1 each.
	Queues []Queue
	// StrictPriority makes a free slot take a task from the first queue in
	// Queues that has one; otherwise it picks a queue at random by weight
	// among those with work, so no queue starves.
	StrictPriority bool
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
		Queues:          DefaultQueues(),
	}
}

// Queue is a queue a worker serves, with its weight.
type Queue struct {
	// Name is the queue's name (task.ValidName).
	Name string
	// Weight is the queue's share of the free slots when several queues
	// have work (Config.StrictPriority off): 1 or more.
	Weight int
}

// DefaultQueues are the built-in queues, weighted 6:3:1 as Asynq's
// example: with all three busy, 60 % of the slots that free up take a
// critical task, 30 % a default one and 10 % a low one; a queue with
// nothing to do gives its share to the others.
//
// Weighted rather than strict by default: under strict priority a steady
// stream of default tasks would hold every low task forever, and an
// operator who wants that says so (--strict-priority, or --queues without
// weights).
func DefaultQueues() []Queue {
	return []Queue{{Name: "critical", Weight: 6}, {Name: task.DefaultQueue, Weight: 3}, {Name: "low", Weight: 1}}
}

// ParseQueues parses the --queues syntax: "critical,default,low" (strict
// priority in that order: strict is true) or "critical=6,default=3,low=1"
// (weights). All queues have a weight or none has.
func ParseQueues(v string) (queues []Queue, strict bool, err error) {
	parts := strings.Split(v, ",")
	weighted := strings.Contains(v, "=")
	seen := map[string]bool{}
	for _, part := range parts {
		name, w, hasW := strings.Cut(strings.TrimSpace(part), "=")
		q := Queue{Name: name, Weight: 1}
		if hasW != weighted {
			return nil, false, fmt.Errorf("%q: give every queue a weight (critical=6,default=3,low=1) or none (critical,default,low)", v)
		}
		if hasW {
			if q.Weight, err = strconv.Atoi(w); err != nil || q.Weight < 1 {
				return nil, false, fmt.Errorf("%q: weight of queue %q must be a whole number, at least 1", v, name)
			}
		}
		if !task.ValidName(name) {
			return nil, false, fmt.Errorf("%q: queue name %q must be 1-%d letters, digits, '_' or '-'", v, name, task.MaxNameLen)
		}
		if seen[name] {
			return nil, false, fmt.Errorf("%q: queue %q named twice", v, name)
		}
		seen[name] = true
		queues = append(queues, q)
	}
	return queues, !weighted, nil
}

// validateQueues reports a bad queue list.
func validateQueues(qs []Queue) error {
	seen := map[string]bool{}
	for _, q := range qs {
		switch {
		case !task.ValidName(q.Name):
			return fmt.Errorf("worker: --queues names %q: a queue name is 1-%d letters, digits, '_' or '-'", q.Name, task.MaxNameLen)
		case q.Weight < 1:
			return fmt.Errorf("worker: --queues weight of queue %q must be at least 1, got %d", q.Name, q.Weight)
		case seen[q.Name]:
			return fmt.Errorf("worker: --queues names queue %q twice", q.Name)
		}
		seen[q.Name] = true
	}
	return nil
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
	s.Func("queues", "SCALELAB_QUEUES", "queues served, highest priority first: critical,default,low (strict priority) or critical=6,default=3,low=1 (weighted; the default)", func(v string) error {
		qs, strict, err := ParseQueues(v)
		if err == nil {
			c.Queues, c.StrictPriority = qs, c.StrictPriority || strict
		}
		return err
	})
	s.Bool(&c.StrictPriority, "strict-priority", "SCALELAB_STRICT_PRIORITY", c.StrictPriority, "take tasks from the first of --queues that has one, ignoring weights (a busy queue starves the ones after it)")
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
	if err := validateQueues(c.Queues); err != nil {
		errs = append(errs, err)
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
