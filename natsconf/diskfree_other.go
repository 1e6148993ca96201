//go:build !(linux || darwin || freebsd)

package natsconf

import (
	"errors"
	"runtime"
)

// diskFree is not implemented here: GuardStore then returns an error, and
// `up` runs without the guard (the server's own limit applies).
func diskFree(string) (int64, error) {
	return 0, errors.New("free disk space is not read on " + runtime.GOOS)
}
