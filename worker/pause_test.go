package worker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// withMetrics gives cfg an ops listener and returns its /metrics URL.
func withMetrics(t *testing.T, cfg *worker.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	return "http://" + ln.Addr().String() + "/metrics"
}

// metricsClient scrapes the workers' /metrics.
var metricsClient = &http.Client{Timeout: 2 * time.Second}

// scrape returns the body of a /metrics answer.
func scrape(t *testing.T, url string) (string, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	res, err := metricsClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

// waitSeries waits until url's metrics hold the line series (name, labels
// and value, as Prometheus writes it).
func waitSeries(t *testing.T, url, series string, within time.Duration) {
	t.Helper()
	testutil.Eventually(t, within, func() error {
		body, err := scrape(t, url)
		if err != nil {
			return err
		}
		for line := range strings.Lines(body) {
			if strings.TrimSpace(line) == series {
				return nil
			}
		}
		return fmt.Errorf("no line %q in /metrics", series)
	})
}

// inMsgs is how many messages the server has received from nc's
// connection: what a worker asks of NATS.
func inMsgs(t *testing.T, w *testWorker, ns *server.Server) int64 {
	t.Helper()
	cid, err := w.nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	cz, err := ns.Connz(&server.ConnzOptions{CID: cid})
	if err != nil || len(cz.Conns) != 1 {
		t.Fatalf("Connz(cid %d) = %+v, %v", cid, cz, err)
	}
	return cz.Conns[0].InMsgs
}

// staysQueued checks, for a short bounded time (the one negative wait of
// these tests), that every task of ids stays queued, and returns how many
// messages the worker w sent to the server meanwhile.
func staysQueued(t *testing.T, e *env, w *testWorker, ids []string) int64 {
	t.Helper()
	before := inMsgs(t, w, e.ns)
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, id := range ids {
			if rec := e.record(t, id); rec.State != task.Queued {
				t.Fatalf("task %s of a paused queue is %s, want it to stay queued", id, rec.State)
			}
		}
		select {
		case <-t.Context().Done():
			t.FailNow()
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
	return inMsgs(t, w, e.ns) - before
}

// maxIdleMsgs bounds what a worker whose queues are all paused may send
// in 1.5 s: its queue sample (every 3 s) and announcement (every 5 s),
// not pulls. A slot spinning on a paused queue would send thousands.
const maxIdleMsgs = 40

// TestPauseQueue: a worker serving one queue stops pulling from it when it
// is paused in the registry (a task already running finishes), the tasks
// submitted meanwhile stay queued, the worker sends (almost) nothing while
// it waits, and they all run once the queue is resumed.
func TestPauseQueue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg, err := task.OpenRegistry(t.Context(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	release, started := make(chan struct{}), make(chan string, 1)
	var c calls
	cfg := testConfig("pause-one")
	cfg.Concurrency = 2
	cfg.Queues = []worker.Queue{{Name: task.DefaultQueue, Weight: 1}}
	cfg.Handlers = map[string]worker.Handler{"hold": blockUntil(release, started, &c)}
	metrics := withMetrics(t, &cfg)
	w := startWorker(t, e.ns, cfg)
	waitSeries(t, metrics, `scalelab_worker_queue_paused{queue="default"} 0`, 10*time.Second)

	running := e.submit(t, "hold", `{"task":"hold"}`)
	receive(t, started, 10*time.Second, "the held task")
	if _, err := reg.SetPaused(t.Context(), task.DefaultQueue, true); err != nil {
		t.Fatalf("SetPaused(default) = %v", err)
	}
	// Seen within about a second.
	waitSeries(t, metrics, `scalelab_worker_queue_paused{queue="default"} 1`, 1500*time.Millisecond)
	waiting := []string{e.submit(t, "noop", `{"task":"noop"}`), e.submit(t, "noop", `{"task":"noop"}`), e.submit(t, "hold", `{"task":"hold"}`)}
	close(release) // the task running as the queue was paused finishes
	e.waitState(t, running, task.Succeeded, 10*time.Second)
	sent := staysQueued(t, e, w, waiting)
	t.Logf("the worker of the paused queue sent %d messages in 1.5 s", sent)
	if sent > maxIdleMsgs {
		t.Errorf("the worker of a paused queue sent %d messages in 1.5 s, want at most %d (no pulling, no spinning)", sent, maxIdleMsgs)
	}
	if info := e.consumerInfo(t); info.NumPending != uint64(len(waiting)) || info.NumAckPending != 0 {
		t.Errorf("paused queue's consumer: %d pending, %d ack pending; want %d, 0", info.NumPending, info.NumAckPending, len(waiting))
	}

	if _, err := reg.SetPaused(t.Context(), task.DefaultQueue, false); err != nil {
		t.Fatalf("SetPaused(default, false) = %v", err)
	}
	for _, id := range waiting {
		e.waitState(t, id, task.Succeeded, 10*time.Second)
	}
	waitSeries(t, metrics, `scalelab_worker_queue_paused{queue="default"} 0`, 5*time.Second)
}

// TestPauseOneOfSeveralQueues: a worker serving critical, default and low
// keeps running default's tasks while low is paused; with all three paused
// it sends (almost) nothing; low's task runs once low is resumed. A queue
// paused before the worker starts is never pulled.
func TestPauseOneOfSeveralQueues(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	reg, err := task.OpenRegistry(t.Context(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SetPaused(t.Context(), "low", true); err != nil {
		t.Fatal(err)
	}
	low := e.submitTo(t, "low", "noop")
	cfg := testConfig("pause-several")
	cfg.Concurrency = 4
	metrics := withMetrics(t, &cfg)
	w := startWorker(t, e.ns, cfg)
	e.waitState(t, e.submitTo(t, task.DefaultQueue, "noop"), task.Succeeded, 10*time.Second)
	e.waitState(t, e.submitTo(t, "critical", "noop"), task.Succeeded, 10*time.Second)
	if rec := e.record(t, low); rec.State != task.Queued {
		t.Fatalf("task on low, paused before the worker started, is %s; want queued", rec.State)
	}
	for _, q := range []string{"critical", task.DefaultQueue} {
		if _, err := reg.SetPaused(t.Context(), q, true); err != nil {
			t.Fatal(err)
		}
	}
	waitSeries(t, metrics, `scalelab_worker_queue_paused{queue="critical"} 1`, 1500*time.Millisecond)
	waitSeries(t, metrics, `scalelab_worker_queue_paused{queue="default"} 1`, 1500*time.Millisecond)
	def := e.submitTo(t, task.DefaultQueue, "noop")
	if sent := staysQueued(t, e, w, []string{low, def}); sent > maxIdleMsgs {
		t.Errorf("a worker whose queues are all paused sent %d messages in 1.5 s, want at most %d (no spinning)", sent, maxIdleMsgs)
	}
	if _, err := reg.SetPaused(t.Context(), "low", false); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, low, task.Succeeded, 10*time.Second)
	if rec := e.record(t, def); rec.State != task.Queued {
		t.Errorf("task on default, still paused, is %s; want queued", rec.State)
	}
	if _, err := reg.SetPaused(t.Context(), task.DefaultQueue, false); err != nil {
		t.Fatal(err)
	}
	e.waitState(t, def, task.Succeeded, 10*time.Second)
}

// TestWorkerMetricsLabels: task outcomes are counted by type, queue and
// outcome; dead letters by type; paused per served queue.
func TestWorkerMetricsLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	cfg := testConfig("metrics")
	cfg.Queues = []worker.Queue{{Name: task.DefaultQueue, Weight: 1}, {Name: "low", Weight: 1}}
	cfg.AttemptsByType = map[string]int{"boom": 1}
	cfg.Handlers = map[string]worker.Handler{"boom": func(context.Context, *worker.Task) (any, error) {
		return nil, errors.New("boom")
	}}
	metrics := withMetrics(t, &cfg)
	startWorker(t, e.ns, cfg)
	e.waitState(t, e.submitTo(t, "low", "noop"), task.Succeeded, 10*time.Second)
	e.waitState(t, e.submitTo(t, task.DefaultQueue, "boom"), task.Dead, 10*time.Second)
	for _, series := range []string{
		`scalelab_worker_tasks_total{outcome="succeeded",queue="low",type="noop"} 1`,
		`scalelab_worker_tasks_total{outcome="dead",queue="default",type="boom"} 1`,
		`scalelab_worker_queue_paused{queue="default"} 0`,
		`scalelab_worker_queue_paused{queue="low"} 0`,
		// Sampled every 3 s.
		`scalelab_worker_dead_tasks{type="boom"} 1`,
	} {
		waitSeries(t, metrics, series, 10*time.Second)
	}
}

// cpuTime is the CPU time this process has used so far.
func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPausedWorkersIdle: workers whose queues are all paused, one serving
// a single queue and one serving two, neither pull nor spin: the process
// uses little CPU while their tasks wait. Not parallel, so the process's
// CPU time is theirs (parallel tests wait until it is done).
func TestPausedWorkersIdle(t *testing.T) {
	e := newEnv(t)
	reg, err := task.OpenRegistry(t.Context(), e.js)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range task.BuiltinQueues {
		if _, err := reg.SetPaused(t.Context(), q, true); err != nil {
			t.Fatal(err)
		}
	}
	one := testConfig("idle-one")
	one.Queues = []worker.Queue{{Name: task.DefaultQueue, Weight: 1}}
	oneMetrics := withMetrics(t, &one)
	two := testConfig("idle-two")
	two.Queues = []worker.Queue{{Name: "critical", Weight: 1}, {Name: "low", Weight: 1}}
	twoMetrics := withMetrics(t, &two)
	w1, w2 := startWorker(t, e.ns, one), startWorker(t, e.ns, two)
	waitSeries(t, oneMetrics, `scalelab_worker_queue_paused{queue="default"} 1`, 10*time.Second)
	waitSeries(t, twoMetrics, `scalelab_worker_queue_paused{queue="low"} 1`, 10*time.Second)
	ids := []string{e.submitTo(t, task.DefaultQueue, "noop"), e.submitTo(t, "critical", "noop"), e.submitTo(t, "low", "noop")}
	before, sent2 := cpuTime(t), inMsgs(t, w2, e.ns)
	sent1 := staysQueued(t, e, w1, ids)
	used := cpuTime(t) - before
	sent2 = inMsgs(t, w2, e.ns) - sent2
	t.Logf("paused for 1.5 s: the process used %v of CPU; the workers sent %d and %d messages", used, sent1, sent2)
	if used > 300*time.Millisecond || sent1 > maxIdleMsgs || sent2 > maxIdleMsgs {
		t.Errorf("paused for 1.5 s: the process used %v of CPU (want ≤ 300ms), the workers sent %d and %d messages (want ≤ %d): a slot spins",
			used, sent1, sent2, maxIdleMsgs)
	}
	for _, q := range task.BuiltinQueues {
		if _, err := reg.SetPaused(t.Context(), q, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		e.waitState(t, id, task.Succeeded, 10*time.Second)
	}
}
