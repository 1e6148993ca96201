// Command asynqbench is the Asynq side of bench/tasks/run.sh: the peer a Go
// user would pick instead of scalelab's task pipeline.
//
// In one process it runs an asynq.Server (Concurrency workers, like
// scalelab's workers × worker-concurrency) and C client goroutines that
// enqueue N no-op tasks. Each task's payload carries its index; the client
// notes the time just before Enqueue, the handler the time it runs (it does
// nothing else). Throughput is N / (first enqueue → last handler); latency
// is enqueue → handler, per task.
//
// Durability on the Asynq side is Redis's: run.sh starts redis-server with
// appendonly yes, appendfsync everysec. Tasks are kept after completion
// (asynq.Retention) by default, as scalelab keeps its task records.
//
// It is part of the bench/tasks module, not the root one, so the product's
// go.mod stays clean; what it measures the same way as the driver (pacing,
// latency percentiles, CPU and syscall costs, the result file) is in
// bench/tasks/internal/measure.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/scalelab/scalelab/bench/tasks/internal/measure"
)

const taskType = "noop"

type payload struct {
	I int `json:"i"`
}

// result is one JSON line of the results file; the field names match the
// driver's Result, which the report decodes it into. It stays a type of its
// own so its line stays as it is: unlike the driver's, it writes c,
// submit_per_sec and the latencies even when they are zero.
type result struct {
	System      string  `json:"system"`
	Round       int     `json:"round"`
	N           int     `json:"n"`
	C           int     `json:"c"`
	OK          int     `json:"ok"`
	Errors      int     `json:"errors,omitempty"`
	Seconds     float64 `json:"seconds"`
	TasksPerSec float64 `json:"tasks_per_sec"`
	SubmitPerS  float64 `json:"submit_per_sec"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	SUTCPU      float64 `json:"sut_cpu_s,omitempty"`
	DriverCPU   float64 `json:"driver_cpu_s,omitempty"`
	SUTSyscalls int64   `json:"sut_syscalls,omitempty"`
	Rate        int     `json:"rate,omitempty"`
	// Shares of all the machine's CPUs busy, and stolen by the hypervisor.
	MachineBusy  float64 `json:"machine_busy,omitempty"`
	MachineSteal float64 `json:"machine_steal,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "asynqbench:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("redis", "127.0.0.1:6379", "redis address")
	redisPID := flag.String("redis-pid", "", "pid of redis-server, for its CPU time (optional)")
	n := flag.Int("n", 10000, "tasks to enqueue")
	c := flag.Int("c", 32, "enqueues in flight at once")
	workers := flag.Int("workers", 8, "asynq server concurrency (scalelab: workers × worker-concurrency)")
	rate := flag.Int("rate", 0, "pace enqueues at this many per second (0: as fast as possible)")
	warmup := flag.Int("warmup", 200, "tasks enqueued and awaited first, not measured")
	checkInterval := flag.Duration("task-check-interval", 0, "asynq TaskCheckInterval (0: Asynq's default, 1s)")
	retention := flag.Duration("retention", 24*time.Hour, "keep completed tasks this long (0: delete at once, Asynq's default)")
	name := flag.String("name", "asynq", "system name in the result (paced runs get @RATE/s appended)")
	round := flag.Int("round", 0, "round number, copied to the result")
	timeout := flag.Duration("timeout", 3*time.Minute, "give up on the measured phase after this long")
	out := flag.String("out", "", "append the JSON result line to this file")
	flag.Parse()
	if *n < 1 || *c < 1 || *workers < 1 {
		return errors.New("-n, -c and -workers must be positive")
	}

	// A queue of its own per run: nothing left from an earlier round mixes in.
	queue := "bench" + strconv.FormatInt(time.Now().UnixNano(), 36)
	opt := asynq.RedisClientOpt{Addr: *addr}

	var cur atomic.Pointer[phase]
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskType, func(ctx context.Context, t *asynq.Task) error {
		now := time.Now()
		var p payload
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return fmt.Errorf("decode payload: %v: %w", err, asynq.SkipRetry)
		}
		if ph := cur.Load(); ph != nil {
			ph.done(p.I, now)
		}
		return nil
	})
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:       *workers,
		Queues:            map[string]int{queue: 1},
		TaskCheckInterval: *checkInterval,
		LogLevel:          asynq.WarnLevel,
	})
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	defer srv.Shutdown()
	client := asynq.NewClient(opt)
	defer client.Close()

	// enqueue returns the time the last Enqueue returned. Nothing cancels
	// it but the timeout run.sh puts on the whole process.
	enqueue := func(ph *phase, start time.Time, rate int) time.Time {
		return measure.Submit(context.Background(), ph.n, *c, start, rate, func(i int) time.Time {
			b, _ := json.Marshal(payload{I: i})
			ph.submitted[i] = time.Now()
			_, err := client.Enqueue(asynq.NewTask(taskType, b), asynq.Queue(queue), asynq.Retention(*retention))
			if err != nil {
				ph.fail(err)
				return time.Time{}
			}
			return time.Now()
		})
	}

	if *warmup > 0 {
		ph := newPhase(*warmup)
		cur.Store(ph)
		enqueue(ph, time.Now(), 0)
		if err := ph.wait(*timeout); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	ph := newPhase(*n)
	cur.Store(ph)
	u0 := measure.ReadUsage(*redisPID)
	start := time.Now()
	lastEnq := enqueue(ph, start, *rate)
	werr := ph.wait(*timeout)
	used := measure.ReadUsage(*redisPID).Since(u0)

	r := ph.result(start)
	r.System, r.Round, r.C, r.Rate = *name, *round, *c, *rate
	if *rate > 0 {
		r.System = fmt.Sprintf("%s@%d/s", *name, *rate)
	}
	if acc := *n - r.Errors; acc > 0 {
		r.SubmitPerS = float64(acc) / lastEnq.Sub(start).Seconds()
	}
	r.SUTCPU, r.DriverCPU, r.SUTSyscalls = used.SUTCPU, used.SelfCPU, used.SUTSyscalls
	r.MachineBusy, r.MachineSteal = used.MachineBusy, used.MachineSteal
	fmt.Fprintf(os.Stderr, "%s round %d: %d ok, %d errors, %.0f tasks/s, p50 %.1f ms, p99 %.1f ms, enqueue %.0f/s\n",
		r.System, *round, r.OK, r.Errors, r.TasksPerSec, r.P50ms, r.P99ms, r.SubmitPerS)
	if *out != "" {
		if err := measure.AppendResult(*out, r); err != nil {
			return err
		}
	}
	return werr
}

// phase is one batch of tasks: the warm-up or the measured run.
type phase struct {
	n         int
	submitted []time.Time // written by the enqueuer of i before Enqueue
	handled   []atomic.Int64
	mu        sync.Mutex
	errs      []error
	remaining atomic.Int64
	all       chan struct{}
}

func newPhase(n int) *phase {
	ph := &phase{n: n, submitted: make([]time.Time, n), handled: make([]atomic.Int64, n), all: make(chan struct{})}
	ph.remaining.Store(int64(n))
	return ph
}

// done records the first run of task i (Asynq delivers at least once).
func (ph *phase) done(i int, t time.Time) {
	if i < 0 || i >= ph.n || !ph.handled[i].CompareAndSwap(0, t.UnixNano()) {
		return
	}
	ph.settle()
}

func (ph *phase) fail(err error) {
	ph.mu.Lock()
	ph.errs = append(ph.errs, err)
	ph.mu.Unlock()
	ph.settle()
}

func (ph *phase) settle() {
	if ph.remaining.Add(-1) == 0 {
		close(ph.all)
	}
}

func (ph *phase) wait(timeout time.Duration) error {
	select {
	case <-ph.all:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%d of %d tasks not handled after %v", ph.remaining.Load(), ph.n, timeout)
	}
}

func (ph *phase) result(start time.Time) result {
	ph.mu.Lock()
	r := result{N: ph.n, Errors: len(ph.errs)}
	if len(ph.errs) > 0 {
		fmt.Fprintf(os.Stderr, "first enqueue error: %v\n", ph.errs[0])
	}
	ph.mu.Unlock()
	var lat []time.Duration
	var end int64
	for i := range ph.n {
		h := ph.handled[i].Load()
		if h == 0 {
			continue
		}
		r.OK++
		lat = append(lat, time.Unix(0, h).Sub(ph.submitted[i]))
		end = max(end, h)
	}
	if r.OK == 0 {
		return r
	}
	slices.Sort(lat)
	r.Seconds = time.Unix(0, end).Sub(start).Seconds()
	r.TasksPerSec = float64(r.OK) / r.Seconds
	r.P50ms, r.P99ms, r.MaxMs = measure.Percentile(lat, 0.50), measure.Percentile(lat, 0.99), measure.Ms(lat[len(lat)-1])
	return r
}
