package natsconn

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestReplyMuxConcurrent: many requests at once over one mux each get
// their own reply, which arrives under the service's reply inbox.
func TestReplyMuxConcurrent(t *testing.T) {
	t.Parallel()
	ns := startServer(t, server.Options{})
	responder, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(responder.Close)
	var wrongInbox sync.Map
	// Queue subscribers answering out of order: each echoes the request.
	for range 3 {
		if _, err := responder.QueueSubscribe("echo", "q", func(m *nats.Msg) {
			if !strings.HasPrefix(m.Reply, "_INBOX.gateway.echosvc.") {
				wrongInbox.Store(m.Reply, true)
			}
			_ = m.Respond(m.Data)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.CustomInboxPrefix(InboxPrefix("gateway")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	mux := NewReplyMux(nc, "echosvc")

	var wg sync.WaitGroup
	errs := make(chan error, 50*20)
	for g := range 50 {
		wg.Go(func() {
			for i := range 20 {
				want := fmt.Sprintf("%d-%d", g, i)
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				m, err := mux.Request(ctx, &nats.Msg{Subject: "echo", Data: []byte(want)})
				cancel()
				switch {
				case err != nil:
					errs <- fmt.Errorf("request %s: %w", want, err)
				case string(m.Data) != want:
					errs <- fmt.Errorf("request %s got reply %s", want, m.Data)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wrongInbox.Range(func(k, _ any) bool {
		t.Errorf("reply subject %s is not under _INBOX.gateway.echosvc.", k)
		return true
	})
}

func TestReplyMuxNoRespondersAndTimeout(t *testing.T) {
	t.Parallel()
	ns := startServer(t, server.Options{})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	mux := NewReplyMux(nc, "svc")
	if _, err := mux.Request(t.Context(), nats.NewMsg("nobody")); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("Request(no one listens) = %v, want nats.ErrNoResponders", err)
	}
	// A responder that never answers: the context ends the wait.
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := mux.Request(ctx, nats.NewMsg("silent")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Request(silent) = %v, want context.DeadlineExceeded", err)
	}
}
