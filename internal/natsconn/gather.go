package natsconn

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// gatherBuffer is how many replies may wait to be read. A request that
// every instance answers gets one reply per instance, a handful here.
//
// Not nats.go's SubscribeSync: its channel holds 65,536 messages, half a
// megabyte allocated for every request, which showed as 7 % of a gateway's
// garbage while the dashboard asked for stats once a second.
const gatherBuffer = 256

// The header and value of the server's no-responders status (nats.go
// keeps its names unexported).
const (
	statusHeader       = "Status"
	noRespondersStatus = "503"
)

// GatherOptions says when Gather stops waiting for more replies.
type GatherOptions struct {
	// First is the longest wait for the first reply; zero means Stall.
	First time.Duration
	// Stall is the longest wait for each later reply; zero means no limit
	// (until Enough or the context ends).
	Stall time.Duration
	// Enough, if set, is asked after each reply whether to stop.
	Enough func(replies int) bool
	// Service is the micro service that answers, whose reply inbox
	// (ReplyInbox) the replies come to: only its responders may publish
	// there. Empty means the service a $SRV.<VERB>.<name> subject names,
	// else the connection's main inbox.
	Service string
}

// Gather publishes data on subject with a fresh reply inbox and collects
// the replies of every responder: for requests many processes answer, such
// as the micro services' $SRV verbs or a broadcast that each process
// confirms.
//
// It stops when Enough says so, when a wait of First or Stall passes with
// no reply (everyone who will answer has), or when the server says no one
// listens on subject; these return the replies so far and no error. If
// ctx ends first, it returns the replies so far and ctx's error.
func Gather(ctx context.Context, nc *nats.Conn, subject string, data []byte, o GatherOptions) ([]*nats.Msg, error) {
	inbox := nc.NewRespInbox()
	service := o.Service
	if f := strings.Split(subject, "."); service == "" && len(f) >= 3 && f[0] == "$SRV" {
		service = f[2]
	}
	if service != "" {
		inbox = serviceInbox(nc, service) + "." + nuid.Next()
	}
	ch := make(chan *nats.Msg, gatherBuffer)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, data); err != nil {
		return nil, err
	}
	wait := o.First
	if wait == 0 {
		wait = o.Stall
	}
	var replies []*nats.Msg
	for o.Enough == nil || !o.Enough(len(replies)) {
		msg, err := next(ctx, ch, wait)
		switch {
		case err != nil:
			return replies, err
		case msg == nil, noResponders(msg):
			return replies, nil
		}
		replies = append(replies, msg)
		wait = o.Stall
	}
	return replies, nil
}

// next returns the next message on ch, nil if none came within wait (when
// wait > 0), or ctx's error.
func next(ctx context.Context, ch <-chan *nats.Msg, wait time.Duration) (*nats.Msg, error) {
	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case msg := <-ch:
		return msg, nil
	case <-timeout:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// noResponders reports the status message the server sends to the reply
// inbox when no one subscribes to the request's subject.
func noResponders(msg *nats.Msg) bool {
	return len(msg.Data) == 0 && msg.Header.Get(statusHeader) == noRespondersStatus
}
