//go:build linux || darwin || freebsd

package natsconf

import (
	"fmt"
	"syscall"
)

// diskFree returns the bytes of dir's filesystem that an unprivileged
// writer may still use (statfs's available blocks, not its free ones,
// which include root's reserve).
func diskFree(dir string) (int64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(uint64(fs.Bavail) * uint64(fs.Bsize)), nil
}
