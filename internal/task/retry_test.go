package task

import (
	"errors"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
)

// TestRetryStates: Retry takes a failed, dead or cancelled task and
// refuses the rest with a *StateError, writing nothing; the queued record
// has a fresh budget, and its message is in TASKS under a new
// Nats-Msg-Id (the first submission's is not a duplicate of it).
func TestRetryStates(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	s := provision(t, js)
	ctx := t.Context()
	for _, st := range []State{Queued, Running, Succeeded, Failed, Dead, Cancelled} {
		id := "t" + string(st)
		rec := newRecord(id)
		now := time.Now().UTC()
		rec.State, rec.Attempts, rec.Progress, rec.Error, rec.StartedAt, rec.FinishedAt = st, 3, 40, "boom", &now, &now
		if _, err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		// The first submission's message, in the dedupe window.
		if err := Enqueue(ctx, js, NewEnvelope(rec, 1), "", time.Time{}); err != nil {
			t.Fatal(err)
		}
		got, err := Retry(ctx, js, s, id, nil)
		var se *StateError
		if !st.Retryable() {
			if !errors.As(err, &se) || se.State != st {
				t.Errorf("Retry(%s) = %v, want a *StateError naming %s", st, err, st)
			}
			if after, _, _ := s.Get(ctx, id); after.State != st || after.Attempts != 3 {
				t.Errorf("record after a refused retry = %s, %d attempts; want unchanged", after.State, after.Attempts)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Retry(%s) = %v", st, err)
		}
		if got.State != Queued || got.Attempts != 0 || got.Progress != 0 || got.StartedAt != nil || got.FinishedAt != nil || got.Error != "retried after: boom" {
			t.Errorf("retried %s record = %+v, want queued with a fresh budget", st, got)
		}
	}
	stream, err := js.Stream(ctx, Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(6 + 3); info.State.Msgs != want {
		t.Errorf("TASKS holds %d messages, want %d (6 submissions, 3 retries)", info.State.Msgs, want)
	}
	if _, err := Retry(ctx, js, s, "nosuch", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry(missing) = %v, want ErrNotFound", err)
	}
}

// TestRetryPublishFails: when the queue refuses the message (full: 429),
// Retry puts the record back as it was and returns the queue's error.
func TestRetryPublishFails(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	cfg := DefaultProvisionConfig()
	cfg.MaxQueueMsgs = 1
	s, err := Provision(t.Context(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	filler := newRecord("filler")
	if err := Enqueue(ctx, js, NewEnvelope(filler, 1), "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	rec := newRecord("x")
	rec.State, rec.Error = Failed, "boom"
	if _, err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := Retry(ctx, js, s, "x", nil); apperr.CodeOf(err) != apperr.RateLimited {
		t.Fatalf("Retry with a full queue = %v, want RateLimited", err)
	}
	after, _, err := s.Get(ctx, "x")
	if err != nil || after.State != Failed || after.Error != "boom" {
		t.Errorf("record after a failed retry = %+v, %v; want failed with its error, as before", after, err)
	}
}

// TestPurge: Purge deletes a finished task's record and refuses a queued
// or running one.
func TestPurge(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	s := provision(t, js)
	ctx := t.Context()
	for _, st := range []State{Queued, Running, Succeeded, Cancelled} {
		id := "p" + string(st)
		rec := newRecord(id)
		rec.State = st
		if _, err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		err := Purge(ctx, js, s, id, nil)
		_, _, gerr := s.Get(ctx, id)
		var se *StateError
		switch {
		case st.Terminal() && (err != nil || !errors.Is(gerr, ErrNotFound)):
			t.Errorf("Purge(%s) = %v, then Get = %v; want nil, ErrNotFound", st, err, gerr)
		case !st.Terminal() && (!errors.As(err, &se) || gerr != nil):
			t.Errorf("Purge(%s) = %v, then Get = %v; want a *StateError and the record kept", st, err, gerr)
		}
	}
	if err := Purge(ctx, js, s, "nosuch", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Purge(missing) = %v, want ErrNotFound", err)
	}
}
