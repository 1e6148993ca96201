package natsconf

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
)

// TestClientPermissions: the in-cluster client's user (client.NewNATS)
// can submit (now and delayed), read, list and cancel tasks and read the
// registry, and nothing else: it cannot
// pull or ack tasks, create consumers on the task streams, write the
// registry, touch the cache or call the database.
func TestClientPermissions(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)
	_, adminJS, _ := connectAs(t, ns, pw, RoleAdmin)
	ctx := t.Context()
	if _, err := task.Provision(ctx, adminJS, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("admin: task.Provision = %v", err)
	}
	kv, err := adminJS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.Bucket})
	if err != nil {
		t.Fatalf("admin: create bucket = %v", err)
	}
	if _, err := kv.Put(ctx, "k", []byte(`"v"`)); err != nil {
		t.Fatal(err)
	}

	nc, js, v := connectAs(t, ns, pw, RoleClient)

	// What the client package's NATSClient does, step by step (natsconf's
	// tests may not import it: it is a layer above).
	t.Run("submits, reads, lists and cancels tasks", func(t *testing.T) {
		reg, err := task.OpenRegistry(ctx, js)
		if err != nil {
			t.Fatalf("OpenRegistry = %v", err)
		}
		if _, err := reg.Type(ctx, "noop"); err != nil {
			t.Errorf("read the registry: %v", err)
		}
		kv, err := js.KeyValue(ctx, task.Bucket)
		if err != nil {
			t.Fatalf("bind the tasks bucket: %v", err)
		}
		store := task.NewStore(kv)
		for i, runAt := range []time.Time{{}, time.Now().Add(time.Hour)} {
			now := time.Now().UTC()
			rec := &task.Record{ID: task.NewID(), Type: "noop", State: task.Queued, Payload: []byte(`{"task":"noop"}`),
				Owner: "script", CreatedAt: now, UpdatedAt: now}
			rev, err := store.Create(ctx, rec)
			if err != nil {
				t.Fatalf("create record %d: %v", i, err)
			}
			if err := task.Enqueue(ctx, js, task.NewEnvelope(rec, rev), "req-1", runAt); err != nil {
				t.Errorf("enqueue task %d (run at %v): %v", i, runAt, err)
			}
			if _, err := store.Update(ctx, rec.ID, func(r *task.Record) error { r.State = task.Cancelled; return nil }); err != nil {
				t.Errorf("cancel task %d: %v", i, err)
			}
			if err := nc.Publish(task.CancelSubject(rec.ID), nil); err != nil {
				t.Fatal(err)
			}
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatalf("list the records: %v", err)
		}
		n := 0
		for range lister.Keys() {
			n++
		}
		if n != 2 {
			t.Errorf("listed %d records, want 2", n)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		v.none(t)
	})

	// Each of these is a publish the server refuses.
	for _, tc := range []struct{ name, subject string }{
		{"cannot pull tasks", "$JS.API.CONSUMER.MSG.NEXT." + task.Stream + "." + task.QueueConsumer(task.DefaultQueue)},
		{"cannot create a consumer on the tasks", "$JS.API.CONSUMER.CREATE." + task.Stream + ".thief"},
		{"cannot ack tasks", "$JS.ACK." + task.Stream + ".workers.1.1.1.1.1"},
		{"cannot delete a stream", "$JS.API.STREAM.DELETE." + task.Stream},
		{"cannot update a stream", "$JS.API.STREAM.UPDATE." + task.Stream},
		{"cannot register task types", "$KV." + task.RegistryBucket + "." + task.TypeKeyPrefix + "evil"},
		{"cannot announce workers", "$KV." + task.WorkersBucket + ".w1"},
		{"cannot read cache values", "$JS.API.DIRECT.GET.KV_" + cache.Bucket + ".$KV." + cache.Bucket + ".k"},
		{"cannot write cache values", "$KV." + cache.Bucket + ".k"},
		{"cannot query the database", wire.DBData},
		{"cannot call the process service", wire.ProcessSubject},
		{"cannot answer requests", "_INBOX.gateway.x"},
		{"cannot dead-letter tasks", task.DLQSubject("noop")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := nc.Publish(tc.subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			v.expect(t, tc.subject)
		})
	}
	t.Run("cannot read tasks in flight or other roles' replies", func(t *testing.T) {
		for _, s := range []string{task.SubjectPrefix + ">", "_INBOX.>", "_INBOX.gateway.>", task.CancelSubjectPrefix + "*"} {
			if _, err := nc.SubscribeSync(s); err != nil {
				t.Fatal(err)
			}
			v.expect(t, s)
		}
	})
}
