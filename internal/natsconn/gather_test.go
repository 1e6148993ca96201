package natsconn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// responders connects n processes that answer every request on subject
// with their name, and returns a connection to ask them from.
func responders(t *testing.T, subject string, n int) *nats.Conn {
	t.Helper()
	ns := startServer(t, server.Options{})
	connect := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatalf("nats.Connect() = %v", err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	for i := range n {
		nc := connect()
		name := fmt.Sprintf("r%d", i)
		if _, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(name)) }); err != nil {
			t.Fatalf("Subscribe() = %v", err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatalf("Flush() = %v", err)
		}
	}
	return connect()
}

func names(msgs []*nats.Msg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Data))
	}
	slices.Sort(out)
	return out
}

func TestGatherEveryReply(t *testing.T) {
	t.Parallel()
	nc := responders(t, "svc.ping", 3)
	got, err := Gather(t.Context(), nc, "svc.ping", nil, GatherOptions{First: 5 * time.Second, Stall: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	if want := []string{"r0", "r1", "r2"}; !slices.Equal(names(got), want) {
		t.Errorf("Gather() replies = %v, want %v", names(got), want)
	}
}

func TestGatherEnough(t *testing.T) {
	t.Parallel()
	nc := responders(t, "svc.ping", 3)
	// No stall limit: only Enough can end it before the context.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := Gather(ctx, nc, "svc.ping", nil, GatherOptions{Enough: func(n int) bool { return n >= 2 }})
	if err != nil || len(got) != 2 {
		t.Errorf("Gather(Enough: 2) = %d replies, %v; want 2, nil", len(got), err)
	}
}

func TestGatherNoResponders(t *testing.T) {
	t.Parallel()
	nc := responders(t, "svc.ping", 0)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	start := time.Now()
	got, err := Gather(ctx, nc, "svc.nobody", nil, GatherOptions{First: 10 * time.Second, Stall: 10 * time.Second})
	if err != nil || len(got) != 0 {
		t.Errorf("Gather() with no responders = %d replies, %v; want 0, nil", len(got), err)
	}
	// The server's no-responders status ends it, not the 10 s wait.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Gather() with no responders took %v", d)
	}
}

func TestGatherContextEnds(t *testing.T) {
	t.Parallel()
	nc := responders(t, "svc.ping", 2)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	got, err := Gather(ctx, nc, "svc.ping", nil, GatherOptions{}) // waits for more until ctx ends
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Gather() = %v, want %v", err, context.DeadlineExceeded)
	}
	if len(got) != 2 {
		t.Errorf("Gather() = %d replies, want the 2 that came before the deadline", len(got))
	}
}
