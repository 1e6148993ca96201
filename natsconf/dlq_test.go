package natsconf

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/task"
)

// TestGatewayDLQPermissions: a gateway reads and deletes a dead letter
// (its retry and purge of a dead task), but deletes no message of another
// stream; a worker, which writes dead letters, cannot delete them.
func TestGatewayDLQPermissions(t *testing.T) {
	t.Parallel()
	ns, pw := startSecured(t)
	_, adminJS, _ := connectAs(t, ns, pw, RoleAdmin)
	gwNC, gwJS, gwV := connectAs(t, ns, pw, RoleGateway)
	wkNC, wkJS, wkV := connectAs(t, ns, pw, RoleWorker)
	ctx := t.Context()
	if _, err := task.Provision(ctx, adminJS, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("admin: task.Provision = %v", err)
	}

	bury := func() uint64 {
		t.Helper()
		msg := nats.NewMsg(task.DLQSubject("noop"))
		msg.Data = []byte(`{"id":"x","type":"noop"}`)
		msg.Header.Set(task.HeaderTaskID, "x")
		ack, err := wkJS.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatalf("worker: dead-letter a task = %v", err)
		}
		return ack.Sequence
	}
	seq := bury()

	s, err := gwJS.Stream(ctx, task.DLQStream)
	if err != nil {
		t.Fatalf("gateway: Stream(%s) = %v", task.DLQStream, err)
	}
	if _, err := s.GetMsg(ctx, seq); err != nil {
		t.Errorf("gateway: read a dead letter = %v", err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		t.Errorf("gateway: delete a dead letter = %v", err)
	}
	gwV.none(t)

	for _, stream := range []string{task.Stream, task.DelayedStream, task.ScheduleStream, "KV_" + task.Bucket, "KV_cache"} {
		subj := "$JS.API.STREAM.MSG.DELETE." + stream
		if _, err := gwNC.Request(subj, []byte(`{"seq":1}`), 500*time.Millisecond); err == nil {
			t.Errorf("gateway: %s = nil error, want refused", subj)
		}
		gwV.expect(t, subj)
	}

	seq = bury()
	subj := "$JS.API.STREAM.MSG.DELETE." + task.DLQStream
	if _, err := wkNC.Request(subj, []byte(`{"seq":`+strconv.FormatUint(seq, 10)+`}`), 500*time.Millisecond); err == nil {
		t.Errorf("worker: %s = nil error, want refused", subj)
	}
	wkV.expect(t, subj)
}
