package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pullExpires is how long a slot waits for the answer to one pull request.
// An idle slot sends a new one this often.
const pullExpires = 5 * time.Second

// puller pulls tasks for the runner's slots: one jetstream pull of one
// message (Consumer.Next) each time a slot is free.
//
// Why this form of the jetstream pull API:
//   - A pull of one, sent when the slot is free, so a busy slot has no pull
//     request waiting at the server and no task waits in a client buffer
//     while its ack wait runs (it would be redelivered to another worker).
//   - Consumer.Next, although it subscribes an inbox for each pull (a SUB
//     and an UNSUB, a goroutine): that inbox dies with the pull, so a
//     request that outlived its slot's wait cannot deliver into a busy slot.
//     That costs about 8 µs a task over a pull on a kept inbox (20,000
//     pulls and acks by 8 slots in one process: 0.34–0.37 s against
//     0.19–0.21 s for the hand-rolled protocol this replaced). End to end,
//     in two same-run A/Bs of this change alone against the hand-rolled
//     protocol (bench/tasks/run.sh with BASELINE, 9 interleaved rounds of
//     20,000 tasks each, 2026-12-07), it gave 0.89× and 0.94× the tasks/s
//     and 11 % and 6 % more CPU per task: under the 10 % that issue #28
//     set for keeping a hand-rolled protocol.
//   - Not a Messages iterator with PullMaxMessages(1) per slot, the cheaper
//     form (one inbox for the slot's life): in nats.go v1.55.0 its
//     Next sends no pull request while the goroutine that sent the previous
//     one has not yet marked it done, which loses to a fast answer, and then
//     waits out the missed heartbeats (pullExpires) with nothing asked for.
//     It pulls as fast as the hand-rolled protocol, but 8 slots taking
//     3,000 tasks under -race stalled so 3 to 8 times, 5 s each.
//   - Not Consume, nor one iterator with a larger batch shared by the
//     slots: both keep tasks in a client buffer ahead of the slots.
type puller struct {
	cons    jetstream.Consumer
	expires time.Duration
}

// next waits for one task. It returns nats.ErrTimeout when the pull ended
// with nothing queued (it expired, or was lost with a connection), and
// ctx's error when ctx ends first.
func (p puller) next(ctx context.Context) (jetstream.Msg, error) {
	// A deadline, not FetchMaxWait (they exclude each other): jetstream
	// asks the server to expire the request a little before it, so the
	// deadline only passes on a request lost with its connection.
	pctx, cancel := context.WithTimeout(ctx, p.expires)
	defer cancel()
	msg, err := p.cons.Next(jetstream.FetchContext(pctx))
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, nats.ErrTimeout
	}
	return msg, err
}
