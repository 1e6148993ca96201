package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is one measured run of one system: one JSON line in the results
// file. Fields a system does not measure stay zero and are left out.
type Result struct {
	System string `json:"system"` // scalelab, asynq, jetstream-pub, jetstream-consume, jetstream-consume-doubleack
	Round  int    `json:"round"`
	N      int    `json:"n"`           // tasks (or messages) asked for
	C      int    `json:"c,omitempty"` // submitters at once
	OK     int    `json:"ok"`          // tasks that ended succeeded (messages for nats bench)
	Failed int    `json:"failed,omitempty"`
	Errors int    `json:"errors,omitempty"` // submissions refused or failed

	Seconds     float64 `json:"seconds"`       // first submit to last success
	TasksPerSec float64 `json:"tasks_per_sec"` // OK / Seconds
	SubmitPerS  float64 `json:"submit_per_sec,omitempty"`
	P50ms       float64 `json:"p50_ms,omitempty"`
	P99ms       float64 `json:"p99_ms,omitempty"`
	MaxMs       float64 `json:"max_ms,omitempty"`

	// CPU seconds used during the measured phase.
	SUTCPU    float64 `json:"sut_cpu_s,omitempty"`    // scalelab up (all roles + embedded NATS), or redis-server
	DriverCPU float64 `json:"driver_cpu_s,omitempty"` // this driver (scalelab) or asynqbench (client + asynq server)
	// SUTSyscalls is the read and write system calls (/proc/<pid>/io
	// syscr + syscw) the system under test made during the measured phase.
	SUTSyscalls int64 `json:"sut_syscalls,omitempty"`
	Rate        int   `json:"rate,omitempty"` // submissions per second when paced; 0: as fast as possible
	// MachineBusy and MachineSteal are the shares of all the machine's CPUs
	// busy (every process) and stolen by the hypervisor during the phase.
	MachineBusy  float64 `json:"machine_busy,omitempty"`
	MachineSteal float64 `json:"machine_steal,omitempty"`

	// NATS traffic seen by the server during the measured phase (scalelab).
	InClientMsgs  int64   `json:"in_client_msgs,omitempty"`
	OutClientMsgs int64   `json:"out_client_msgs,omitempty"`
	WatchMsgs     int64   `json:"watch_msgs,omitempty"` // of OutClientMsgs, the ones sent to this driver's watcher
	WatchLagP50ms float64 `json:"watch_lag_p50_ms,omitempty"`
}

// appendResult appends r as one JSON line to path.
func appendResult(path string, r Result) error {
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

// percentile returns the nearest-rank p-quantile (0..1) of sorted ds in ms.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = min(max(i, 0), len(sorted)-1)
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median returns the median of xs (the mean of the middle two for an even
// count), or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// clkTck is Linux's USER_HZ, the unit of /proc/<pid>/stat times; it is 100
// on every mainstream architecture.
const clkTck = 100

// cpuSeconds returns the user+system CPU time of a process from
// /proc/<pid>/stat ("self" for this one), or 0 if it cannot be read.
func cpuSeconds(pid string) float64 {
	if pid == "" || pid == "0" {
		return 0
	}
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: parse after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // field 14: utime
	st, err2 := strconv.ParseFloat(f[12], 64) // field 15: stime
	if err1 != nil || err2 != nil {
		return 0
	}
	return (ut + st) / clkTck
}

// ioSyscalls returns the read and write system calls a process has made
// (syscr + syscw in /proc/<pid>/io), or 0 if they cannot be read.
func ioSyscalls(pid string) int64 {
	if pid == "" || pid == "0" {
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
		x, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err == nil {
			n += x
		}
	}
	return n
}

// pace blocks until task i of a run started at start may be submitted at
// rate per second; rate 0 never blocks.
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
