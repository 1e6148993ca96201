package task

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestProvisionRegistersBuiltins: after Provision, the built-in queues and
// types are registered, and provisioning again changes nothing.
func TestProvisionRegistersBuiltins(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	provision(t, js)
	reg, err := OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatalf("OpenRegistry() = %v", err)
	}
	types, err := reg.Types(t.Context())
	if err != nil {
		t.Fatalf("Types() = %v", err)
	}
	var names []string
	for _, d := range types {
		names = append(names, d.Name)
	}
	if want := []string{"noop", "report", "sleep", "tally"}; !slices.Equal(names, want) {
		t.Errorf("Types() = %v, want %v", names, want)
	}
	queues, err := reg.Queues(t.Context())
	if err != nil {
		t.Fatalf("Queues() = %v", err)
	}
	var qnames []string
	for _, q := range queues {
		qnames = append(qnames, q.Name)
	}
	if want := []string{"critical", "default", "low"}; !slices.Equal(qnames, want) {
		t.Errorf("Queues() = %v, want %v", qnames, want)
	}
	before, _ := reg.Type(t.Context(), "sleep")
	provision(t, js)
	after, err := reg.Type(t.Context(), "sleep")
	if err != nil || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("Type(sleep) after a second Provision = %+v, %v; want it unchanged (updated_at %v)", after, err, before.UpdatedAt)
	}
}

// TestRegistryPutType: a type is registered with its queue; registering
// the same definition again writes nothing; a changed one replaces it;
// bad definitions are refused.
func TestRegistryPutType(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	provision(t, js)
	reg, err := OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatalf("OpenRegistry() = %v", err)
	}
	d := TypeDef{Name: "thumbnail", Queue: "media", MaxAttempts: 3, Schema: json.RawMessage(`{"type":"object"}`)}
	if err := reg.PutType(t.Context(), d); err != nil {
		t.Fatalf("PutType(%+v) = %v", d, err)
	}
	got, err := reg.Type(t.Context(), "thumbnail")
	if err != nil || got.Queue != "media" || got.MaxAttempts != 3 {
		t.Fatalf("Type(thumbnail) = %+v, %v; want queue media, 3 attempts", got, err)
	}
	if _, err := reg.Queue(t.Context(), "media"); err != nil {
		t.Errorf("Queue(media) = %v: the type's queue must be registered with it", err)
	}
	if err := reg.PutType(t.Context(), d); err != nil {
		t.Fatalf("PutType again = %v", err)
	}
	same, _ := reg.Type(t.Context(), "thumbnail")
	if !same.UpdatedAt.Equal(got.UpdatedAt) {
		t.Errorf("PutType of the same definition rewrote it: updated_at %v → %v", got.UpdatedAt, same.UpdatedAt)
	}
	d.MaxAttempts = 7
	if err := reg.PutType(t.Context(), d); err != nil {
		t.Fatalf("PutType(changed) = %v", err)
	}
	if changed, _ := reg.Type(t.Context(), "thumbnail"); changed.MaxAttempts != 7 {
		t.Errorf("Type(thumbnail) after a change = %+v, want 7 attempts", changed)
	}
	for _, bad := range []TypeDef{
		{Name: ""}, {Name: "a.b"}, {Name: "ok", Queue: "q>"}, {Name: "ok", MaxAttempts: -1},
		{Name: "ok", Unique: &Unique{}}, {Name: "ok", Schema: json.RawMessage(`{`)},
	} {
		if err := reg.PutType(t.Context(), bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("PutType(%+v) = %v, want an error wrapping ErrInvalid", bad, err)
		}
	}
	if _, err := reg.Type(t.Context(), "nope"); !errors.Is(err, ErrUnknownName) {
		t.Errorf("Type(nope) = %v, want ErrUnknownName", err)
	}
	if _, err := reg.Type(t.Context(), "a.>"); !errors.Is(err, ErrUnknownName) {
		t.Errorf("Type(a.>) = %v, want ErrUnknownName", err)
	}
}

// TestRegistryWorkers: an announced worker is listed until it retires.
func TestRegistryWorkers(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	provision(t, js)
	reg, err := OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatalf("OpenRegistry() = %v", err)
	}
	w := WorkerInfo{ID: "w-1", Types: []string{"noop"}, Queues: []string{DefaultQueue}, Concurrency: 2, StartedAt: time.Now()}
	if err := reg.Announce(t.Context(), w); err != nil {
		t.Fatalf("Announce() = %v", err)
	}
	ws, err := reg.Workers(t.Context())
	if err != nil || len(ws) != 1 || ws[0].ID != "w-1" || ws[0].SeenAt.IsZero() {
		t.Fatalf("Workers() = %+v, %v; want w-1 with its seen_at", ws, err)
	}
	if err := reg.Retire(t.Context(), "w-1"); err != nil {
		t.Fatalf("Retire() = %v", err)
	}
	if ws, err := reg.Workers(t.Context()); err != nil || len(ws) != 0 {
		t.Errorf("Workers() after Retire = %+v, %v; want none", ws, err)
	}
	// up's worker ids carry a host name, a port and a slash.
	odd := WorkerInfo{ID: "host.example:8080/worker-1"}
	if err := reg.Announce(t.Context(), odd); err != nil {
		t.Fatalf("Announce(%q) = %v", odd.ID, err)
	}
	if ws, err := reg.Workers(t.Context()); err != nil || len(ws) != 1 || ws[0].ID != odd.ID {
		t.Errorf("Workers() = %+v, %v; want %q", ws, err, odd.ID)
	}
	if err := reg.Retire(t.Context(), odd.ID); err != nil {
		t.Errorf("Retire(%q) = %v", odd.ID, err)
	}
	if err := reg.Announce(t.Context(), WorkerInfo{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Announce(no id) = %v, want ErrInvalid", err)
	}
}

// TestRegistrySetPaused: a queue is paused and resumed, each change
// written once and seen by a watch of the queues; an unknown queue is
// ErrUnknownName; provisioning again (which registers the built-in queues)
// leaves a paused queue paused.
func TestRegistrySetPaused(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	provision(t, js)
	reg, err := OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatalf("OpenRegistry() = %v", err)
	}
	w, err := reg.WatchQueues(t.Context())
	if err != nil {
		t.Fatalf("WatchQueues() = %v", err)
	}
	defer func() { _ = w.Stop() }()
	// The current queues, then the marker.
	var initial []string
	for e := range w.Updates() {
		if e == nil {
			break
		}
		initial = append(initial, e.Key())
	}
	if want := []string{"queues.critical", "queues.default", "queues.low"}; !slices.Equal(initial, want) {
		t.Errorf("WatchQueues current keys = %v, want %v", initial, want)
	}

	q, err := reg.SetPaused(t.Context(), "low", true)
	if err != nil || !q.Paused || q.PausedAt == nil || q.Name != "low" || q.CreatedAt.IsZero() {
		t.Fatalf("SetPaused(low, true) = %+v, %v; want low paused, with paused_at and its created_at", q, err)
	}
	select {
	case e := <-w.Updates():
		var got QueueDef
		if e == nil || e.Key() != "queues.low" || json.Unmarshal(e.Value(), &got) != nil || !got.Paused {
			t.Errorf("watch after the pause = %v, want queues.low paused", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch saw no change 5 s after the pause")
	}
	again, err := reg.SetPaused(t.Context(), "low", true)
	if err != nil || !again.PausedAt.Equal(*q.PausedAt) {
		t.Errorf("SetPaused(low, true) again = %+v, %v; want it unchanged", again, err)
	}
	provision(t, js)
	if got, err := reg.Queue(t.Context(), "low"); err != nil || !got.Paused {
		t.Errorf("Queue(low) after Provision again = %+v, %v; want still paused", got, err)
	}
	q, err = reg.SetPaused(t.Context(), "low", false)
	if err != nil || q.Paused || q.PausedAt != nil {
		t.Errorf("SetPaused(low, false) = %+v, %v; want resumed, no paused_at", q, err)
	}
	if got, _ := reg.Queue(t.Context(), "low"); got == nil || got.Paused {
		t.Errorf("Queue(low) after resume = %+v, want not paused", got)
	}
	for _, name := range []string{"nope", "a.b", ""} {
		if _, err := reg.SetPaused(t.Context(), name, true); !errors.Is(err, ErrUnknownName) {
			t.Errorf("SetPaused(%q) = %v, want ErrUnknownName", name, err)
		}
	}
}
