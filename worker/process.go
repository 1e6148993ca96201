package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/wire"
)

// ProcessReply is the reply of the process endpoint (and of GET /process).
type ProcessReply struct {
	Message   string `json:"message"`
	Worker    string `json:"worker"`
	RequestID string `json:"request_id,omitempty"`
}

// addProcessService registers the process micro service. Every worker adds
// its own instance; micro's default queue group spreads requests over them.
// Its stats carry the worker's task counts (TaskStats) as endpoint data.
func addProcessService(nc *nats.Conn, id string, tasks func() TaskStats, log *slog.Logger) (micro.Service, error) {
	handler := micro.HandlerFunc(func(req micro.Request) {
		rid := req.Headers().Get(reqid.Header)
		reply := ProcessReply{Message: "Business logic executed", Worker: id, RequestID: rid}
		if err := req.RespondJSON(reply); err != nil {
			log.Warn("process reply", "request_id", rid, "err", err)
			return
		}
		log.Debug("process served", "request_id", rid)
	})
	svc, err := micro.AddService(nc, micro.Config{
		Name:        wire.ProcessService,
		Version:     "1.0.0",
		Description: "scalelab sync business logic (the lab's /process)",
		Metadata:    map[string]string{"worker": id},
		Endpoint:    &micro.EndpointConfig{Subject: wire.ProcessSubject, Handler: handler},
		// Tasks are not requests of this service, but a worker has no
		// other service, and this keeps one stats request per worker.
		StatsHandler: func(*micro.Endpoint) any { return tasks() },
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", wire.ProcessService, err)
	}
	return svc, nil
}

// ProcessClient calls the process service.
type ProcessClient struct {
	// mux takes the replies on the process service's own reply inbox,
	// where no other role may publish (natsconn.ReplyInbox).
	mux     *natsconn.ReplyMux
	timeout time.Duration
}

// NewProcessClient returns a client whose calls give up after timeout
// unless the context ends sooner.
func NewProcessClient(nc *nats.Conn, timeout time.Duration) *ProcessClient {
	return &ProcessClient{mux: natsconn.NewReplyMux(nc, wire.ProcessService), timeout: timeout}
}

// Process runs the business logic on some worker. Its errors are
// *apperr.Error: Unavailable when no worker answers.
func (c *ProcessClient) Process(ctx context.Context, requestID string) (ProcessReply, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	msg := nats.NewMsg(wire.ProcessSubject)
	msg.Header.Set(reqid.Header, requestID)
	resp, err := c.mux.Request(ctx, msg)
	if err != nil {
		return ProcessReply{}, natsconn.RequestError("process service", err)
	}
	if err := apperr.FromNATSReply(resp); err != nil {
		return ProcessReply{}, err
	}
	var reply ProcessReply
	if err := json.Unmarshal(resp.Data, &reply); err != nil {
		return ProcessReply{}, fmt.Errorf("decode process reply: %w", err)
	}
	return reply, nil
}
