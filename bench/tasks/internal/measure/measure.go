// Package measure is the measuring code that bench/tasks's two load
// programs share: driver (scalelab) and asynqbench (Asynq). Both systems
// are paced, timed and costed by this one copy, so a difference between
// their rows in the report is the systems', not the load programs'.
//
// It is internal to bench/tasks: it serves these two programs and makes no
// promise to anything else.
package measure

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Submit calls submit(i) for every i in [0, n), from c goroutines at once,
// and returns when every call has returned. With rate > 0, call i starts no
// earlier than i/rate seconds after start, so a paced run offers a steady
// load instead of bursts; rate 0 submits as fast as the c goroutines go.
//
// submit returns the time task i was accepted, or the zero Time if it was
// not (the caller records the failure). Submit returns the latest of those
// times: the end of the submission phase, from which the caller computes
// its submit rate without counting the failures.
//
// The time comes from submit, not from Submit after it returns, so that
// whatever submit does after taking it (its own bookkeeping) is not counted.
func Submit(ctx context.Context, n, c int, start time.Time, rate int, submit func(i int) time.Time) time.Time {
	var next atomic.Int64
	var mu sync.Mutex
	var last time.Time
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				pace(ctx, start, i, rate)
				t1 := submit(i)
				if t1.IsZero() {
					continue
				}
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

// pace blocks until task i of a run started at start may be submitted at
// rate per second, or ctx is done; rate 0 never blocks. The time is taken
// from start, not from the previous task, so a slow submission does not
// push every later one back.
func pace(ctx context.Context, start time.Time, i, rate int) {
	if rate <= 0 {
		return
	}
	at := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

// Percentile returns the nearest-rank p-quantile (p from 0 to 1) of sorted,
// in milliseconds, or 0 for none. Nearest rank, not interpolation: the
// value is one some task really had.
func Percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = min(max(i, 0), len(sorted)-1)
	return Ms(sorted[i])
}

// Ms returns d in milliseconds with microsecond resolution, the unit of
// every latency in the results, so that all of them are rounded alike.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// AppendResult appends r, JSON-encoded, as one line to the file at path,
// creating it if need be. Every run of every system appends to the same
// file, so run.sh can interleave systems and rounds and report at the end.
// r is any so that each program keeps its own result type (and so its own
// JSON line); the report decodes them all into the driver's Result.
func AppendResult(path string, r any) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write results: %w", err)
	}
	return f.Close()
}
