package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/client"
)

// sdkSubmitter submits tasks with the Go SDK's NATS client: what a program
// inside the cluster does instead of POST /longtask.
type sdkSubmitter struct {
	c       *client.NATSClient
	typ     string
	payload map[string]json.RawMessage
}

// sdkNATSSubmit returns a submitter of body (a /longtask body) over nc.
func sdkNATSSubmit(nc *nats.Conn, body []byte) (*sdkSubmitter, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("-body: %w", err)
	}
	var typ string
	if err := json.Unmarshal(m["task"], &typ); err != nil || typ == "" {
		return nil, fmt.Errorf(`-body: want a "task" member naming the type, got %s`, body)
	}
	delete(m, "task")
	return &sdkSubmitter{c: client.NewNATS(nc, "bench"), typ: typ, payload: m}, nil
}

func (s *sdkSubmitter) submit(ctx context.Context) (string, error) {
	t, err := s.c.Submit(ctx, s.typ, s.payload)
	if err != nil {
		return "", err
	}
	return t.ID, nil
}

// Close stops the client's watch of the task-type registry.
func (s *sdkSubmitter) Close() { s.c.Close() }
