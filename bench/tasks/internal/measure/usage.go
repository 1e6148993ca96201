package measure

import (
	"os"
	"strconv"
	"strings"
)

// Usage is one reading of the counters behind the cost columns of the
// report. Take one just before and one just after the measured phase and
// subtract them (Since): the counters run from process or boot start, so
// only the difference belongs to the phase.
type Usage struct {
	sutCPU, selfCPU float64
	sutSyscalls     int64
	machine         cpuTimes
}

// ReadUsage reads the counters now: of the system under test (sutPID, its
// pid: scalelab up, or redis-server; empty or "0" if not measured), of this
// process, and of the whole machine. Every counter that cannot be read is
// 0, so a missing /proc costs a column, not the run.
func ReadUsage(sutPID string) Usage {
	return Usage{
		sutCPU:      cpuSeconds(sutPID),
		selfCPU:     cpuSeconds("self"),
		sutSyscalls: ioSyscalls(sutPID),
		machine:     machineCPU(),
	}
}

// Used is what was used between two readings.
type Used struct {
	SUTCPU  float64 // CPU seconds of the system under test
	SelfCPU float64 // CPU seconds of this process: the load, and for asynqbench the Asynq workers too
	// SUTSyscalls is the read and write system calls of the system under
	// test (/proc/<pid>/io syscr + syscw): a cost the CPU time hides, one
	// per socket read or write.
	SUTSyscalls int64
	// MachineBusy and MachineSteal are the shares (0 to 1) of all the
	// machine's CPUs busy (every process) and stolen by the hypervisor: the
	// load program shares the machine, so a busy one explains a ceiling.
	MachineBusy, MachineSteal float64
}

// Since returns what was used from the reading before to u.
func (u Usage) Since(before Usage) Used {
	busy, steal := u.machine.share(before.machine)
	return Used{
		SUTCPU:       u.sutCPU - before.sutCPU,
		SelfCPU:      u.selfCPU - before.selfCPU,
		SUTSyscalls:  u.sutSyscalls - before.sutSyscalls,
		MachineBusy:  busy,
		MachineSteal: steal,
	}
}

// clkTck is Linux's USER_HZ, the unit of /proc/<pid>/stat times; it is 100
// on every mainstream architecture.
const clkTck = 100

// procFile reads /proc/<pid>/<name>, or returns nil when there is no pid
// ("" or "0") or the file cannot be read: the process has gone, or the
// system is not Linux.
func procFile(pid, name string) []byte {
	if pid == "" || pid == "0" {
		return nil
	}
	b, err := os.ReadFile("/proc/" + pid + "/" + name)
	if err != nil {
		return nil
	}
	return b
}

// cpuSeconds returns the user+system CPU time of a process from
// /proc/<pid>/stat ("self" for this one), or 0 if it cannot be read.
func cpuSeconds(pid string) float64 {
	b := procFile(pid, "stat")
	if b == nil {
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
	b := procFile(pid, "io")
	if b == nil {
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

// cpuTimes is the machine-wide CPU time from /proc/stat's "cpu" line, in
// ticks: busy (everything but idle, iowait and steal), steal (taken by the
// hypervisor for other guests) and the total.
type cpuTimes struct{ busy, steal, total float64 }

// machineCPU reads /proc/stat, or returns zeros if it cannot.
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
