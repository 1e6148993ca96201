package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"time"

	"github.com/scalelab/scalelab/client"
	"github.com/scalelab/scalelab/internal/task/tasktest"
	"github.com/scalelab/scalelab/worker"
)

// A program of your own serves a task type of its own: HandleJSON decodes
// each task's payload into a Greeting, the schema lets the gateway refuse
// a bad payload before it is queued, and Run registers the type and pulls
// its tasks until ctx ends. (tasktest.NewBus starts an embedded NATS
// server and provisions it as `scalelab up` does; against a real platform,
// connect as the NATS user "worker".)
func ExampleHandleJSON() {
	nc, stop := tasktest.NewBus()
	defer stop()

	type Greeting struct {
		Name string `json:"name"`
	}
	w := worker.New(nc, worker.Config{ID: "greeter-1", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	worker.HandleJSON(w, "greet", func(ctx context.Context, t *worker.Task, g Greeting) (any, error) {
		t.Progress(50, "composing")
		return map[string]string{"greeting": "hello, " + g.Name}, nil
	},
		worker.WithSchema(json.RawMessage(`{"type":"object","required":["name"],"properties":{"name":{"type":"string"}}}`)),
		worker.WithQueue("greetings"),
		worker.WithMaxAttempts(3))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// A client inside the cluster submits and waits (over HTTP, client.New
	// does the same through the front door with a token).
	c := client.NewNATS(nc, "example")
	defer c.Close()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	t := submitOnceRegistered(wctx, c, "greet", map[string]string{"name": "Ada"})
	t, err := c.Wait(wctx, t.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.State, t.Queue, string(t.Result))

	_, err = c.Submit(wctx, "greet", map[string]int{"name": 42})
	fmt.Println(err)
	// Output:
	// succeeded greetings {"greeting":"hello, Ada"}
	// scalelab: 400 invalid: payload: /name: must be a string, not a number
}

// submitOnceRegistered submits until the type is registered: Run registers
// it before it pulls, a moment after it starts.
func submitOnceRegistered(ctx context.Context, c *client.NATSClient, typ string, payload any) *client.Task {
	for {
		t, err := c.Submit(ctx, typ, payload)
		if err == nil {
			return t
		}
		if !client.IsCode(err, "invalid") || ctx.Err() != nil {
			log.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // polling for the registration
	}
}
