package worker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/internal/wire"
	"github.com/scalelab/scalelab/worker"
)

// waitProcessFrom calls the process service until a reply comes from the
// worker id, which shows that worker's service instance is registered.
func waitProcessFrom(t *testing.T, nc *nats.Conn, id string) {
	t.Helper()
	client := worker.NewProcessClient(nc, time.Second)
	testutil.Eventually(t, 10*time.Second, func() error {
		reply, err := client.Process(t.Context(), "wait")
		if err != nil {
			return err
		}
		if reply.Worker != id {
			return fmt.Errorf("reply from %q, want %q", reply.Worker, id)
		}
		return nil
	})
}

func TestProcessReply(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	startWorker(t, e.ns, testConfig("w1"))
	waitProcessFrom(t, e.nc, "w1")

	tests := []struct {
		name      string
		requestID string
		want      map[string]any
	}{
		{
			name:      "with request id",
			requestID: "rid-42",
			want:      map[string]any{"message": "Business logic executed", "worker": "w1", "request_id": "rid-42"},
		},
		{
			name: "without request id",
			want: map[string]any{"message": "Business logic executed", "worker": "w1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := nats.NewMsg(wire.ProcessSubject)
			if tt.requestID != "" {
				msg.Header.Set(reqid.Header, tt.requestID)
			}
			resp, err := e.nc.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatalf("RequestMsg(%s) = %v", wire.ProcessSubject, err)
			}
			var got map[string]any
			if err := json.Unmarshal(resp.Data, &got); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", resp.Data, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("reply mismatch (-want +got):\n%s", diff)
			}

			reply, err := worker.NewProcessClient(e.nc, 5*time.Second).Process(t.Context(), tt.requestID)
			if err != nil {
				t.Fatalf("Process(%q) = %v, want nil error", tt.requestID, err)
			}
			want := worker.ProcessReply{Message: "Business logic executed", Worker: "w1", RequestID: tt.requestID}
			if reply != want {
				t.Errorf("Process(%q) = %+v, want %+v", tt.requestID, reply, want)
			}
		})
	}
}

func TestProcessDiscoverable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	startWorker(t, e.ns, testConfig("w1"))
	waitProcessFrom(t, e.nc, "w1")

	resp, err := e.nc.Request("$SRV.PING."+wire.ProcessService, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("Request($SRV.PING.%s) = %v", wire.ProcessService, err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(resp.Data, &ping); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", resp.Data, err)
	}
	if ping.Name != wire.ProcessService || ping.Metadata["worker"] != "w1" {
		t.Errorf("PING = name %q, metadata %v; want name %q, worker w1", ping.Name, ping.Metadata, wire.ProcessService)
	}

	resp, err = e.nc.Request("$SRV.INFO."+wire.ProcessService, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("Request($SRV.INFO.%s) = %v", wire.ProcessService, err)
	}
	var info micro.Info
	if err := json.Unmarshal(resp.Data, &info); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", resp.Data, err)
	}
	if len(info.Endpoints) != 1 || info.Endpoints[0].Subject != wire.ProcessSubject || info.Endpoints[0].QueueGroup == "" {
		t.Errorf("INFO endpoints = %+v, want one on %s in a queue group", info.Endpoints, wire.ProcessSubject)
	}
}

func TestProcessLoadBalanced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	startWorker(t, e.ns, testConfig("w1"))
	waitProcessFrom(t, e.nc, "w1")
	startWorker(t, e.ns, testConfig("w2"))
	waitProcessFrom(t, e.nc, "w2")

	client := worker.NewProcessClient(e.nc, 5*time.Second)
	served := map[string]int{}
	for i := range 20 {
		reply, err := client.Process(t.Context(), fmt.Sprintf("lb-%d", i))
		if err != nil {
			t.Fatalf("Process(lb-%d) = %v", i, err)
		}
		served[reply.Worker]++
	}
	// Both answer; with random queue-group picks the chance that one worker
	// gets all 20 is 2^-19.
	if len(served) != 2 || served["w1"] == 0 || served["w2"] == 0 {
		t.Errorf("20 requests served by %v, want both w1 and w2", served)
	}
}

func TestProcessUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	check := func(t *testing.T) {
		t.Helper()
		start := time.Now()
		_, err := worker.NewProcessClient(e.nc, 5*time.Second).Process(t.Context(), "nobody")
		elapsed := time.Since(start)
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Code != apperr.Unavailable {
			t.Errorf("Process() error = %v, want *apperr.Error with code %s", err, apperr.Unavailable)
		}
		if elapsed >= time.Second {
			t.Errorf("Process() took %v with no worker, want < 1s (no responders, not the timeout)", elapsed)
		}
	}

	t.Run("no worker ever", check)

	t.Run("worker stopped", func(t *testing.T) {
		w := startWorker(t, e.ns, testConfig("w1"))
		waitProcessFrom(t, e.nc, "w1")
		w.stop(t)
		// Run has unsubscribed; the caller's drain (here a flush) puts the
		// unsubscription on the wire before anyone relies on it.
		if err := w.nc.Flush(); err != nil {
			t.Fatalf("Flush() = %v", err)
		}
		check(t)
	})
}
