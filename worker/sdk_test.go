package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// TestHandleRefuses: Handle panics, as http.Handle does, on what is a
// programming error: a bad name, bad options, a nil handler, a type twice,
// a type after Run; and Run refuses to start twice or with no types.
func TestHandleRefuses(t *testing.T) {
	t.Parallel()
	nc := testutil.Connect(t, testutil.StartNATS(t))
	ok := func(context.Context, *worker.Task) (any, error) { return nil, nil }
	panics := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	w := worker.New(nc, worker.Config{})
	panics("a dotted name", func() { w.Handle("a.b", ok) })
	panics("a bad queue", func() { w.Handle("t", ok, worker.WithQueue("q>")) })
	panics("a schema that is not JSON", func() { w.Handle("t", ok, worker.WithSchema(json.RawMessage(`{`))) })
	panics("a nil handler", func() { w.Handle("t", nil) })
	w.Handle("t", ok)
	panics("a type twice", func() { w.Handle("t", ok) })

	if err := worker.New(nc, worker.Config{}).Run(t.Context()); err == nil || !strings.Contains(err.Error(), "no task types") {
		t.Errorf("Run with no types = %v, want an error saying so", err)
	}
	// A Run stopped before the bus was ready (it is not provisioned here)
	// has still started the worker.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run with a cancelled context = %v, want nil", err)
	}
	panics("a type after Run", func() { w.Handle("late", ok) })
	if err := w.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a second Run = %v, want an error saying Run was called twice", err)
	}
}
