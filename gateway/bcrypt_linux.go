package gateway

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// lowerThreadPriority sets the nice value of the calling OS thread, which
// the caller has locked. On Linux a thread id given to setpriority with
// PRIO_PROCESS names that thread alone, not the process.
func lowerThreadPriority(nice int) error {
	tid := unix.Gettid()
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
		return fmt.Errorf("setpriority of thread %d to nice %d: %w", tid, nice, err)
	}
	return nil
}
