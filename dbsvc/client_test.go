package dbsvc

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/wire"
)

func TestClientWithoutService(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	client := NewClient(nc)
	start := time.Now()
	_, err := client.Data(t.Context(), "")
	if got := codeOf(err); got != apperr.Unavailable {
		t.Errorf("Data() = %v, want code %s", err, apperr.Unavailable)
	}
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("Data() = %v, want it to wrap nats.ErrNoResponders", err)
	}
	// No responders is an immediate answer from the server, not a timeout.
	if took := time.Since(start); took > time.Second {
		t.Errorf("Data() took %v, want well under the %v timeout", took, client.Timeout)
	}
}

func TestClientTimeout(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	// A responder that never answers.
	sub, err := nc.Subscribe(wire.DBData, func(*nats.Msg) {})
	if err != nil {
		t.Fatalf("Subscribe() = %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatalf("Flush() = %v", err)
	}

	t.Run("client timeout", func(t *testing.T) {
		client := NewClient(nc)
		client.Timeout = 50 * time.Millisecond
		_, err := client.Data(t.Context(), "")
		if got := codeOf(err); got != apperr.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Data() = %v, want unavailable after the deadline", err)
		}
	})
	t.Run("ctx deadline", func(t *testing.T) {
		client := NewClient(nc)
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := client.Data(ctx, "")
		if got := codeOf(err); got != apperr.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Data() = %v, want unavailable after the deadline", err)
		}
	})
}

func TestClientClosedConnection(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	client := NewClient(nc)
	nc.Close()
	_, err := client.Item(t.Context(), "", 1)
	if got := codeOf(err); got != apperr.Unavailable || !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("Item() on a closed connection = %v, want unavailable", err)
	}
}

func TestClientSendsRequestID(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	got := make(chan string, 1)
	sub, err := nc.Subscribe(wire.DBItemGet, func(m *nats.Msg) {
		got <- m.Header.Get(reqid.Header)
		_ = m.Respond([]byte(`{"id":1,"name":"x","price_cents":1,"stock":1,"updated_at":"2025-01-01T00:00:00Z"}`))
	})
	if err != nil {
		t.Fatalf("Subscribe() = %v", err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	if _, err := NewClient(nc).Item(t.Context(), "rid-123", 1); err != nil {
		t.Fatalf("Item() = %v, want nil error", err)
	}
	if rid := <-got; rid != "rid-123" {
		t.Errorf("request header %s = %q, want %q", reqid.Header, rid, "rid-123")
	}
}

func TestClientItemJSON(t *testing.T) {
	t.Parallel()
	nc := startNATS(t)
	db := startDB(t, nc, t.TempDir(), testSeedRows)
	ctx := t.Context()

	raw, err := db.client.ItemJSON(ctx, "req-json", 42)
	if err != nil {
		t.Fatalf("ItemJSON(42) = %v, want nil error", err)
	}
	// The bytes are the service's reply, untouched.
	msg, err := nc.RequestWithContext(ctx, wire.DBItemGet, []byte(`{"id":42}`))
	if err != nil {
		t.Fatalf("Request(%s) = %v", wire.DBItemGet, err)
	}
	if string(raw) != string(msg.Data) {
		t.Errorf("ItemJSON(42) = %s, want the reply %s", raw, msg.Data)
	}
	var fromJSON Item
	if err := json.Unmarshal(raw, &fromJSON); err != nil {
		t.Fatalf("json.Unmarshal(ItemJSON(42)) = %v; body %s", err, raw)
	}
	it, err := db.client.Item(ctx, "", 42)
	if err != nil {
		t.Fatalf("Item(42) = %v, want nil error", err)
	}
	if diff := cmp.Diff(it, fromJSON); diff != "" {
		t.Errorf("ItemJSON(42) decoded mismatch with Item(42) (-item +json):\n%s", diff)
	}

	_, err = db.client.ItemJSON(ctx, "", 999_999)
	if got := codeOf(err); got != apperr.NotFound || !errors.Is(err, ErrNotFound) {
		t.Errorf("ItemJSON(999999) error = %v, want not_found matching ErrNotFound", err)
	}
}
