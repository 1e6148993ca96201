package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestFront: the -front mode answers through scalelab's balancer (its
// X-Request-Id on the answer) with the trivial server's body, and stops
// with its ctx.
func TestFront(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- serveFront(ctx, ln, trivialHandler()) }()
	// The listener is bound: the request waits in its backlog until the
	// balancer accepts it.
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + ln.Addr().String() + "/data")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != body || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("GET /data = %d %q, X-Request-Id %q; want the trivial body, through the balancer",
			resp.StatusCode, b, resp.Header.Get("X-Request-Id"))
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveFront = %v after its ctx ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serveFront did not return after its ctx ended")
	}
}
