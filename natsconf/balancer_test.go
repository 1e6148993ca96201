package natsconf

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
)

// TestBalancerPermissions: the balancer's user (the dashboard) can read
// every figure the dashboard shows, and nothing else: it cannot submit,
// consume or delete tasks, read cache values or call services.
func TestBalancerPermissions(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)

	adminNC, adminJS, _ := connectAs(t, ns, pw, RoleAdmin)
	ctx := t.Context()
	if _, err := task.Provision(ctx, adminJS, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("admin: task.Provision = %v", err)
	}
	if _, err := adminJS.CreateOrUpdateConsumer(ctx, task.Stream, jetstream.ConsumerConfig{
		Durable: task.QueueConsumer(task.DefaultQueue), AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: task.QueueSubjects(task.DefaultQueue),
	}); err != nil {
		t.Fatalf("admin: create consumer = %v", err)
	}
	kv, err := adminJS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.Bucket})
	if err != nil {
		t.Fatalf("admin: create bucket = %v", err)
	}
	if _, err := kv.Put(ctx, "k", []byte(`"v"`)); err != nil {
		t.Fatal(err)
	}
	// Stand-ins for the services' stats responders.
	for _, name := range []string{wire.DBService, wire.ProcessService, cache.ServiceName} {
		sub, err := adminNC.Subscribe("$SRV.STATS."+name, func(m *nats.Msg) { _ = m.Respond([]byte(`{}`)) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := adminNC.Flush(); err != nil {
		t.Fatal(err)
	}

	nc, js, v := connectAs(t, ns, pw, RoleBalancer)

	t.Run("reads the dashboard's figures", func(t *testing.T) {
		for _, name := range []string{wire.DBService, wire.ProcessService, cache.ServiceName} {
			if _, err := nc.Request("$SRV.STATS."+name, nil, 2*time.Second); err != nil {
				t.Errorf("request $SRV.STATS.%s = %v", name, err)
			}
		}
		for _, s := range []string{task.Stream, task.DLQStream, "KV_" + cache.Bucket} {
			if _, err := js.Stream(ctx, s); err != nil {
				t.Errorf("Stream(%s) = %v", s, err)
			}
		}
		if _, err := js.Consumer(ctx, task.Stream, task.QueueConsumer(task.DefaultQueue)); err != nil {
			t.Errorf("Consumer(TASKS, workers-default) = %v", err)
		}
		s, err := js.Stream(ctx, task.Stream)
		if err != nil {
			t.Fatalf("Stream(TASKS) = %v", err)
		}
		var names []string
		infos := s.ListConsumers(ctx)
		for ci := range infos.Info() {
			names = append(names, ci.Name)
		}
		if err := infos.Err(); err != nil || len(names) != 1 || names[0] != task.QueueConsumer(task.DefaultQueue) {
			t.Errorf("ListConsumers(TASKS) = %v, %v; want [workers-default]", names, err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		v.none(t)
	})

	// Each of these is a publish the server refuses.
	for _, tc := range []struct{ name, subject string }{
		{"cannot submit a task", task.Subject(task.DefaultQueue, "noop")},
		{"cannot delete a stream", "$JS.API.STREAM.DELETE." + task.Stream},
		{"cannot purge a stream", "$JS.API.STREAM.PURGE." + task.Stream},
		{"cannot create a consumer", "$JS.API.CONSUMER.CREATE." + task.Stream + ".thief"},
		{"cannot pull tasks", "$JS.API.CONSUMER.MSG.NEXT." + task.Stream + "." + task.QueueConsumer(task.DefaultQueue)},
		{"cannot read task messages", "$JS.API.STREAM.MSG.GET." + task.Stream},
		{"cannot read cache values", "$JS.API.DIRECT.GET.KV_" + cache.Bucket + ".$KV." + cache.Bucket + ".k"},
		{"cannot write cache values", "$KV." + cache.Bucket + ".k"},
		{"cannot read task records", "$JS.API.STREAM.INFO.KV_" + task.Bucket},
		{"cannot query the database", wire.DBData},
		{"cannot call the process service", wire.ProcessSubject},
		{"cannot answer requests", "_INBOX.gateway.x"},
		{"cannot broadcast invalidations", cache.SubjectInvalidate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := nc.Publish(tc.subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			v.expect(t, tc.subject)
		})
	}
	t.Run("cannot read other roles' replies or tasks", func(t *testing.T) {
		for _, s := range []string{"_INBOX.>", "_INBOX.gateway.>", task.SubjectPrefix + ">"} {
			if _, err := nc.SubscribeSync(s); err != nil {
				t.Fatal(err)
			}
			v.expect(t, s)
		}
	})
	t.Run("the stream is intact", func(t *testing.T) {
		if _, err := adminJS.Stream(ctx, task.Stream); err != nil {
			t.Errorf("stream TASKS: %v, want it still there", err)
		}
	})
}
