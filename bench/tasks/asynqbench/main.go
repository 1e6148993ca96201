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
// It lives in its own module so the product's go.mod stays clean.
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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
)

const taskType = "noop"

type payload struct {
	I int `json:"i"`
}

// result is one JSON line of the results file; the field names match the
// driver's Result.
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

	enqueue := func(ph *phase, start time.Time, rate int) time.Time {
		var next atomic.Int64
		var mu sync.Mutex
		var last time.Time
		var wg sync.WaitGroup
		for range *c {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= ph.n {
						return
					}
					pace(start, i, rate)
					b, _ := json.Marshal(payload{I: i})
					ph.submitted[i] = time.Now()
					_, err := client.Enqueue(asynq.NewTask(taskType, b), asynq.Queue(queue), asynq.Retention(*retention))
					if err != nil {
						ph.fail(err)
						continue
					}
					t1 := time.Now()
					mu.Lock()
					if t1.After(last) {
						last = t1
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return last
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
	redis0, self0, sys0, m0 := cpuSeconds(*redisPID), cpuSeconds("self"), ioSyscalls(*redisPID), machineCPU()
	start := time.Now()
	lastEnq := enqueue(ph, start, *rate)
	werr := ph.wait(*timeout)
	redis1, self1, sys1, m1 := cpuSeconds(*redisPID), cpuSeconds("self"), ioSyscalls(*redisPID), machineCPU()

	r := ph.result(start)
	r.System, r.Round, r.C, r.Rate = *name, *round, *c, *rate
	if *rate > 0 {
		r.System = fmt.Sprintf("%s@%d/s", *name, *rate)
	}
	if acc := *n - r.Errors; acc > 0 {
		r.SubmitPerS = float64(acc) / lastEnq.Sub(start).Seconds()
	}
	r.SUTCPU, r.DriverCPU, r.SUTSyscalls = redis1-redis0, self1-self0, sys1-sys0
	r.MachineBusy, r.MachineSteal = m1.share(m0)
	fmt.Fprintf(os.Stderr, "%s round %d: %d ok, %d errors, %.0f tasks/s, p50 %.1f ms, p99 %.1f ms, enqueue %.0f/s\n",
		r.System, *round, r.OK, r.Errors, r.TasksPerSec, r.P50ms, r.P99ms, r.SubmitPerS)
	if *out != "" {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		if _, err := f.Write(append(b, '\n')); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
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
	r.P50ms, r.P99ms, r.MaxMs = pct(lat, 0.50), pct(lat, 0.99), msOf(lat[len(lat)-1])
	return r
}

func pct(sorted []time.Duration, p float64) float64 {
	i := int(p*float64(len(sorted))+0.5) - 1
	return msOf(sorted[min(max(i, 0), len(sorted)-1)])
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// cpuSeconds returns the user+system CPU seconds of a process from
// /proc/<pid>/stat ("self" for this one), or 0 if it cannot be read.
func cpuSeconds(pid string) float64 {
	if pid == "" {
		return 0
	}
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return (ut + st) / 100 // USER_HZ
}

// ioSyscalls returns the read and write system calls a process has made
// (syscr + syscw in /proc/<pid>/io), or 0 if they cannot be read.
func ioSyscalls(pid string) int64 {
	if pid == "" {
		return 0
	}
	b, err := os.ReadFile("/proc/" + pid + "/io")
	if err != nil {
		return 0
	}
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "syscr" && k != "syscw") {
			continue
		}
		if x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			n += x
		}
	}
	return n
}

// pace blocks until task i of a run started at start may be enqueued at
// rate per second; rate 0 never blocks.
func pace(start time.Time, i, rate int) {
	if rate <= 0 {
		return
	}
	at := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
	time.Sleep(time.Until(at))
}

// cpuTimes is the machine-wide CPU time from /proc/stat's "cpu" line, in
// ticks: busy (everything but idle, iowait and steal), steal (taken by the
// hypervisor for other guests) and the total.
type cpuTimes struct{ busy, steal, total float64 }

func machineCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, s := range f[1:] {
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		t.total += x
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			t.steal += x
		default:
			t.busy += x
		}
	}
	return t
}

// share returns busy and steal over [a, b] as fractions of all CPUs.
func (b cpuTimes) share(a cpuTimes) (busy, steal float64) {
	d := b.total - a.total
	if d <= 0 {
		return 0, 0
	}
	return (b.busy - a.busy) / d, (b.steal - a.steal) / d
}
