package natsconf

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/task"
)

// TestSchedulePermissions: a gateway writes and deletes (by roll-up) a
// schedule and takes ticks from the shared consumer, but can neither
// forge a tick, purge the stream nor delete the consumer; a worker cannot
// write schedules.
func TestSchedulePermissions(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)
	_, adminJS, _ := connectAs(t, ns, pw, RoleAdmin)
	gwNC, gwJS, gwV := connectAs(t, ns, pw, RoleGateway)
	wkNC, _, wkV := connectAs(t, ns, pw, RoleWorker)
	ctx := t.Context()
	if _, err := task.Provision(ctx, adminJS, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("admin: task.Provision = %v", err)
	}

	id := task.NewID()
	msg := nats.NewMsg(task.ScheduleDefSubject(id))
	msg.Data = []byte(`{"id":"` + id + `"}`)
	msg.Header.Set("Nats-Schedule", "@every 1s")
	msg.Header.Set("Nats-Schedule-Target", task.ScheduleFireSubject(id))
	if _, err := gwJS.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("gateway: publish a schedule = %v", err)
	}
	s, err := gwJS.Stream(ctx, task.ScheduleStream)
	if err != nil {
		t.Fatalf("gateway: Stream(%s) = %v", task.ScheduleStream, err)
	}
	cons, err := s.Consumer(ctx, task.ScheduleConsumer)
	if err != nil {
		t.Fatalf("gateway: Consumer(%s) = %v", task.ScheduleConsumer, err)
	}
	tick, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("gateway: next tick = %v", err)
	}
	if err := tick.DoubleAck(ctx); err != nil {
		t.Errorf("gateway: ack a tick = %v", err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, task.ScheduleDefSubject(id)); err != nil {
		t.Errorf("gateway: read the schedule = %v", err)
	}
	del := nats.NewMsg(task.ScheduleDefSubject(id))
	del.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	if _, err := gwJS.PublishMsg(ctx, del, jetstream.WithMsgTTL(task.ScheduleTombstoneTTL)); err != nil {
		t.Errorf("gateway: delete the schedule by roll-up = %v", err)
	}
	gwV.none(t)

	if err := gwNC.Publish(task.ScheduleFireSubject(id), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	gwV.expect(t, task.ScheduleFireSubject(id))
	for _, subj := range []string{
		"$JS.API.STREAM.PURGE." + task.ScheduleStream,
		"$JS.API.CONSUMER.DELETE." + task.ScheduleStream + "." + task.ScheduleConsumer,
		"$JS.API.STREAM.MSG.DELETE." + task.ScheduleStream,
	} {
		if _, err := gwNC.Request(subj, nil, 500*time.Millisecond); err == nil {
			t.Errorf("gateway: %s = nil error, want refused", subj)
		}
		gwV.expect(t, subj)
	}
	if err := wkNC.Publish(task.ScheduleDefSubject(id), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	wkV.expect(t, task.ScheduleDefSubject(id))
}
