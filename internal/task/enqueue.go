package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// Enqueue publishes env, the message of a task whose record is already
// stored, and waits for the stream's ack, so that nil means the task is
// stored on disk. The task id is the Nats-Msg-Id: a retried publish
// inside the dedupe window is stored once. A task with a non-zero runAt
// is stored as a schedule in DelayedStream, which hands it to Stream when
// due. requestID, if any, goes in the reqid.Header (X-Request-ID) header.
//
// Its errors are apperr's: RateLimited (429) when the stream is full
// (DiscardNew: back-pressure; the server's "maximum messages exceeded"),
// StoreFull (503) when JetStream's store is (NoSpace), Unavailable (503)
// otherwise. The gateway
// (POST /longtask) and the client package's NATS client both submit
// through it, so a task is published one way whoever submits it.
func Enqueue(ctx context.Context, js jetstream.JetStream, env Envelope, requestID string, runAt time.Time) error {
	return enqueue(ctx, js, env, requestID, runAt, env.ID)
}

// enqueue is Enqueue with the message's Nats-Msg-Id: a task's id when it
// is submitted, another when it is queued again (Retry).
func enqueue(ctx context.Context, js jetstream.JetStream, env Envelope, requestID string, runAt time.Time, msgID string) error {
	data, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode task %s: %w", env.ID, err)
	}
	queue := env.QueueOrDefault()
	msg := nats.NewMsg(Subject(queue, env.Type))
	stream := Stream
	if !runAt.IsZero() {
		msg.Subject, stream = DelayedAtPrefix+env.ID, DelayedStream
		msg.Header.Set("Nats-Schedule", "@at "+runAt.UTC().Format(time.RFC3339))
		msg.Header.Set("Nats-Schedule-Target", DelayedDuePrefix+queue+"."+env.Type)
	}
	msg.Data = data
	if requestID != "" {
		msg.Header.Set(reqid.Header, requestID)
	}
	msg.Header.Set(HeaderTaskID, env.ID)
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(stream)); err != nil {
		if overLimit(err) {
			return apperr.Wrap(err, apperr.RateLimited, "task queue is full, try again later")
		}
		if NoSpace(err) {
			return apperr.Wrap(err, apperr.StoreFull, NoSpaceMessage)
		}
		return apperr.Wrap(err, apperr.Unavailable, "task queue is not available")
	}
	return nil
}

// Refused reports whether err, from Enqueue, says the message was not
// stored: JetStream answered with an error, or nothing serves the stream.
// Any other failure (a timeout, a connection lost while waiting for the
// ack) leaves it unknown: the server may have stored the message and its
// ack been lost in a failover, and then the task runs.
func Refused(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// NoSpaceMessage is what a client is told when JetStream's store is full
// (NoSpace, ErrNoSpace): the gateway and the client package say it the
// same way.
const NoSpaceMessage = "the task store is out of space (the JetStream store is at its limit, kept under what its disk holds): nothing was stored; try again later"

// NewEnvelope returns the message that queues rec, stored at revision
// rev: the record rides along (Envelope.Record) unless the payload is
// over MaxInlinePayload.
func NewEnvelope(rec *Record, rev uint64) Envelope {
	env := Envelope{ID: rec.ID, Type: rec.Type, Queue: rec.Queue, Payload: rec.Payload, Generation: rec.Generation}
	if len(rec.Payload) <= MaxInlinePayload {
		env.Record, env.Revision = rec, rev // the worker then needs not read it
	}
	return env
}
