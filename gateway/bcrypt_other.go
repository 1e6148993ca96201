//go:build !linux

package gateway

import (
	"errors"
	"fmt"
)

// lowerThreadPriority is Linux only: elsewhere setpriority would change
// the whole process, or thread priorities work otherwise.
func lowerThreadPriority(nice int) error {
	return fmt.Errorf("nice %d for one thread: %w", nice, errors.ErrUnsupported)
}
