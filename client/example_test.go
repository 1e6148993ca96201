package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/scalelab/scalelab/client"
	"github.com/scalelab/scalelab/internal/task/tasktest"
)

// New talks to the front door with a token: submit a task, then wait for
// its result. (Run `scalelab up` and export the TOKEN it prints.)
func ExampleNew() {
	c := client.New("http://127.0.0.1:8000", os.Getenv("TOKEN"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t, err := c.Submit(ctx, "wordcount", map[string]string{"text": "to be or not to be"})
	if err != nil {
		log.Fatal(err) // a *client.Error for the API's refusals: Status, Code, Message
	}
	done, err := c.Wait(ctx, t.ID)
	if err != nil {
		log.Fatal(err)
	}
	var counts struct{ Words int }
	if err := done.DecodeResult(&counts); err != nil {
		log.Fatal(err)
	}
	fmt.Println(done.State, counts.Words)
}

// Submit's options: a queue, a time to run, and an idempotency key that
// makes a retried submission return the first task instead of a second.
func ExampleHTTPClient_Submit() {
	c := client.New("http://127.0.0.1:8000", os.Getenv("TOKEN"))
	t, err := c.Submit(context.Background(), "report", nil,
		client.WithQueue("low"),
		client.WithDelay(10*time.Minute),
		client.WithIdempotencyKey("nightly-report-2026-12-07"))
	if client.IsCode(err, "rate_limited") {
		log.Fatal("the queue is full: try again later")
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.ID, t.State)
}

// List pages through GET /tasks: here every failed task the token may
// see (all of them with tasks:admin), 100 a page, then retries them. The
// first page's totals count the tasks by state.
func ExampleHTTPClient_List() {
	c := client.New("http://127.0.0.1:8000", os.Getenv("TOKEN"))
	ctx := context.Background()
	opts := client.ListOptions{State: client.Failed, Limit: 100}
	for {
		page, err := c.List(ctx, opts)
		if err != nil {
			log.Fatal(err) // e.g. a 400 "invalid" for a type that is not registered
		}
		if opts.Cursor == "" {
			fmt.Println("failed:", page.Totals[client.Failed], "of", page.Totals["all"])
		}
		for _, t := range page.Tasks {
			if _, err := c.Retry(ctx, t.ID); err != nil && !client.IsCode(err, "conflict") {
				log.Fatal(err) // a conflict: retried by someone else meanwhile
			}
		}
		if page.NextCursor == "" {
			break
		}
		opts.Cursor = page.NextCursor
	}
}

// NewNATS submits over NATS, from inside the cluster, as the "client"
// NATS user; List is its own. (tasktest.NewBus starts an
// embedded NATS server and provisions it as `scalelab up` does.)
func ExampleNewNATS() {
	nc, stop := tasktest.NewBus()
	defer stop()
	c := client.NewNATS(nc, "nightly-script")
	ctx := context.Background()

	t, err := c.Submit(ctx, "sleep", map[string]int{"duration_ms": 10})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("submitted:", t.Type, t.State, t.Owner)
	if _, err := c.Cancel(ctx, t.ID); err != nil {
		log.Fatal(err)
	}
	list, err := c.List(ctx, client.Filter{Owner: "nightly-script", Limit: 10})
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range list {
		fmt.Println("listed:", t.Type, t.State)
	}
	// Output:
	// submitted: sleep queued nightly-script
	// listed: sleep cancelled
}
