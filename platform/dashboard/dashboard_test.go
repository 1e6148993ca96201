package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/internal/wire"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/natsconf/natstest"
	"github.com/scalelab/scalelab/platform/dashboard"
	"github.com/scalelab/scalelab/worker"
)

// fakeBalancer stands in for the balancer's status: one gateway whose
// request count the test raises.
type fakeBalancer struct{ requests atomic.Int64 }

func (b *fakeBalancer) status() balancer.Status {
	return balancer.Status{Policy: balancer.PolicyRoundRobin, Ready: 1, Backends: []balancer.BackendStatus{
		{URL: "http://127.0.0.1:5000", State: "healthy", Weight: 1, Requests: b.requests.Load()},
	}}
}

// startDashboard runs a dashboard with cfg over a fake balancer and
// serves its routes from an httptest server.
func startDashboard(t *testing.T, cfg dashboard.Config) (*httptest.Server, *fakeBalancer) {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	d := dashboard.New(cfg, testutil.QuietLog())
	fb := &fakeBalancer{}
	srv := httptest.NewServer(http.StripPrefix("/-/dashboard", d.Handler(fb.status)))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx)
	}()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("Dashboard.Run did not return 10s after its context ended")
		}
	})
	return srv, fb
}

// state returns GET /state.
func state(t *testing.T, srv *httptest.Server) dashboard.Snapshot {
	t.Helper()
	res, err := srv.Client().Get(srv.URL + "/-/dashboard/state")
	if err != nil {
		t.Fatalf("GET /state: %v", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /state = %d %s (%v), want 200", res.StatusCode, b, err)
	}
	var s dashboard.Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("decode /state %s: %v", b, err)
	}
	return s
}

// natsEnv is an embedded server with scalelab's users and the task
// streams, as `up` has it.
type natsEnv struct {
	ns    *server.Server
	pw    map[natsconf.Role]string
	admin *nats.Conn
	js    jetstream.JetStream
	store *task.Store
}

func newNATSEnv(t *testing.T) *natsEnv {
	t.Helper()
	ns, pw := natstest.Start(t)
	e := &natsEnv{ns: ns, pw: pw}
	var err error
	e.admin = e.connect(t, natsconf.RoleAdmin)
	if e.js, err = jetstream.New(e.admin); err != nil {
		t.Fatal(err)
	}
	if e.store, err = task.Provision(t.Context(), e.js, task.DefaultProvisionConfig()); err != nil {
		t.Fatalf("task.Provision() = %v", err)
	}
	return e
}

// connect connects as role, as the roles do (natsconn: the role's inbox
// prefix), and fails the test on any permission violation.
func (e *natsEnv) connect(t *testing.T, r natsconf.Role) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(e.ns.ClientURL(), nats.UserInfo(string(r), e.pw[r]),
		nats.CustomInboxPrefix(natsconn.InboxPrefix(string(r))),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			t.Errorf("nats error as %s: %v", r, err)
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", r, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// dashboardNATS are the options the dashboard connects with: the balancer
// user, as `up` and compose give it.
func (e *natsEnv) dashboardNATS() natsconn.Options {
	return natsconn.Options{URL: e.ns.ClientURL(), Name: "scalelab-balancer",
		User: string(natsconf.RoleBalancer), Password: e.pw[natsconf.RoleBalancer]}
}

// submit creates a task record and queues the task, as a gateway does.
func (e *natsEnv) submit(t *testing.T, typ string) {
	t.Helper()
	id := nuid.Next()
	now := time.Now().UTC()
	if _, err := e.store.Create(t.Context(), &task.Record{ID: id, Type: typ, State: task.Queued, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(task.Envelope{ID: id, Type: typ, Payload: json.RawMessage(`{}`)})
	if _, err := e.js.Publish(t.Context(), task.Subject(task.DefaultQueue, typ), data, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// run runs a role's Run until the test ends.
func run(t *testing.T, name string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: Run() = %v", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("%s did not stop", name)
		}
	})
}

// TestCollectsEveryFigure runs the dashboard as the balancer's NATS user
// against real roles on an embedded server: every figure comes in, and
// moves when the system works.
func TestCollectsEveryFigure(t *testing.T) {
	t.Parallel()
	e := newNATSEnv(t)
	ctx := t.Context()

	// The default queue before any worker (one made its consumer, then
	// left): tasks wait.
	if _, err := e.js.CreateOrUpdateConsumer(ctx, task.Stream, jetstream.ConsumerConfig{
		Durable: task.QueueConsumer(task.DefaultQueue), AckPolicy: jetstream.AckExplicitPolicy,
		FilterSubjects: task.QueueSubjects(task.DefaultQueue),
	}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.submit(t, "noop")
	}
	for range 2 {
		if _, err := e.js.Publish(ctx, task.DLQSubject("noop"), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	srv, fb := startDashboard(t, dashboard.Config{NATS: e.dashboardNATS()})
	testutil.Eventually(t, 15*time.Second, func() error {
		s := state(t, srv)
		switch {
		case !s.NATS.Connected:
			return fmt.Errorf("nats not connected: %q", s.NATS.Error)
		case s.Queue == nil || s.Queue.Error != "":
			return fmt.Errorf("queue: %+v", s.Queue)
		case s.Queue.Pending != 3 || s.Queue.Dead != 2:
			return fmt.Errorf("queue pending %d, dead %d; want 3 and 2", s.Queue.Pending, s.Queue.Dead)
		case len(s.Queue.Queues) != 1 || s.Queue.Queues[0].Name != task.DefaultQueue || s.Queue.Queues[0].Pending != 3 ||
			s.Queue.Queues[0].OldestAgeSeconds != nil:
			return fmt.Errorf("queues %+v, want default with 3 pending and no age (no worker sampled it)", s.Queue.Queues)
		case s.Workers == nil || len(s.Workers.Workers) != 0:
			return fmt.Errorf("workers %+v, want none yet", s.Workers)
		}
		return nil
	})

	// A worker runs them; dbsvc answers queries; a gateway's cache hits
	// and misses.
	wcfg := worker.DefaultConfig()
	wcfg.ID, wcfg.ShutdownTimeout = "w-1", 2*time.Second
	wnc := e.connect(t, natsconf.RoleWorker)
	run(t, "worker", func(ctx context.Context) error { return worker.Run(ctx, wcfg, wnc, testutil.QuietLog()) })

	dcfg := dbsvc.DefaultConfig()
	dcfg.Addr, dcfg.DataDir, dcfg.SeedRows, dcfg.ShutdownTimeout = "127.0.0.1:0", t.TempDir(), 100, 2*time.Second
	dnc := e.connect(t, natsconf.RoleDBSvc)
	run(t, "dbsvc", func(ctx context.Context) error { return dbsvc.Run(ctx, dcfg, dnc, testutil.QuietLog()) })

	if _, err := e.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cache.Bucket}); err != nil {
		t.Fatal(err)
	}
	gnc := e.connect(t, natsconf.RoleGateway)
	c, err := cache.New(gnc, "gw-1", cache.DefaultConfig(), testutil.QuietLog())
	if err != nil {
		t.Fatalf("cache.New() = %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	load := func(context.Context) ([]byte, error) { return []byte(`"v"`), nil }
	for range 4 { // one miss (a load), then hits
		if _, err := c.Get(ctx, "item.v1.1", load); err != nil {
			t.Fatalf("cache Get = %v", err)
		}
	}

	testutil.Eventually(t, 30*time.Second, func() error {
		// Traffic while we look, so rates are above zero.
		fb.requests.Add(10)
		if _, err := e.admin.Request(wire.DBItemGet, []byte(`{"id":1}`), 5*time.Second); err != nil {
			return fmt.Errorf("db.items.get: %w", err)
		}
		if _, err := c.Get(ctx, "item.v1.1", load); err != nil {
			return err
		}
		s := state(t, srv)
		if s.Balancer == nil || len(s.Balancer.Gateways) != 1 || s.Balancer.Gateways[0].Rate <= 0 || s.Balancer.Rate <= 0 {
			return fmt.Errorf("balancer figures %+v, want a gateway with a rate", s.Balancer)
		}
		if s.Queue.Pending != 0 || s.Queue.Dead != 2 {
			return fmt.Errorf("queue %+v, want 0 pending (the worker ran them) and 2 dead", s.Queue)
		}
		var names []string
		for _, q := range s.Queue.Queues {
			names = append(names, q.Name)
			if q.OldestAgeSeconds == nil || *q.OldestAgeSeconds != 0 {
				return fmt.Errorf("queue %+v, want an oldest age of 0 (sampled by the worker: empty)", q)
			}
		}
		if !slices.Equal(names, task.BuiltinQueues) {
			return fmt.Errorf("queues %v, want the built-ins in priority order %v", names, task.BuiltinQueues)
		}
		if len(s.Workers.Workers) != 1 || s.Workers.Workers[0].ID != "w-1" || s.Workers.Workers[0].Succeeded != 3 {
			return fmt.Errorf("workers %+v, want w-1 with 3 succeeded", s.Workers)
		}
		if s.DB == nil || s.DB.Instances != 1 || s.DB.Queries == 0 || s.DB.Rate <= 0 {
			return fmt.Errorf("db %+v, want 1 instance with queries and a rate", s.DB)
		}
		if s.Cache == nil || len(s.Cache.Gateways) != 1 || s.Cache.Misses != 1 || s.Cache.Hits < 3 {
			return fmt.Errorf("cache %+v, want gw-1 with 1 miss and 3+ hits", s.Cache)
		}
		if s.Cache.HitRatio <= 0.5 || s.Cache.Entries == 0 || s.Cache.LookupRate <= 0 {
			return fmt.Errorf("cache hit ratio %v, entries %d, lookups/s %v", s.Cache.HitRatio, s.Cache.Entries, s.Cache.LookupRate)
		}
		if s.NATS.Version == "" {
			return fmt.Errorf("no NATS server version")
		}
		return nil
	})
	// A queue paused in the registry: the worker (as the worker NATS user)
	// sees it, and its sample says so.
	reg, err := task.OpenRegistry(ctx, e.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SetPaused(ctx, "low", true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() error {
		for _, q := range state(t, srv).Queue.Queues {
			if q.Name == "low" && q.Paused {
				return nil
			}
		}
		return fmt.Errorf("queue low not shown paused")
	})
}

// TestWithoutNATS: with no NATS the balancer's figures still come, and the
// rest says why it is missing.
func TestWithoutNATS(t *testing.T) {
	t.Parallel()
	srv, fb := startDashboard(t, dashboard.Config{})
	testutil.Eventually(t, 10*time.Second, func() error {
		fb.requests.Add(5)
		s := state(t, srv)
		if s.Balancer == nil || s.Balancer.Rate <= 0 {
			return fmt.Errorf("balancer %+v, want a rate", s.Balancer)
		}
		if s.NATS.Connected || !strings.Contains(s.NATS.Error, "no NATS connection") {
			return fmt.Errorf("nats %+v, want not connected, saying so", s.NATS)
		}
		if s.Cache != nil || s.DB != nil || s.Queue != nil || s.Workers != nil {
			return fmt.Errorf("NATS sections %+v %+v %+v %+v, want none", s.Cache, s.DB, s.Queue, s.Workers)
		}
		return nil
	})
}

// TestRefusedCredentials: a wrong password shows on the page; the
// balancer's figures still come.
func TestRefusedCredentials(t *testing.T) {
	t.Parallel()
	e := newNATSEnv(t)
	opts := e.dashboardNATS()
	opts.Password = "wrong"
	srv, _ := startDashboard(t, dashboard.Config{NATS: opts})
	testutil.Eventually(t, 10*time.Second, func() error {
		s := state(t, srv)
		if s.Balancer == nil || !strings.Contains(s.NATS.Error, "refused") {
			return fmt.Errorf("balancer %v, nats %+v: want figures and a refusal", s.Balancer != nil, s.NATS)
		}
		return nil
	})
}

func TestPageAndEvents(t *testing.T) {
	t.Parallel()
	srv, _ := startDashboard(t, dashboard.Config{MaxViewers: 1})
	hc := srv.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	t.Run("redirect to the page", func(t *testing.T) {
		res, err := hc.Get(srv.URL + "/-/dashboard")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "dashboard/" {
			t.Errorf("GET /-/dashboard = %d Location %q, want 302 dashboard/", res.StatusCode, res.Header.Get("Location"))
		}
	})
	for path, want := range map[string]string{
		"/-/dashboard/": `<script src="app.js">`, "/-/dashboard/app.js": "new EventSource(\"events\")", "/-/dashboard/style.css": ".node",
	} {
		t.Run("GET "+path, func(t *testing.T) {
			res, err := hc.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
				t.Errorf("GET %s = %d, %d bytes, want 200 with %q", path, res.StatusCode, len(b), want)
			}
		})
	}
	t.Run("POST is refused", func(t *testing.T) {
		res, err := hc.Post(srv.URL+"/-/dashboard/state", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /state = %d, want 405", res.StatusCode)
		}
	})

	t.Run("events", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/-/dashboard/events", nil)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type = %q, want text/event-stream", ct)
		}
		// One viewer at most here: a second stream is turned away.
		second, err := hc.Get(srv.URL + "/-/dashboard/events")
		if err != nil {
			t.Fatal(err)
		}
		second.Body.Close()
		if second.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("second stream = %d, want 503", second.StatusCode)
		}

		r := bufio.NewReader(res.Body)
		var times []time.Time
		for len(times) < 2 {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v", err)
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var s dashboard.Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			times = append(times, s.Time)
		}
		if !times[1].After(times[0]) {
			t.Errorf("event times %v, want a new sample in each", times)
		}
	})
}
