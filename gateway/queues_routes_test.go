package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/ops"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// queueJSON is one queue as GET /queues answers it.
type queueJSON struct {
	Name             string         `json:"name"`
	Paused           bool           `json:"paused"`
	PausedAt         *time.Time     `json:"paused_at"`
	Depth            uint64         `json:"depth"`
	InFlight         int            `json:"in_flight"`
	OldestAgeSeconds float64        `json:"oldest_age_seconds"`
	Workers          int            `json:"workers"`
	Dead             *int           `json:"dead"`
	Totals           map[string]int `json:"totals"`
}

// listQueues answers GET /queues as tok, wanting a 200.
func listQueues(t *testing.T, base, tok string) []queueJSON {
	t.Helper()
	r := get(t, base+"/queues", tok)
	var body struct {
		Queues []queueJSON `json:"queues"`
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &body) != nil || body.Queues == nil {
		t.Fatalf("GET /queues = %d %s, want 200 with queues", r.status, r.body)
	}
	return body.Queues
}

// queueNamed returns the queue name of qs.
func queueNamed(t *testing.T, qs []queueJSON, name string) queueJSON {
	t.Helper()
	for _, q := range qs {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("queue %s not listed in %+v", name, qs)
	return queueJSON{}
}

// pauseQueue posts to /queues/{name}/{verb} as tok.
func pauseQueue(t *testing.T, base, tok, name, verb string) result {
	t.Helper()
	return send(t, http.MethodPost, base+"/queues/"+name+"/"+verb, tok, "", nil)
}

// TestQueuesRoutes: GET /queues lists the registered queues in registry
// order with their depth, oldest task's age, live workers and paused
// state; tasks:admin pauses and resumes one, seen at once; refusals are
// JSON errors: 401 without a token, 403 without the scope, 404 for an
// unknown queue, 400 for a name that is none.
func TestQueuesRoutes(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := task.OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	reader := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	admin := tokenFor(t, "ops", auth.ScopeTasksRead, auth.ScopeTasksAdmin)

	// A queue of a program's own type, registered after the built-ins.
	if err := reg.PutType(t.Context(), task.TypeDef{Name: "thumbnail", Queue: "images"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Announce(t.Context(), task.WorkerInfo{ID: "w-1", Types: []string{"noop"}, Queues: []string{"default", "low"}}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Announce(t.Context(), task.WorkerInfo{ID: "w-2", Types: []string{"noop"}, Queues: []string{"low"}}); err != nil {
		t.Fatal(err)
	}
	// Two tasks wait on low, which no running worker has a consumer on:
	// their age shows, their depth is 0 (no consumer counts them).
	submitOK(t, base, reader, `{"task":"noop","queue":"low"}`, nil)
	submitOK(t, base, reader, `{"task":"noop","queue":"low"}`, nil)

	t.Run("list", func(t *testing.T) {
		var qs []queueJSON
		testutil.Eventually(t, 10*time.Second, func() error {
			qs = listQueues(t, base, reader)
			var names []string
			for _, q := range qs {
				names = append(names, q.Name)
			}
			if want := []string{"critical", "default", "low", "images"}; !slices.Equal(names, want) {
				return fmt.Errorf("GET /queues names = %v, want %v", names, want)
			}
			low := queueNamed(t, qs, "low")
			if low.OldestAgeSeconds <= 0 {
				return fmt.Errorf("low's oldest age = %v, want > 0 (two tasks wait)", low.OldestAgeSeconds)
			}
			// alice's own tasks, from the task index (which lags a write).
			if low.Totals["queued"] != 2 || low.Totals["all"] != 2 || low.Dead == nil || *low.Dead != 0 {
				return fmt.Errorf("low's totals = %v, dead %v; want alice's 2 queued, 0 dead", low.Totals, low.Dead)
			}
			return nil
		})
		workers := map[string]int{}
		for _, q := range qs {
			workers[q.Name] = q.Workers
			if q.Paused || q.PausedAt != nil || q.Depth != 0 || q.InFlight != 0 || len(q.Totals) != 7 {
				t.Errorf("queue %+v: want not paused, depth 0 (no consumer), totals of the 6 states and all", q)
			}
			if q.Name != "low" && q.Totals["all"] != 0 {
				t.Errorf("queue %s totals = %v, want none (alice's tasks are on low)", q.Name, q.Totals)
			}
		}
		if want := map[string]int{"critical": 0, "default": 1, "low": 2, "images": 0}; fmt.Sprint(workers) != fmt.Sprint(want) {
			t.Errorf("workers per queue = %v, want %v", workers, want)
		}
		// Another user's totals are their own: none.
		if bob := queueNamed(t, listQueues(t, base, tokenFor(t, "bob", auth.ScopeTasksRead)), "low"); bob.Totals["all"] != 0 {
			t.Errorf("bob's low totals = %v, want none of alice's", bob.Totals)
		}
		if r := get(t, base+"/queues", ""); r.status != http.StatusUnauthorized || errorCode(t, r) != "unauthorized" {
			t.Errorf("GET /queues without a token = %d %s, want 401", r.status, r.body)
		}
		if r := get(t, base+"/queues", tokenFor(t, "bob", auth.ScopeTasksWrite)); r.status != http.StatusForbidden || errorCode(t, r) != "forbidden" {
			t.Errorf("GET /queues without tasks:read = %d %s, want 403", r.status, r.body)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		r := pauseQueue(t, base, admin, "low", "pause")
		var q queueJSON
		if r.status != http.StatusOK || json.Unmarshal(r.body, &q) != nil || q.Name != "low" || !q.Paused || q.PausedAt == nil || q.Workers != 2 {
			t.Fatalf("POST /queues/low/pause = %d %s, want 200 with low paused, paused_at, 2 workers", r.status, r.body)
		}
		if def, err := reg.Queue(t.Context(), "low"); err != nil || !def.Paused {
			t.Errorf("registry's low after the pause = %+v, %v; want paused", def, err)
		}
		// Seen at once: the pause drops the cached reads.
		if low := queueNamed(t, listQueues(t, base, reader), "low"); !low.Paused || !low.PausedAt.Equal(*q.PausedAt) {
			t.Errorf("GET /queues right after the pause lists low as %+v, want paused at %v", low, q.PausedAt)
		}
		// Pausing again changes nothing.
		var again queueJSON
		if r := pauseQueue(t, base, admin, "low", "pause"); r.status != http.StatusOK || json.Unmarshal(r.body, &again) != nil || !again.PausedAt.Equal(*q.PausedAt) {
			t.Errorf("POST /queues/low/pause again = %d %s, want 200, paused at %v still", r.status, r.body, q.PausedAt)
		}
		r = pauseQueue(t, base, admin, "low", "resume")
		q = queueJSON{}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &q) != nil || q.Paused || q.PausedAt != nil {
			t.Errorf("POST /queues/low/resume = %d %s, want 200 with low not paused", r.status, r.body)
		}
		if low := queueNamed(t, listQueues(t, base, reader), "low"); low.Paused {
			t.Errorf("GET /queues right after the resume lists low as %+v, want not paused", low)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, verb := range []string{"pause", "resume"} {
			r := pauseQueue(t, base, reader, "low", verb)
			wantError(t, "POST /queues/low/"+verb+" without tasks:admin", r, http.StatusForbidden, "forbidden", "tasks:admin")
			wantError(t, "POST /queues/nope/"+verb, pauseQueue(t, base, admin, "nope", verb), http.StatusNotFound, "not_found", "no queue nope")
			wantError(t, "POST /queues/a.b/"+verb, pauseQueue(t, base, admin, "a.b", verb), http.StatusBadRequest, "invalid", "queue name must be")
			wantError(t, "POST a name of 65 letters", pauseQueue(t, base, admin, strings.Repeat("q", 65), verb), http.StatusBadRequest, "invalid", "queue name must be")
			if r := pauseQueue(t, base, "", "low", verb); r.status != http.StatusUnauthorized {
				t.Errorf("POST /queues/low/%s without a token = %d, want 401", verb, r.status)
			}
		}
		if r := get(t, base+"/queues/low/pause", admin); r.status != http.StatusMethodNotAllowed {
			t.Errorf("GET /queues/low/pause = %d %s, want 405", r.status, r.body)
		}
		if def, err := reg.Queue(t.Context(), "low"); err != nil || def.Paused {
			t.Errorf("registry's low after the refusals = %+v, %v; want not paused", def, err)
		}
	})
}

// TestPausedQueueWaitsThroughGateway: with a worker running, a queue
// paused through the API takes no task: one submitted waits, queued and
// counted in the queue's depth, and runs once the queue is resumed.
func TestPausedQueueWaitsThroughGateway(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := worker.DefaultConfig()
	cfg.ID, cfg.Listener, cfg.AckWait = "w-pause", ln, 2*time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	wnc := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return worker.Run(ctx, cfg, wnc, testutil.QuietLog()) })
	metrics := "http://" + ln.Addr().String() + "/metrics"
	admin := tokenFor(t, "ops", auth.ScopeTasksRead, auth.ScopeTasksWrite, auth.ScopeTasksAdmin)

	// The worker serves default: a task runs.
	id, _ := submitOK(t, base, admin, `{"task":"noop"}`, nil)
	waitTaskState(t, base, admin, id, task.Succeeded)
	testutil.Eventually(t, 10*time.Second, func() error {
		if w := queueNamed(t, listQueues(t, base, admin), "default").Workers; w != 1 {
			return fmt.Errorf("default has %d workers, want 1", w)
		}
		return nil
	})

	if r := pauseQueue(t, base, admin, "default", "pause"); r.status != http.StatusOK {
		t.Fatalf("POST /queues/default/pause = %d %s", r.status, r.body)
	}
	waitMetric(t, metrics, `scalelab_worker_queue_paused{queue="default"} 1`)
	id, _ = submitOK(t, base, admin, `{"task":"noop"}`, nil)
	testutil.Eventually(t, 5*time.Second, func() error {
		q := queueNamed(t, listQueues(t, base, admin), "default")
		if !q.Paused || q.Depth != 1 || q.InFlight != 0 || q.OldestAgeSeconds <= 0 {
			return fmt.Errorf("default = %+v, want paused, depth 1, none in flight, an oldest age", q)
		}
		return nil
	})
	// The one bounded negative wait: the task stays queued.
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		if rec := getRecord(t, base, admin, id); rec.State != task.Queued {
			t.Fatalf("task on the paused queue is %s, want queued", rec.State)
		}
		select {
		case <-t.Context().Done():
			t.FailNow()
		case <-time.After(100 * time.Millisecond): // poll interval
		}
	}
	if r := pauseQueue(t, base, admin, "default", "resume"); r.status != http.StatusOK {
		t.Fatalf("POST /queues/default/resume = %d %s", r.status, r.body)
	}
	waitTaskState(t, base, admin, id, task.Succeeded)
	testutil.Eventually(t, 5*time.Second, func() error {
		if q := queueNamed(t, listQueues(t, base, admin), "default"); q.Paused || q.Depth != 0 || q.OldestAgeSeconds != 0 {
			return fmt.Errorf("default = %+v, want not paused, empty", q)
		}
		return nil
	})
}

// waitTaskState polls task id until it is in state want.
func waitTaskState(t *testing.T, base, tok, id string, want task.State) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if rec := getRecord(t, base, tok, id); rec.State != want {
			return fmt.Errorf("task %s is %s, want %s", id, rec.State, want)
		}
		return nil
	})
}

// waitMetric polls a /metrics URL until it has the line series.
func waitMetric(t *testing.T, url, series string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		res, err := client.Get(url)
		if err != nil {
			return err
		}
		defer func() { _ = res.Body.Close() }()
		b, _ := io.ReadAll(res.Body)
		for line := range strings.Lines(string(b)) {
			if strings.TrimSpace(line) == series {
				return nil
			}
		}
		return fmt.Errorf("no %q in %s", series, url)
	})
}

// stubTotals is a task index with fixed counts: all owners', and alice's.
type stubTotals struct{}

func (stubTotals) Totals(owner, typ, queue string) map[task.State]int {
	if typ != "" || queue != "low" {
		return map[task.State]int{}
	}
	if owner == "alice" {
		return map[task.State]int{task.Queued: 2, task.Dead: 1}
	}
	if owner == "" {
		return map[task.State]int{task.Queued: 5, task.Succeeded: 4, task.Dead: 3}
	}
	return nil
}

// TestQueuesTotals: each queue carries the caller's totals per state
// (every owner's with tasks:admin) and its dead count, from the task
// index (TaskTotals; here one of fixed counts, to see every state).
func TestQueuesTotals(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig())
	if err != nil {
		t.Fatal(err)
	}
	catalog, err := task.OpenCatalog(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(catalog.Stop)
	cfg := DefaultConfig()
	cfg.ID, cfg.JWT = "gw-totals", testKeys
	reg := ops.NewRegistry()
	// The routes of a gateway with a task index; this test reads only
	// GET /queues, which needs no cache.
	srv := httptest.NewServer(newServer(deps{
		cfg: cfg, nc: nc, verifier: auth.NewVerifier(cfg.JWT), catalog: catalog, totals: stubTotals{},
		db: dbsvc.NewClient(nc), tasks: store, queue: streamQueue{js: js}, admin: taskAdmin{js: js, store: store},
		metrics: newMetrics(reg), ops: ops.Handler(reg, ops.NATSReady(nc)), log: testutil.QuietLog(),
	}))
	t.Cleanup(srv.Close)

	mine := queueNamed(t, listQueues(t, srv.URL, tokenFor(t, "alice", auth.ScopeTasksRead)), "low")
	want := map[string]int{"queued": 2, "running": 0, "succeeded": 0, "failed": 0, "dead": 1, "cancelled": 0, "all": 3}
	if fmt.Sprint(mine.Totals) != fmt.Sprint(want) || mine.Dead == nil || *mine.Dead != 1 {
		t.Errorf("alice's low: totals %v, dead %v; want %v, 1", mine.Totals, mine.Dead, want)
	}
	all := queueNamed(t, listQueues(t, srv.URL, tokenFor(t, "ops", auth.ScopeTasksRead, auth.ScopeTasksAdmin)), "low")
	want = map[string]int{"queued": 5, "running": 0, "succeeded": 4, "failed": 0, "dead": 3, "cancelled": 0, "all": 12}
	if fmt.Sprint(all.Totals) != fmt.Sprint(want) || all.Dead == nil || *all.Dead != 3 {
		t.Errorf("admin's low: totals %v, dead %v; want %v, 3", all.Totals, all.Dead, want)
	}
	var body struct {
		Queues []json.RawMessage `json:"queues"`
	}
	r := get(t, srv.URL+"/queues", tokenFor(t, "bob", auth.ScopeTasksRead))
	if json.Unmarshal(r.body, &body) != nil || len(body.Queues) != 3 || !strings.Contains(string(body.Queues[0]), `"totals":{`) {
		t.Errorf("bob's GET /queues = %d %s, want 3 queues, each with totals (zeros)", r.status, r.body)
	}
}
