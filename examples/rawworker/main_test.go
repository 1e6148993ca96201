package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
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
)

// startRaw runs the raw worker as user until the test ends and waits
// until it has registered its type and announced itself.
func startRaw(t *testing.T, js jetstream.JetStream, url, user, password string) {
	t.Helper()
	env := map[string]string{"SCALELAB_NATS_URL": url, "SCALELAB_NATS_USER": user, "SCALELAB_NATS_PASSWORD": password}
	w := testutil.Start(t, func(ctx context.Context) error {
		return run(ctx, nil, func(k string) string { return env[k] }, io.Discard)
	})
	reg, err := task.OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if exited, err := w.Exited(); exited {
			t.Fatalf("the raw worker exited: %v", err)
		}
		if _, err := reg.Type(t.Context(), TaskType); err != nil {
			return err
		}
		ws, err := reg.Workers(t.Context())
		if err == nil && len(ws) == 0 {
			return errNotYet
		}
		return err
	})
}

// errNotYet is startRaw's poll before the worker has announced itself.
var errNotYet = errors.New("no worker announced yet")

// checkReversed fails unless got is a succeeded reverse of "héllo, wörld".
func checkReversed(t *testing.T, got *client.Task) {
	t.Helper()
	if got.State != client.Succeeded || got.Attempts != 1 || got.Progress != 100 {
		t.Fatalf("task = %s after %d attempts at %d %% (error %q), want succeeded after 1 at 100 %%", got.State, got.Attempts, got.Progress, got.Error)
	}
	var res struct {
		Reversed string `json:"reversed"`
		Runes    int    `json:"runes"`
	}
	if err := json.Unmarshal(got.Result, &res); err != nil {
		t.Fatal(err)
	}
	if res.Reversed != "dlröw ,olléh" || res.Runes != 12 {
		t.Errorf("result = %+v, want dlröw ,olléh, 12 runes", res)
	}
}

// TestRawWorkerOverNATS: on a bare platform bus (provisioned, no other
// worker), the raw worker, which knows only docs/TASKS-WIRE.md, serves
// tasks an in-cluster client submits: one succeeds with its result and
// its type's limits, one with a payload it cannot read fails for good.
func TestRawWorkerOverNATS(t *testing.T) {
	ns, pw := natstest.Start(t)
	admin := testutil.Connect(t, ns, nats.UserInfo("admin", pw[natsconf.RoleAdmin]), nats.CustomInboxPrefix("_INBOX.admin"))
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig()); err != nil {
		t.Fatal(err)
	}
	// As admin: the worker user may use the per-queue consumers only
	// once issue #25's queues land in natsconf.
	startRaw(t, js, ns.ClientURL(), "admin", pw[natsconf.RoleAdmin])

	nc := testutil.Connect(t, ns, nats.UserInfo("client", pw[natsconf.RoleClient]), nats.CustomInboxPrefix("_INBOX.client"))
	c := client.NewNATS(nc, "raw-test")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	sub, err := c.Submit(ctx, TaskType, map[string]string{"text": "héllo, wörld"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Wait(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkReversed(t, got)
	if got.Queue != "raw" || got.MaxAttempts != 3 || got.TimeoutMS != 10000 || got.Owner != "raw-test" {
		t.Errorf("record = queue %q, max_attempts %d, timeout_ms %d, owner %q; want the type's raw, 3, 10000 and raw-test",
			got.Queue, got.MaxAttempts, got.TimeoutMS, got.Owner)
	}

	// The schema the raw worker registered is the platform's check too.
	if _, err := c.Submit(ctx, TaskType, map[string]int{"text": 42}); !client.IsCode(err, "invalid") || !strings.Contains(err.Error(), "/text") {
		t.Errorf("a payload without a string text = %v; want a 400 invalid naming /text", err)
	}
}

// TestRawWorkerAgainstUp: `up` in this process and the raw worker beside
// it as the worker user, serving its own queue; a task submitted over HTTP
// with the dev token succeeds.
func TestRawWorkerAgainstUp(t *testing.T) {
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
	js, err := jetstream.New(p.Admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Consumer(t.Context(), task.Stream, task.Consumer); err == nil {
		t.Fatalf(`the legacy consumer %q (tasks.>) is there: it overlaps every per-queue consumer on the work-queue stream`, task.Consumer)
	}
	startRaw(t, js, p.NATSURL, "worker", p.Passwords[natsconf.RoleWorker])
	token, _, err := cfg.Keys.Issue("dev", auth.AllScopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(p.BalancerURL, token)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	sub, err := c.Submit(ctx, TaskType, map[string]string{"text": "héllo, wörld"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Wait(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkReversed(t, got)
}
