package testutil

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Running is a role's Run (or any ctx-bound function) started by Start.
type Running struct {
	cancel context.CancelFunc
	done   chan error
}

// Start runs run in a goroutine with a context it cancels on Stop. At
// cleanup it is stopped, and the test fails unless run returned nil: a
// role must stop cleanly when its context ends.
func Start(t testing.TB, run func(ctx context.Context) error) *Running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	r := &Running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx) }()
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	return r
}

// Stop cancels the context and returns run's result. It may be called
// more than once; it gives up after 30 s.
func (r *Running) Stop() error {
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the next call
		return err
	case <-time.After(30 * time.Second):
		return errors.New("Run did not return within 30s of cancel")
	}
}

// Exited reports whether run has returned, and its result. Readiness polls
// use it to fail fast when a role dies during start-up.
func (r *Running) Exited() (bool, error) {
	select {
	case err := <-r.done:
		r.done <- err
		return true, err
	default:
		return false, nil
	}
}
