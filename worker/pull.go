package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pullExpires is how long one pull request waits at the server for a task.
// An idle slot sends a new one this often.
const pullExpires = 5 * time.Second

// pullLost is how long past its expiry a slot waits for the server's answer
// to a pull before it takes the request for lost (a reconnect dropped it).
const pullLost = 2 * time.Second

// puller pulls one task at a time for one slot, over one subscription it
// keeps for its life.
//
// jetstream's Consumer.Next does the same pull but subscribes a new inbox
// for every message and drops it afterwards: a SUB and an UNSUB through the
// server, a goroutine and two channel hops per task (about 3 % of the CPU
// of a task in bench/tasks). Like Next, a puller asks for one message only
// when its slot is free, so no task waits in a client buffer while its ack
// wait runs.
type puller struct {
	nc      *nats.Conn
	subject string // the consumer's $JS.API.CONSUMER.MSG.NEXT subject
	request []byte // {"batch":1,"expires":…}
	expires time.Duration
	sub     *nats.Subscription
	msgs    chan *nats.Msg
	timer   *time.Timer
}

// newPuller makes a puller for the durable consumer of stream whose pull
// requests wait up to expires for a task.
func newPuller(nc *nats.Conn, stream, consumer string, expires time.Duration) (*puller, error) {
	p := &puller{
		nc:      nc,
		subject: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer,
		request: []byte(`{"batch":1,"expires":` + strconv.FormatInt(expires.Nanoseconds(), 10) + `}`),
		expires: expires,
		timer:   time.NewTimer(expires),
	}
	p.timer.Stop() // next starts it
	if err := p.subscribe(); err != nil {
		return nil, err
	}
	return p, nil
}

// subscribe listens on a fresh inbox. A pull request sent to an inbox
// nobody listens on any more is dropped by the server, so a request that
// outlived its slot's wait cannot deliver a task into a busy slot.
func (p *puller) subscribe() error {
	if p.sub != nil {
		_ = p.sub.Unsubscribe()
	}
	// Every answer to a pull of one is a single message: the task, or a
	// status that ends the pull. A stale status from an abandoned request
	// is dropped with its inbox, so two is already one more than needed.
	p.msgs = make(chan *nats.Msg, 2)
	sub, err := p.nc.ChanSubscribe(p.nc.NewInbox(), p.msgs)
	if err != nil {
		return fmt.Errorf("subscribe pull inbox: %w", err)
	}
	p.sub = sub
	return nil
}

// abandon gives up the pending pull request: it moves to a new inbox, and
// hands back at once a task that arrived in the meantime, rather than let
// it wait out its ack wait.
func (p *puller) abandon() error {
	old := p.msgs
	err := p.subscribe()
	for {
		select {
		case m := <-old:
			if msg, _ := pullAnswer(m); msg != nil {
				_ = msg.Nak()
			}
		default:
			return err
		}
	}
}

// close drops the subscription; pending pull requests then deliver nothing.
func (p *puller) close() {
	if p.sub != nil {
		_ = p.sub.Unsubscribe()
	}
}

// next waits for one task. It returns nats.ErrTimeout when the pull expired
// with nothing queued, and ctx's error when ctx ends first.
func (p *puller) next(ctx context.Context) (jetstream.Msg, error) {
	if err := p.nc.PublishRequest(p.subject, p.sub.Subject, p.request); err != nil {
		return nil, err
	}
	p.timer.Reset(p.expires + pullLost)
	defer p.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			// The request may still deliver: move to a new inbox so it
			// cannot.
			return nil, errors.Join(ctx.Err(), p.abandon())
		case <-p.timer.C:
			// No answer at all: the request was lost with a connection.
			return nil, errors.Join(nats.ErrTimeout, p.abandon())
		case m := <-p.msgs:
			msg, err := pullAnswer(m)
			if msg == nil && err == nil {
				continue // a heartbeat or other control message
			}
			return msg, err
		}
	}
}

// pullAnswer reads one message on a pull inbox: a task, a status that ends
// the pull (as an error), or (nil, nil) for a control message to skip. The
// statuses are those of JetStream's pull protocol (ADR-13), as jetstream's
// own pull consumer reads them.
func pullAnswer(m *nats.Msg) (jetstream.Msg, error) {
	if len(m.Data) > 0 || len(m.Header) == 0 {
		return pulledMsg{m}, nil
	}
	status := m.Header.Get("Status")
	switch status {
	case "":
		return pulledMsg{m}, nil
	case "100": // idle heartbeat or flow control
		return nil, nil
	case "404", "408": // no messages, request expired
		return nil, nats.ErrTimeout
	case "503":
		return nil, nats.ErrNoResponders
	}
	desc := m.Header.Get("Description")
	return nil, fmt.Errorf("pull task: status %s %s", status, desc)
}

// pulledMsg is a task message from a puller. It is settled over its reply
// subject ($JS.ACK…), the same protocol jetstream's own messages use; nats.go
// implements it on *nats.Msg.
type pulledMsg struct{ m *nats.Msg }

var _ jetstream.Msg = pulledMsg{}

// Metadata parses the delivery details from the reply subject.
func (p pulledMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := p.m.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered,
		NumPending:   md.NumPending,
		Timestamp:    md.Timestamp,
		Stream:       md.Stream,
		Consumer:     md.Consumer,
		Domain:       md.Domain,
	}, nil
}

// Data returns the message payload.
func (p pulledMsg) Data() []byte { return p.m.Data }

// Headers returns the message headers.
func (p pulledMsg) Headers() nats.Header { return p.m.Header }

// Subject returns the subject the task was published on.
func (p pulledMsg) Subject() string { return p.m.Subject }

// Reply returns the $JS.ACK subject that settles the message.
func (p pulledMsg) Reply() string { return p.m.Reply }

// Ack acknowledges the message.
func (p pulledMsg) Ack() error { return p.m.Ack() }

// DoubleAck acknowledges the message and waits for the server to confirm.
func (p pulledMsg) DoubleAck(ctx context.Context) error { return p.m.AckSync(nats.Context(ctx)) }

// Nak asks for a redelivery now.
func (p pulledMsg) Nak() error { return p.m.Nak() }

// NakWithDelay asks for a redelivery after delay.
func (p pulledMsg) NakWithDelay(delay time.Duration) error { return p.m.NakWithDelay(delay) }

// InProgress resets the ack wait.
func (p pulledMsg) InProgress() error { return p.m.InProgress() }

// Term stops all redelivery of the message.
func (p pulledMsg) Term() error { return p.m.Term() }

// TermWithReason stops all redelivery and gives the server a reason, shown
// in its advisory.
func (p pulledMsg) TermWithReason(reason string) error {
	return p.m.Respond([]byte("+TERM " + reason))
}
