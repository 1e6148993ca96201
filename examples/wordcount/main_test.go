package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/client"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/natsconf/natstest"
	"github.com/scalelab/scalelab/platform"
	"github.com/scalelab/scalelab/worker"
)

const text = "The quick brown fox\njumps over the lazy dog.\nThe dog sleeps; the fox doesn't."

// checkCounts fails unless t is a succeeded wordcount of text.
func checkCounts(t *testing.T, got *client.Task) {
	t.Helper()
	if got.State != client.Succeeded || got.Progress != 100 {
		t.Fatalf("task = %s (%d %%, error %q), want succeeded at 100 %%", got.State, got.Progress, got.Error)
	}
	var res Result
	if err := got.DecodeResult(&res); err != nil {
		t.Fatal(err)
	}
	if res.Words != 15 || res.Lines != 3 || res.Chars != len(text) {
		t.Errorf("counts = %d words, %d lines, %d chars; want 15, 3, %d", res.Words, res.Lines, res.Chars, len(text))
	}
	want := []WordCount{{"the", 4}, {"dog", 2}, {"fox", 2}, {"brown", 1}, {"doesn't", 1}}
	if fmt.Sprint(res.Top) != fmt.Sprint(want) {
		t.Errorf("top = %v, want %v", res.Top, want)
	}
}

// startWorker runs the example as the worker user of the server at url
// until the test ends, and waits until its type is registered.
func startWorker(t *testing.T, js jetstream.JetStream, url, password string) {
	t.Helper()
	env := map[string]string{"SCALELAB_NATS_URL": url, "SCALELAB_NATS_PASSWORD": password}
	w := testutil.Start(t, func(ctx context.Context) error {
		return run(ctx, []string{"-id", "wordcount-test"}, func(k string) string { return env[k] }, io.Discard)
	})
	reg, err := task.OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if exited, err := w.Exited(); exited {
			t.Fatalf("the worker exited: %v", err)
		}
		_, err := reg.Type(t.Context(), TaskType)
		return err
	})
}

// TestWordcountOverNATS: on a bare platform bus (the streams provisioned,
// no built-in worker), the example serves a task that an in-cluster
// client submits as the client user, and the record ends with the right
// counts.
func TestWordcountOverNATS(t *testing.T) {
	ns, pw := natstest.Start(t)
	admin := testutil.Connect(t, ns, nats.UserInfo("admin", pw[natsconf.RoleAdmin]), nats.CustomInboxPrefix("_INBOX.admin"))
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig()); err != nil {
		t.Fatal(err)
	}
	startWorker(t, js, ns.ClientURL(), pw[natsconf.RoleWorker])

	nc := testutil.Connect(t, ns, nats.UserInfo("client", pw[natsconf.RoleClient]), nats.CustomInboxPrefix("_INBOX.client"))
	c := client.NewNATS(nc, "wordcount-test")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	sub, err := c.Submit(ctx, TaskType, Payload{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Queue != Queue {
		t.Errorf("queue = %q, want the type's %q", sub.Queue, Queue)
	}
	got, err := c.Wait(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, got)
	if got.Worker != "wordcount-test" {
		t.Errorf("worker = %q, want wordcount-test", got.Worker)
	}
}

// TestCountStopsWithItsContext: a long text stops being counted when the
// task's context ends, with the context's error (the task is retried).
func TestCountStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := count(ctx, &worker.Task{}, Payload{Text: strings.Repeat("a b\n", 3*progressEvery)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("count = %v, want context.Canceled", err)
	}
}

// TestWordcountAgainstUp: `up` in this process, the example worker
// beside it, and the HTTP client through the front door with a dev token.
func TestWordcountAgainstUp(t *testing.T) {
	cfg := platform.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.BalancerAddr, cfg.AdminAddr, cfg.DBAddr, cfg.CacheAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.GatewayAddrs, cfg.NATSPort, cfg.NATSHTTPPort = "127.0.0.1:0", -1, 0
	cfg.Workers, cfg.SeedRows = 1, 10
	secret, err := auth.RandomSecret()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keys = auth.Keys{Secret: []byte(secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	p, err := platform.Start(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("Stop = %v", err)
		}
	})
	token, _, err := cfg.Keys.Issue("dev", auth.AllScopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(p.Admin)
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(p.BalancerURL, token)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("a built-in task", func(t *testing.T) {
		sub, err := c.Submit(ctx, "sleep", map[string]int{"duration_ms": 1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Wait(ctx, sub.ID)
		if err != nil || got.State != client.Succeeded {
			t.Fatalf("Wait = %+v, %v; want succeeded", got, err)
		}
		again, err := c.Submit(ctx, "sleep", map[string]int{"duration_ms": 1}, client.WithIdempotencyKey("k-"+sub.ID))
		if err != nil {
			t.Fatal(err)
		}
		if repeat, err := c.Submit(ctx, "sleep", map[string]int{"duration_ms": 1}, client.WithIdempotencyKey("k-"+sub.ID)); err != nil || repeat.ID != again.ID {
			t.Errorf("a keyed repeat = %v, %v; want the first task %s", repeat, err, again.ID)
		}
		if _, err := c.Submit(ctx, "sleep", map[string]int{"duration_ms": 2}, client.WithIdempotencyKey("k-"+sub.ID)); !client.IsCode(err, "conflict") {
			t.Errorf("the key with another payload = %v, want a conflict", err)
		}
		if _, err := c.Cancel(ctx, sub.ID); !client.IsCode(err, "conflict") {
			t.Errorf("Cancel of a finished task = %v, want a conflict", err)
		}
		var e *client.Error
		if _, err := c.Get(ctx, "nosuchtask"); !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Code != "not_found" {
			t.Errorf("Get of no task = %v, want a 404 not_found *client.Error", err)
		}
	})
	// Started after the built-in task: while the workers share the
	// legacy consumer, this one would pull built-in tasks too.
	startWorker(t, js, p.NATSURL, p.Passwords[natsconf.RoleWorker])
	t.Run("wordcount", func(t *testing.T) {
		if _, err := js.Consumer(ctx, task.Stream, task.Consumer); err == nil {
			t.Fatalf("the legacy consumer %q is there: it would hand wordcount tasks to the built-in workers too", task.Consumer)
		}
		sub, err := c.Submit(ctx, TaskType, Payload{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Wait(ctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		checkCounts(t, got)
	})
	t.Run("a payload its schema refuses", func(t *testing.T) {
		_, err := c.Submit(ctx, TaskType, map[string]int{"text": 42})
		var e *client.Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "invalid" || !strings.Contains(e.Message, "/text") {
			t.Errorf("Submit of a number as text = %v, want a 400 invalid naming /text", err)
		}
	})
}
