package main

import "slices"

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
