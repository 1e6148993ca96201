package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/testutil"
)

// pullEnv is a stream "PT" on subjects pt.> with a durable pull consumer
// "slots", on an embedded server.
type pullEnv struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	cons jetstream.Consumer
}

func newPullEnv(t *testing.T) *pullEnv {
	t.Helper()
	ns := testutil.StartNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(func() { _ = natsconn.Close(nc, 5*time.Second) })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "PT", Subjects: []string{"pt.>"}}); err != nil {
		t.Fatalf("CreateStream() = %v", err)
	}
	cons, err := js.CreateOrUpdateConsumer(t.Context(), "PT", jetstream.ConsumerConfig{
		Durable: "slots", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
	})
	if err != nil {
		t.Fatalf("CreateOrUpdateConsumer() = %v", err)
	}
	return &pullEnv{nc: nc, js: js, cons: cons}
}

func (e *pullEnv) puller(expires time.Duration) puller {
	return puller{cons: e.cons, expires: expires}
}

func (e *pullEnv) publish(t *testing.T, subject, data string) {
	t.Helper()
	if _, err := e.js.Publish(t.Context(), subject, []byte(data)); err != nil {
		t.Fatalf("Publish(%s) = %v", subject, err)
	}
}

// counts returns the consumer's messages delivered and not acked yet, and
// the stream sequence of the last one it delivered. (Not NumPending: the
// server keeps that as a running estimate, and CI once saw it read 0 with
// two messages still undelivered.)
func (e *pullEnv) counts(t *testing.T) (ackPending int, deliveredSeq uint64) {
	t.Helper()
	info, err := e.cons.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer Info() = %v", err)
	}
	return info.NumAckPending, info.Delivered.Stream
}

// waitSettled waits until the server has seen every delivered message
// settled (acked or terminated).
func (e *pullEnv) waitSettled(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		if ackPending, _ := e.counts(t); ackPending != 0 {
			return fmt.Errorf("%d messages not settled at the server yet", ackPending)
		}
		return nil
	})
}

func TestPullerTakesOneTaskAtATime(t *testing.T) {
	t.Parallel()
	e := newPullEnv(t)
	for _, d := range []string{"one", "two", "three"} {
		e.publish(t, "pt."+d, d)
	}
	p := e.puller(5 * time.Second)
	for i, want := range []string{"one", "two", "three"} {
		msg, err := p.next(t.Context())
		if err != nil {
			t.Fatalf("next() #%d = %v", i+1, err)
		}
		if string(msg.Data()) != want || msg.Subject() != "pt."+want {
			t.Fatalf("next() #%d = %s %q, want pt.%s %q", i+1, msg.Subject(), msg.Data(), want, want)
		}
		// Nothing is fetched ahead: only the message in hand is out, and
		// no pull request waits while the slot holds it.
		if ackPending, delivered := e.counts(t); ackPending != 1 || delivered != uint64(i+1) {
			t.Errorf("after next() #%d: ack pending %d, last delivered seq %d, want 1 and %d", i+1, ackPending, delivered, i+1)
		}
		if info, err := e.cons.Info(t.Context()); err != nil {
			t.Errorf("consumer Info() = %v", err)
		} else if info.NumWaiting != 0 {
			t.Errorf("after next() #%d: %d pull requests waiting, want 0", i+1, info.NumWaiting)
		}
		meta, err := msg.Metadata()
		if err != nil || meta.NumDelivered != 1 || meta.Stream != "PT" || meta.Consumer != "slots" || meta.Sequence.Stream != uint64(i+1) {
			t.Errorf("Metadata() = %+v, %v, want first delivery of PT seq %d by slots", meta, err, i+1)
		}
		// DoubleAck waits for the server to have the ack: with Ack, the
		// next count could still see this message pending (CI did).
		if err := msg.DoubleAck(t.Context()); err != nil {
			t.Fatalf("DoubleAck() = %v", err)
		}
	}
	e.waitSettled(t)
}

func TestPullerSettles(t *testing.T) {
	t.Parallel()
	e := newPullEnv(t)
	p := e.puller(5 * time.Second)
	e.publish(t, "pt.nak", "nak")
	msg, err := p.next(t.Context())
	if err != nil {
		t.Fatalf("next() = %v", err)
	}
	if err := msg.Nak(); err != nil {
		t.Fatalf("Nak() = %v", err)
	}
	// A nak hands it back at once: the next pull gets it again.
	again, err := p.next(t.Context())
	if err != nil {
		t.Fatalf("next() after Nak = %v", err)
	}
	meta, err := again.Metadata()
	if err != nil {
		t.Fatalf("Metadata() after Nak = %v", err)
	}
	if string(again.Data()) != "nak" || meta.NumDelivered != 2 {
		t.Fatalf("next() after Nak = %q, delivery %d, want \"nak\" delivery 2", again.Data(), meta.NumDelivered)
	}
	if err := again.TermWithReason("done with it"); err != nil {
		t.Fatalf("TermWithReason() = %v", err)
	}
	e.waitSettled(t)
}

func TestPullerExpires(t *testing.T) {
	t.Parallel()
	e := newPullEnv(t)
	p := e.puller(200 * time.Millisecond)
	start := time.Now()
	if msg, err := p.next(t.Context()); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("next() on an empty stream = %v, %v, want nats.ErrTimeout", msg, err)
	}
	if took := time.Since(start); took > 200*time.Millisecond+time.Second {
		t.Errorf("next() on an empty stream took %v, want about the 200ms expiry", took)
	}
	// The puller still works after an expiry. A pull may expire again
	// before the message reaches it on a loaded machine (CI: 200 ms is
	// short), so it asks again until a deadline; anything but a timeout
	// or "late" fails.
	e.publish(t, "pt.late", "late")
	for deadline := time.Now().Add(10 * time.Second); ; {
		msg, err := p.next(t.Context())
		if errors.Is(err, nats.ErrTimeout) && time.Now().Before(deadline) {
			continue
		}
		if err != nil || string(msg.Data()) != "late" {
			t.Fatalf("next() after an expiry = %v, %v, want \"late\"", msg, err)
		}
		break
	}
}

// A pull abandoned when its slot stops must not deliver a task later: the
// task would wait in a buffer nobody reads while its ack wait runs.
func TestPullerAbandonedPullDeliversNothing(t *testing.T) {
	t.Parallel()
	e := newPullEnv(t)
	p := e.puller(10 * time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := p.next(ctx)
		done <- err
	}()
	// Wait until the pull request waits at the server, then stop the slot.
	testutil.Eventually(t, 5*time.Second, func() error {
		info, err := e.cons.Info(t.Context())
		if err != nil {
			return err
		}
		if info.NumWaiting != 1 {
			return errors.New("pull request not waiting yet")
		}
		return nil
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("next() with its context cancelled = %v, want context.Canceled", err)
	}

	e.publish(t, "pt.after", "after")
	// The abandoned request (it has 10 s to run) gets nothing: the task
	// stays pending until a slot asks for it.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if ackPending, _ := e.counts(t); ackPending != 0 {
			t.Fatalf("an abandoned pull took the task: ack pending %d, want 0", ackPending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if msg, err := p.next(t.Context()); err != nil || string(msg.Data()) != "after" {
		t.Fatalf("next() after an abandoned pull = %v, %v, want \"after\"", msg, err)
	}
}
