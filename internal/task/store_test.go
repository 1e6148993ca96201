package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// startJetStream starts an in-process nats-server with JetStream for one test
// and returns a JetStream context on a connection to it. Both are closed when
// the test ends.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc := testutil.Connect(t, testutil.StartNATS(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	return js
}

// provision provisions the stream and bucket with the default config.
func provision(t *testing.T, js jetstream.JetStream) *Store {
	t.Helper()
	s, err := Provision(t.Context(), js, DefaultProvisionConfig())
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	return s
}

// newRecord returns a queued record whose timestamps are an hour old.
func newRecord(id string) *Record {
	old := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	return &Record{
		ID:        id,
		Type:      "noop",
		State:     Queued,
		Payload:   json.RawMessage(`{"task":"noop"}`),
		CreatedAt: old,
		UpdatedAt: old,
	}
}

func TestProvision(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	cfg := DefaultProvisionConfig()
	if _, err := Provision(t.Context(), js, cfg); err != nil {
		t.Fatalf("Provision() = %v", err)
	}

	st, err := js.Stream(t.Context(), Stream)
	if err != nil {
		t.Fatalf("js.Stream(%q) = %v", Stream, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream Info() = %v", err)
	}
	got := info.Config
	if got.Retention != jetstream.WorkQueuePolicy {
		t.Errorf("stream %s retention = %v, want %v", Stream, got.Retention, jetstream.WorkQueuePolicy)
	}
	if diff := cmp.Diff([]string{"tasks.>"}, got.Subjects); diff != "" {
		t.Errorf("stream %s subjects mismatch (-want +got):\n%s", Stream, diff)
	}
	if got.Storage != jetstream.FileStorage {
		t.Errorf("stream %s storage = %v, want %v", Stream, got.Storage, jetstream.FileStorage)
	}
	if got.Discard != jetstream.DiscardNew {
		t.Errorf("stream %s discard = %v, want %v", Stream, got.Discard, jetstream.DiscardNew)
	}
	if got.Duplicates != cfg.DedupeWindow {
		t.Errorf("stream %s duplicates = %v, want %v", Stream, got.Duplicates, cfg.DedupeWindow)
	}
	if got.MaxBytes != cfg.MaxQueueBytes {
		t.Errorf("stream %s max bytes = %d, want %d", Stream, got.MaxBytes, cfg.MaxQueueBytes)
	}

	kv, err := js.KeyValue(t.Context(), Bucket)
	if err != nil {
		t.Fatalf("js.KeyValue(%q) = %v", Bucket, err)
	}
	ks, err := kv.Status(t.Context())
	if err != nil {
		t.Fatalf("kv Status() = %v", err)
	}
	if ks.Bucket() != Bucket {
		t.Errorf("bucket name = %q, want %q", ks.Bucket(), Bucket)
	}
	if ks.History() != 1 {
		t.Errorf("bucket %s history = %d, want 1", Bucket, ks.History())
	}
	if ks.TTL() != cfg.Retention {
		t.Errorf("bucket %s TTL = %v, want %v", Bucket, ks.TTL(), cfg.Retention)
	}
	if got := bucketMaxBytes(ks); got != cfg.MaxRecordBytes {
		t.Errorf("bucket %s max bytes = %d, want %d", Bucket, got, cfg.MaxRecordBytes)
	}

	// A task published on its subject lands in the stream.
	if _, err := js.Publish(t.Context(), Subject(DefaultQueue, "noop"), []byte(`{}`)); err != nil {
		t.Errorf("js.Publish(%q) = %v, want nil", Subject(DefaultQueue, "noop"), err)
	}
}

// TestBucketFull fills a bucket with a small byte limit: Create answers
// ErrFull once the records reach half of it, and the other half is left
// for the records already there to grow as their tasks run; a worker's
// write that grows a record still succeeds.
func TestBucketFull(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	cfg := DefaultProvisionConfig()
	cfg.MaxRecordBytes = minRecordBytes
	s, err := Provision(t.Context(), js, cfg)
	if err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	var ids []string
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatalf("%d records created in a bucket of %d bytes, want ErrFull long before", i, cfg.MaxRecordBytes)
		}
		id := NewID()
		_, err := s.Create(t.Context(), newRecord(id))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatalf("Create() = %v, want nil or ErrFull", err)
		}
		ids = append(ids, id)
	}
	st, err := s.kv.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if used := st.Bytes(); used > uint64(cfg.MaxRecordBytes)/2+1024 || used < uint64(cfg.MaxRecordBytes)/2-1024 {
		t.Errorf("bucket holds %d bytes when Create refuses, want about half of %d", used, cfg.MaxRecordBytes)
	}
	// Every accepted record can still finish, with a result.
	for _, id := range ids {
		if _, err := s.Update(t.Context(), id, func(r *Record) error {
			now := time.Now().UTC()
			r.State, r.Attempts, r.Worker, r.StartedAt, r.FinishedAt = Succeeded, 1, "worker-1", &now, &now
			r.Progress, r.Result = 100, json.RawMessage(`{"report":"quarterly summary","sections":5,"duration_ms":5000}`)
			return nil
		}); err != nil {
			t.Fatalf("finishing accepted task %s in a full bucket: %v", id, err)
		}
	}
	if _, err := s.Create(t.Context(), newRecord(NewID())); !errors.Is(err, ErrFull) {
		t.Errorf("Create() in a full bucket = %v, want ErrFull", err)
	}
	// The limit is the bucket's: a Store that did not provision it (a
	// gateway started after a provisioning identity made the bucket)
	// keeps it too.
	kv, err := js.KeyValue(t.Context(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(kv).Create(t.Context(), newRecord(NewID())); !errors.Is(err, ErrFull) {
		t.Errorf("NewStore(kv).Create() in a full bucket = %v, want ErrFull", err)
	}
}

func TestProvisionIdempotent(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	first := provision(t, js)
	if _, err := first.Create(t.Context(), newRecord("keep")); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	if _, err := js.Publish(t.Context(), Subject(DefaultQueue, "report"), []byte(`{}`)); err != nil {
		t.Fatalf("js.Publish() = %v", err)
	}
	second := provision(t, js)
	if _, _, err := second.Get(t.Context(), "keep"); err != nil {
		t.Errorf("Get(%q) after a second Provision = %v, want the record kept", "keep", err)
	}
	st, err := js.Stream(t.Context(), Stream)
	if err != nil {
		t.Fatalf("js.Stream(%q) = %v", Stream, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream Info() = %v", err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("stream %s messages after a second Provision = %d, want 1", Stream, info.State.Msgs)
	}
}

func TestStoreCreateGet(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	want := newRecord("abc123")
	want.RequestID = "req-1"
	if _, err := s.Create(t.Context(), want); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	got, rev, err := s.Get(t.Context(), "abc123")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if rev == 0 {
		t.Errorf("Get() revision = 0, want > 0")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Get() mismatch (-want +got):\n%s", diff)
	}
}

func TestStoreCreateExists(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	if _, err := s.Create(t.Context(), newRecord("dup")); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	second := newRecord("dup")
	second.Type = "report"
	if _, err := s.Create(t.Context(), second); !errors.Is(err, ErrExists) {
		t.Errorf("Create() of a taken id = %v, want %v", err, ErrExists)
	}
	got, _, err := s.Get(t.Context(), "dup")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if got.Type != "noop" {
		t.Errorf("Get().Type after a refused Create = %q, want %q", got.Type, "noop")
	}
}

func TestStoreGetNotFound(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	rec, rev, err := s.Get(t.Context(), "nope")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) = %v, want %v", err, ErrNotFound)
	}
	if rec != nil || rev != 0 {
		t.Errorf("Get(unknown) = %+v, %d, want nil, 0", rec, rev)
	}
	if _, err := s.Update(t.Context(), "nope", func(*Record) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update(unknown) = %v, want %v", err, ErrNotFound)
	}
}

func TestStoreUpdate(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	orig := newRecord("upd")
	if _, err := s.Create(t.Context(), orig); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	_, rev0, err := s.Get(t.Context(), "upd")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	before := time.Now()
	got, err := s.Update(t.Context(), "upd", func(r *Record) error {
		r.State = Running
		r.Attempts++
		r.Worker = "w1"
		return nil
	})
	if err != nil {
		t.Fatalf("Update() = %v", err)
	}
	if got.State != Running || got.Attempts != 1 || got.Worker != "w1" {
		t.Errorf("Update() = %+v, want state running, 1 attempt, worker w1", got)
	}
	if got.UpdatedAt.Before(before) {
		t.Errorf("Update().UpdatedAt = %v, want at or after %v", got.UpdatedAt, before)
	}
	if !got.CreatedAt.Equal(orig.CreatedAt) {
		t.Errorf("Update().CreatedAt = %v, want %v unchanged", got.CreatedAt, orig.CreatedAt)
	}
	stored, rev1, err := s.Get(t.Context(), "upd")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if diff := cmp.Diff(got, stored); diff != "" {
		t.Errorf("Get() after Update() mismatch (-returned +stored):\n%s", diff)
	}
	if rev1 <= rev0 {
		t.Errorf("revision after Update() = %d, want > %d", rev1, rev0)
	}
}

func TestStoreUpdateErrorWritesNothing(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	if _, err := s.Create(t.Context(), newRecord("keep")); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	want, rev0, err := s.Get(t.Context(), "keep")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	errStop := errors.New("stop")
	rec, err := s.Update(t.Context(), "keep", func(r *Record) error {
		r.State = Cancelled
		r.Attempts = 99
		return fmt.Errorf("refuse: %w", errStop)
	})
	if !errors.Is(err, errStop) {
		t.Errorf("Update() = %v, want the fn's error %v", err, errStop)
	}
	if rec != nil {
		t.Errorf("Update() record = %+v, want nil on error", rec)
	}
	got, rev1, err := s.Get(t.Context(), "keep")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if rev1 != rev0 {
		t.Errorf("revision after a failed Update() = %d, want %d", rev1, rev0)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record after a failed Update() mismatch (-want +got):\n%s", diff)
	}
}

func TestStoreUpdateConcurrent(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	if _, err := s.Create(t.Context(), newRecord("race")); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	const writers = 10
	start := make(chan struct{})
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			<-start
			_, err := s.Update(t.Context(), "race", func(r *Record) error {
				r.Attempts++
				return nil
			})
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent Update() = %v, want nil", err)
		}
	}
	got, _, err := s.Get(t.Context(), "race")
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	if got.Attempts != writers {
		t.Errorf("Attempts after %d concurrent increments = %d, want %d", writers, got.Attempts, writers)
	}
}

func TestNewStore(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	provision(t, js)
	kv, err := js.KeyValue(t.Context(), Bucket)
	if err != nil {
		t.Fatalf("js.KeyValue(%q) = %v", Bucket, err)
	}
	s := NewStore(kv)
	if _, err := s.Create(t.Context(), newRecord("viaNew")); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	e, err := kv.Get(t.Context(), "viaNew")
	if err != nil {
		t.Fatalf("kv.Get(%q) = %v", "viaNew", err)
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		t.Fatalf("stored record %s is not JSON: %v", e.Value(), err)
	}
	if rec.ID != "viaNew" || rec.State != Queued {
		t.Errorf("stored record = %+v, want id viaNew, state queued", rec)
	}
}

// TestStoreUpdateFrom: from the version a writer wrote, the next write
// needs no read; from a stale one (someone wrote since), fn sees the
// current record, so the other write is never lost.
func TestStoreUpdateFrom(t *testing.T) {
	t.Parallel()
	s := provision(t, startJetStream(t))
	if _, err := s.Create(t.Context(), newRecord("from")); err != nil {
		t.Fatalf("Create() = %v", err)
	}
	running, err := s.UpdateFrom(t.Context(), "from", nil, func(r *Record) error { r.State = Running; return nil })
	if err != nil {
		t.Fatalf("UpdateFrom(nil) = %v", err)
	}
	if _, rev, _ := s.Get(t.Context(), "from"); rev != running.Rev {
		t.Errorf("UpdateFrom returned revision %d, the store has %d", running.Rev, rev)
	}
	done, err := s.UpdateFrom(t.Context(), "from", running, func(r *Record) error {
		if r.State != Running {
			t.Errorf("fn got state %s from the writer's own version, want running", r.State)
		}
		r.State = Succeeded
		return nil
	})
	if err != nil || done.Record.State != Succeeded {
		t.Fatalf("UpdateFrom(own version) = %+v, %v; want succeeded", done, err)
	}
	if running.Record.State != Running {
		t.Errorf("UpdateFrom changed the version it started from: state %s", running.Record.State)
	}

	// Someone else writes; a writer holding the old version must see it.
	if _, err := s.Update(t.Context(), "from", func(r *Record) error { r.State = Cancelled; return nil }); err != nil {
		t.Fatal(err)
	}
	var seen State
	got, err := s.UpdateFrom(t.Context(), "from", done, func(r *Record) error {
		seen = r.State
		r.Progress = 50
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateFrom(stale version) = %v", err)
	}
	if seen != Cancelled || got.Record.State != Cancelled || got.Record.Progress != 50 {
		t.Errorf("UpdateFrom(stale version): fn last saw %s, wrote %s/%d; want the other writer's cancelled kept", seen, got.Record.State, got.Record.Progress)
	}
}
