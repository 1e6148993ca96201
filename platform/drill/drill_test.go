package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/platform/bench"
	"github.com/scalelab/scalelab/platform/compose"
)

// The drill's sizes: small enough for a 2-core machine, big enough that
// the faults land while tasks are queued and running.
const (
	gateways = 2 // at start; the balancing drill scales to gateways+1
	workers  = 2
	tasks    = 300 // submitted during the NATS and worker drill
	// taskBody takes long enough that the stopped worker has tasks
	// running when its SIGTERM comes.
	taskBody   = `{"task":"sleep","duration_ms":200}`
	submitRate = 25  // tasks per second: the drill's submissions last ~12 s
	loadRate   = 400 // GETs per second during the gateway drill
)

// TestDrill brings the compose stack up, runs the drills in order (each
// needs the stack the one before left healthy), then takes it down.
func TestDrill(t *testing.T) {
	if testing.Short() {
		t.Skip("drill: skipped with -short: it builds the image and runs the compose stack for minutes")
	}
	st := startStack(t)
	t.Run("replicas", st.checkReplicas)
	t.Run("stranger_route_refused", st.checkStrangerRoute)
	t.Run("balancing", st.drillBalancing)
	t.Run("tasks_survive_nats_node_and_worker_stop", st.drillTasks)
	t.Run("gateway_stop_under_load", st.drillGateway)
	t.Run("chaos", st.drillChaos)
	st.down(t)
}

// checkReplicas checks that every stream and bucket keeps a copy on each of
// the three nodes.
func (st *stack) checkReplicas(t *testing.T) {
	var js compose.JSZ
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		js, err = st.JSZ(t.Context())
		if err != nil {
			return err
		}
		for _, name := range []string{task.Stream, task.DelayedStream, task.DLQStream, "KV_" + task.Bucket, "KV_cache"} {
			if _, ok := js.Stream(name); !ok {
				return fmt.Errorf("stream %s not found yet", name)
			}
		}
		return nil
	})
	for _, s := range js.Streams() {
		if s.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", s.Name, s.Config.Replicas)
		}
	}
	if js.Meta.Size != 3 {
		t.Errorf("JetStream cluster size = %d, want 3", js.Meta.Size)
	}
}

// checkStrangerRoute attacks the cluster's route port as a container on
// the compose network would (issue #24): a nats-server of its own, in the
// same image, dials nats1:6222 without the route password. nats1 refuses
// it, and its /routez lists only the two other nodes.
func (st *stack) checkStrangerRoute(t *testing.T) {
	name := st.Project + "-stranger"
	if err := st.docker(t, time.Minute, "run", "-d", "--rm", "--name", name, "--network", st.Project+"_default",
		"--entrypoint", "/nats-server", "scalelab:dev",
		"--name", "stranger", "-p", "4222", "--cluster_name", "scalelab", "--cluster", "nats://0.0.0.0:6222",
		"--routes", "nats-route://nats1:6222"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = st.Cmd(time.Minute, "docker", "rm", "-f", name) })
	testutil.Eventually(t, time.Minute, func() error {
		out, err := st.Cmd(time.Minute, "docker", "logs", name)
		if err != nil {
			return fmt.Errorf("docker logs %s: %w: %s", name, err, out)
		}
		if !strings.Contains(strings.ToLower(out), "authorization violation") {
			return fmt.Errorf("the stranger has not been refused yet:\n%s", out)
		}
		return nil
	})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, st.Monitor+"/routez", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, body, err := st.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /routez = %v %s", err, body)
	}
	var routez struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(body, &routez); err != nil {
		t.Fatalf("decode /routez: %v", err)
	}
	for _, r := range routez.Routes {
		if r.RemoteName != "nats2" && r.RemoteName != "nats3" {
			t.Errorf("nats1 has a route to %q, want only nats2 and nats3", r.RemoteName)
		}
	}
	if len(routez.Routes) == 0 {
		t.Errorf("nats1 lists no route, want nats2 and nats3")
	}
}

// drillBalancing checks that requests through the balancer reach every
// gateway replica, then scales the gateways out by one with compose alone
// (no config edit) and waits for the new one to get traffic.
func (st *stack) drillBalancing(t *testing.T) {
	want := map[string]bool{}
	for _, c := range st.containers(t, "gateway") {
		want[c.ServedBy()] = true
	}
	if len(want) != gateways {
		t.Fatalf("%d gateway containers running, want %d", len(want), gateways)
	}
	st.waitServedBy(t, want, 30*time.Second)

	start := time.Now()
	if err := st.Scale(2*time.Minute, gateways+1, workers); err != nil {
		t.Fatal(err)
	}
	gws := st.containers(t, "gateway")
	if len(gws) != gateways+1 {
		t.Fatalf("%d gateway containers after scaling out, want %d", len(gws), gateways+1)
	}
	for _, c := range gws {
		want[c.ServedBy()] = true
	}
	st.waitServedBy(t, want, 90*time.Second)
	t.Logf("scale-out: gateway %d served traffic %v after `up --scale gateway=%d`",
		gateways+1, time.Since(start).Round(time.Millisecond), gateways+1)
}

// waitServedBy sends GET /data until every gateway in want has answered
// one, within limit.
func (st *stack) waitServedBy(t *testing.T, want map[string]bool, limit time.Duration) {
	t.Helper()
	seen := map[string]int{}
	testutil.Eventually(t, limit, func() error {
		res, body, err := st.Get(t.Context(), "/data")
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /data = %d %s", res.StatusCode, body)
		}
		seen[res.Header.Get("X-Served-By")]++
		for id := range want {
			if seen[id] == 0 {
				return fmt.Errorf("gateway %s has served nothing yet; served: %v", id, seen)
			}
		}
		return nil
	})
	t.Logf("X-Served-By over %d requests: %v", sum(seen), seen)
}

// drillTasks submits tasks at a steady rate, stops the NATS node leading
// the TASKS stream and one worker a quarter of the way in, starts them
// again a quarter later, and checks that every task ends succeeded. Clients retry
// a refused submission with the same Idempotency-Key, as a real client
// would; what is checked is that no accepted task is lost or stuck.
func (st *stack) drillTasks(t *testing.T) {
	natsVictim := st.tasksLeaderOffNats1(t)
	nodeC := st.containers(t, natsVictim)
	workerC := st.containers(t, "worker")
	if len(nodeC) != 1 || len(workerC) < 1 {
		t.Fatalf("%d %s and %d worker containers, want 1 and at least 1", len(nodeC), natsVictim, len(workerC))
	}
	node, wk := nodeC[0], workerC[0]

	var (
		mu         sync.Mutex
		ids        = make([]string, tasks)
		lastOK     time.Time
		longestGap time.Duration // longest time without a 202, the write path's outage
		accepted   atomic.Int64
		refused    atomic.Int64 // submissions that got an error and were retried
		firstFail  atomic.Value
	)
	next := make(chan int)
	var wg sync.WaitGroup
	submitStart := time.Now()
	lastOK = submitStart
	for range 8 {
		wg.Go(func() {
			for i := range next {
				key := fmt.Sprintf("%s-%d", st.Project, i)
				deadline := time.Now().Add(2 * time.Minute)
				for {
					id, err := st.Submit(t.Context(), taskBody, key)
					if err == nil {
						now := time.Now()
						mu.Lock()
						ids[i] = id
						longestGap = max(longestGap, now.Sub(lastOK))
						lastOK = now
						mu.Unlock()
						accepted.Add(1)
						break
					}
					refused.Add(1)
					if time.Now().After(deadline) || t.Context().Err() != nil {
						firstFail.CompareAndSwap(nil, fmt.Sprintf("task %d: %v", i, err))
						break
					}
					time.Sleep(100 * time.Millisecond) // back-off of a retrying client, not a wait for state
				}
			}
		})
	}
	go func() {
		defer close(next)
		tick := time.NewTicker(time.Second / submitRate)
		defer tick.Stop()
		for i := range tasks {
			select {
			case <-tick.C:
			case <-t.Context().Done():
				return
			}
			next <- i
		}
	}()
	t.Cleanup(wg.Wait) // if a check below fails, the submitters still end

	atLeast := func(n int64) {
		t.Helper()
		testutil.Eventually(t, 2*time.Minute, func() error {
			if got := accepted.Load(); got < n {
				return fmt.Errorf("%d tasks accepted, waiting for %d (first failure: %v)", got, n, firstFail.Load())
			}
			return nil
		})
	}

	atLeast(tasks / 4)
	// A schedule ticking every second (on the low queue, out of the way of
	// the drill's count) must keep ticking while a node is down: its
	// last_run, the time of its latest tick in SCHEDULES, moves on.
	schedID := st.createSchedule(t, `{"every":"1s","queue":"low","task":{"task":"noop"}}`)
	st.waitScheduleTicks(t, schedID, 2)
	stoppedAt := time.Now()
	stopped := parallel(
		func() error { return st.docker(t, 90*time.Second, "stop", "--time", "30", node.ID) },
		func() error { return st.docker(t, 90*time.Second, "stop", "--time", "30", wk.ID) },
	)
	if err := errors.Join(stopped...); err != nil {
		t.Fatalf("stop %s and a worker: %v", natsVictim, err)
	}
	t.Logf("stopped %s (the TASKS leader) and worker %s after %d tasks, in %v",
		natsVictim, wk.Hostname, tasks/4, time.Since(stoppedAt).Round(time.Millisecond))
	st.tasksLeaderMoved(t, natsVictim)
	t.Logf("TASKS had a new leader %v after the stop began", time.Since(stoppedAt).Round(time.Millisecond))
	st.waitScheduleTicks(t, schedID, 3)
	t.Logf("schedule %s ticked 3 times with %s down, %v after the stop began", schedID, natsVictim, time.Since(stoppedAt).Round(time.Millisecond))

	// Keep them down while another quarter of the tasks comes in (the
	// stops may take seconds, with submissions going on meanwhile).
	atLeast(min(accepted.Load()+tasks/4, tasks*9/10))
	restartedAt := time.Now()
	if err := errors.Join(parallel(
		func() error { return st.docker(t, time.Minute, "start", node.ID) },
		func() error { return st.docker(t, time.Minute, "start", wk.ID) },
	)...); err != nil {
		t.Fatalf("start %s and the worker again: %v", natsVictim, err)
	}
	// A node is back when its full /healthz passes: JetStream on, and
	// its streams and consumers caught up with their leaders.
	var natsBack, workerBack time.Duration
	testutil.Eventually(t, 2*time.Minute, func() error {
		if natsBack == 0 {
			if err := st.docker(t, 10*time.Second, "exec", node.ID, "/scalelab", "probe", "http://127.0.0.1:8222/healthz"); err != nil {
				return fmt.Errorf("%s not caught up yet: %w", natsVictim, err)
			}
			natsBack = time.Since(restartedAt)
		}
		if workerBack == 0 {
			if h := st.health(t, wk.ID); h != "healthy" {
				return fmt.Errorf("restarted worker is %s", h)
			}
			workerBack = time.Since(restartedAt)
		}
		return nil
	})
	t.Logf("recovery: %s caught up %v after its restart, the worker healthy after %v",
		natsVictim, natsBack.Round(time.Millisecond), workerBack.Round(time.Millisecond))
	st.waitScheduleTicks(t, schedID, 2)
	st.deleteSchedule(t, schedID)

	wg.Wait()
	if f := firstFail.Load(); f != nil {
		t.Fatalf("%d of %d tasks never accepted; first: %v", tasks-int(accepted.Load()), tasks, f)
	}
	submitted := time.Since(submitStart)

	// Every accepted task must end succeeded: poll the ones not yet done.
	pending := map[string]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	var finishes []time.Time
	attempts := map[int]int{}
	var bad []string
	finished := func() error {
		for id := range pending {
			rec, err := st.Task(t.Context(), id)
			if err != nil {
				return err
			}
			switch {
			case rec.State == task.Succeeded:
			case rec.State.Terminal():
				bad = append(bad, fmt.Sprintf("%s: %s (%s)", id, rec.State, rec.Error))
			default:
				continue
			}
			delete(pending, id)
			attempts[rec.Attempts]++
			if rec.FinishedAt != nil {
				finishes = append(finishes, *rec.FinishedAt)
			}
		}
		if len(pending) > 0 {
			return fmt.Errorf("%d of %d tasks not finished", len(pending), tasks)
		}
		return nil
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		err := finished()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			st.explainTasks(t, pending)
			t.Fatalf("not met after 2m: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	if len(bad) > 0 {
		t.Errorf("%d tasks did not succeed: %q", len(bad), bad)
	}
	st.checkQueueEmpty(t)

	// The containers' clocks are the host's: finish times compare with
	// the test's.
	elapsed := slices.MaxFunc(finishes, time.Time.Compare).Sub(submitStart)
	outage := restartedAt.Sub(stoppedAt)
	inOutage := 0
	for _, f := range finishes {
		if f.After(stoppedAt) && f.Before(restartedAt) {
			inOutage++
		}
	}
	t.Logf("tasks: %d accepted in %v at %d/s offered (%d submissions refused and retried; longest time without a 202: %v); "+
		"all succeeded %v after the first submit: %.1f tasks/s over the drill, %.1f tasks/s while %s and a worker were down (%v); "+
		"attempts per task: %v",
		tasks, submitted.Round(time.Millisecond), submitRate, refused.Load(), longestGap.Round(time.Millisecond),
		elapsed.Round(time.Millisecond), float64(tasks)/elapsed.Seconds(), float64(inOutage)/outage.Seconds(), natsVictim,
		outage.Round(time.Millisecond), attempts)
}

// explainTasks logs, for a few of the tasks that never finished, their
// record and every log line of the stack that names them.
func (st *stack) explainTasks(t *testing.T, pending map[string]bool) {
	t.Helper()
	logs, _ := st.Compose(time.Minute, "logs", "--no-color")
	n := 0
	for id := range pending {
		if n++; n > 3 {
			break
		}
		rec, err := st.Task(context.Background(), id)
		t.Logf("task %s never finished: record %+v (read error: %v)", id, rec, err)
		for line := range strings.Lines(logs) {
			if strings.Contains(line, id) {
				t.Logf("  %s", strings.TrimSpace(line))
			}
		}
	}
}

// tasksLeaderOffNats1 returns the NATS node that leads the TASKS stream,
// first moving the leadership off nats1 (with the nats CLI of the tools
// service) if needed: nats1 carries the monitoring port the drill watches
// the cluster through, so it is the one node the drill does not stop.
func (st *stack) tasksLeaderOffNats1(t *testing.T) string {
	t.Helper()
	leader := st.tasksLeader(t)
	if leader == "nats1" {
		start := time.Now()
		if out, err := st.Compose(time.Minute, "run", "--rm", "nats",
			"stream", "cluster", "step-down", task.Stream, "--preferred", "nats2"); err != nil {
			t.Fatalf("nats stream cluster step-down: %v\n%s", err, out)
		}
		st.tasksLeaderMoved(t, "nats1")
		leader = st.tasksLeader(t)
		t.Logf("TASKS leader moved from nats1 to %s with `nats stream cluster step-down` in %v",
			leader, time.Since(start).Round(time.Millisecond))
	}
	if leader != "nats2" && leader != "nats3" {
		t.Fatalf("TASKS leader = %q, want nats2 or nats3", leader)
	}
	return leader
}

// tasksLeader returns the name of the node leading TASKS.
func (st *stack) tasksLeader(t *testing.T) string {
	t.Helper()
	var leader string
	testutil.Eventually(t, 30*time.Second, func() error {
		js, err := st.JSZ(t.Context())
		if err != nil {
			return err
		}
		s, ok := js.Stream(task.Stream)
		if !ok || s.Cluster.Leader == "" {
			return errors.New("TASKS has no leader")
		}
		leader = s.Cluster.Leader
		return nil
	})
	return leader
}

// tasksLeaderMoved waits until TASKS is led by a node other than old.
func (st *stack) tasksLeaderMoved(t *testing.T, old string) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() error {
		js, err := st.JSZ(t.Context())
		if err != nil {
			return err
		}
		if s, ok := js.Stream(task.Stream); !ok || s.Cluster.Leader == "" || s.Cluster.Leader == old {
			return fmt.Errorf("TASKS still led by %q", s.Cluster.Leader)
		}
		return nil
	})
}

// checkQueueEmpty asks the cluster, with the nats CLI of the tools
// service, that nothing is left: no message waiting for or held by a
// worker, and no dead letter.
func (st *stack) checkQueueEmpty(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() error {
		out, err := st.Compose(time.Minute, "run", "--rm", "-T", "nats", "consumer", "info", task.Stream, task.QueueConsumer(task.DefaultQueue), "--json")
		if err != nil {
			return fmt.Errorf("nats consumer info: %w: %s", err, out)
		}
		var c struct {
			NumPending    int `json:"num_pending"`
			NumAckPending int `json:"num_ack_pending"`
		}
		if err := json.Unmarshal(compose.JSONPart(out), &c); err != nil {
			return fmt.Errorf("decode consumer info %q: %w", out, err)
		}
		if c.NumPending != 0 || c.NumAckPending != 0 {
			return fmt.Errorf("consumer workers-default: %d pending, %d unacked, want 0 and 0", c.NumPending, c.NumAckPending)
		}
		return nil
	})
	out, err := st.Compose(time.Minute, "run", "--rm", "-T", "nats", "stream", "info", task.DLQStream, "--json")
	if err != nil {
		t.Fatalf("nats stream info TASKS_DLQ: %v\n%s", err, out)
	}
	var dlq struct {
		State struct {
			Msgs int `json:"messages"`
		} `json:"state"`
	}
	if err := json.Unmarshal(compose.JSONPart(out), &dlq); err != nil {
		t.Fatalf("decode stream info %q: %v", out, err)
	}
	if dlq.State.Msgs != 0 {
		t.Errorf("TASKS_DLQ holds %d dead tasks, want 0", dlq.State.Msgs)
	}
}

// drillGateway stops a gateway container while clients send GETs through
// the balancer, then starts it again. Requests that start after the
// balancer has taken the gateway out (ejected or failing its checks) must
// all succeed; those before may only if the balancer's retries caught
// them, and are counted.
func (st *stack) drillGateway(t *testing.T) {
	gws := st.containers(t, "gateway")
	if len(gws) < 2 {
		t.Fatalf("%d gateways running, want at least 2", len(gws))
	}
	victim := gws[0]
	victimURL := victim.URL()
	st.waitBackendState(t, victimURL, "healthy")

	type failure struct {
		at  time.Time
		err string
	}
	var (
		sent, served atomic.Int64 // requests sent; served by the victim since its restart
		restartedAt  atomic.Pointer[time.Time]
		ejectedAt    atomic.Pointer[time.Time]
		mu           sync.Mutex
		failures     []failure
	)
	stop := make(chan struct{})
	// One pace for all clients, well under the gateways' default rate
	// limits (1000/s per IP and per subject), so that every failure
	// counted below is the outage's, not a 429.
	pace := time.NewTicker(time.Second / loadRate)
	defer pace.Stop()
	var wg sync.WaitGroup
	for i := range 8 {
		path := []string{"/data", "/process"}[i%2]
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-pace.C:
				}
				at := time.Now()
				res, body, err := st.Get(t.Context(), path)
				sent.Add(1)
				if err == nil && res.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d: %s", res.StatusCode, bytes.TrimSpace(body))
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, failure{at: at, err: fmt.Sprintf("GET %s: %v", path, err)})
					mu.Unlock()
					continue
				}
				if r := restartedAt.Load(); r != nil && at.After(*r) && res.Header.Get("X-Served-By") == victim.ServedBy() {
					served.Add(1)
				}
			}
		})
	}
	// The ejection signal: the first time GET /-/balancer lists the
	// victim as anything but healthy, or no longer lists it.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond): // poll interval
			}
			if ejectedAt.Load() != nil {
				continue
			}
			if s, err := st.BalancerStatus(t.Context()); err == nil && s.State(victimURL) != "healthy" {
				now := time.Now()
				ejectedAt.Store(&now)
			}
		}
	})
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(halt)
	atLeast := func(n int64) {
		t.Helper()
		testutil.Eventually(t, time.Minute, func() error {
			if got := sent.Load(); got < n {
				return fmt.Errorf("%d requests sent, waiting for %d", got, n)
			}
			return nil
		})
	}

	atLeast(200)
	stoppedAt := time.Now()
	if err := st.docker(t, 90*time.Second, "stop", "--time", "30", victim.ID); err != nil {
		t.Fatalf("stop gateway %s: %v", victim.Hostname, err)
	}
	stopTook := time.Since(stoppedAt)
	testutil.Eventually(t, 30*time.Second, func() error {
		if ejectedAt.Load() == nil {
			return fmt.Errorf("balancer still lists %s as healthy", victimURL)
		}
		return nil
	})
	ejected := *ejectedAt.Load()
	atLeast(sent.Load() + 500)

	now := time.Now()
	restartedAt.Store(&now)
	if err := st.docker(t, time.Minute, "start", victim.ID); err != nil {
		t.Fatalf("start gateway %s again: %v", victim.Hostname, err)
	}
	// Its address may change with the restart; X-Served-By does not.
	testutil.Eventually(t, 90*time.Second, func() error {
		if got := served.Load(); got < 20 {
			return fmt.Errorf("restarted gateway served %d requests, want 20", got)
		}
		return nil
	})
	recovered := time.Since(now)
	halt()

	mu.Lock()
	defer mu.Unlock()
	var before, after []string
	for _, f := range failures {
		if f.at.Before(ejected) {
			before = append(before, f.err)
		} else {
			after = append(after, f.err)
		}
	}
	t.Logf("gateway %s: `docker stop` took %v; ejected %v after the stop began; back in rotation %v after its restart; "+
		"%d GETs, %d failed before the ejection, %d after", victim.Hostname, stopTook.Round(time.Millisecond),
		ejected.Sub(stoppedAt).Round(time.Millisecond), recovered.Round(time.Millisecond), sent.Load(), len(before), len(after))
	if len(before) > 0 {
		t.Logf("failures before the ejection (allowed): %q", first(before, 5))
	}
	if len(after) > 0 {
		t.Errorf("%d GETs started after the ejection failed, want 0; first: %q", len(after), first(after, 5))
	}
}

// waitBackendState waits until the balancer lists url in state.
func (st *stack) waitBackendState(t *testing.T, url, state string) {
	t.Helper()
	testutil.Eventually(t, time.Minute, func() error {
		s, err := st.BalancerStatus(t.Context())
		if err != nil {
			return err
		}
		if got := s.State(url); got != state {
			return fmt.Errorf("balancer lists %s as %q, want %q", url, got, state)
		}
		return nil
	})
}

// The short chaos schedule: every fault of `scalelab chaos`, at a load the
// 2-core CI machine carries next to the stack.
const (
	chaosDuration  = 100 * time.Second
	chaosRateTasks = 40
	chaosRateHTTP  = 120
	chaosHold      = 2 * time.Second
)

// drillChaos runs every fault of the chaos schedule (platform/bench's
// RunChaos, as `scalelab chaos` does) on the drill's stack under a steady
// load, and checks issue #30's targets: no task lost, no read-your-writes
// violation, tasks that ran twice only under a fault that allows it (a
// worker, or a NATS node, gone between a run and its ack), and every
// failed request inside its fault's window (bench.FaultSpec: for example
// at most 1 s after a gateway's kill -9, 5 s after a NATS node's, until
// the recovery and 5 s more for dbsvc's).
//
// SCALELAB_DRILL_CHAOS=0 skips it (two minutes saved on a local run). It
// was off by default while a read-your-writes violation it found was open
// (a gateway on a hung NATS node kept serving an item's older value from
// its near-cache); the near-cache lease (internal/cache, LocalLease)
// fixed that.
func (st *stack) drillChaos(t *testing.T) {
	if os.Getenv("SCALELAB_DRILL_CHAOS") == "0" {
		t.Skip("drill: the chaos schedule is skipped (SCALELAB_DRILL_CHAOS=0)")
	}
	out := t.TempDir()
	r, err := bench.RunChaos(t.Context(), st.Stack, bench.ChaosOptions{Out: out, Duration: chaosDuration,
		RateTasks: chaosRateTasks, RateHTTP: chaosRateHTTP, TaskMillis: 20, Hold: chaosHold, Drain: time.Minute,
		Progress: logWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	if md, err := os.ReadFile(filepath.Join(out, "report.md")); err == nil {
		t.Logf("report.md:\n%s", md)
	}
	c := r.Chaos
	if got, want := len(c.Faults), len(bench.ChaosFaults()); got != want {
		t.Fatalf("%d faults injected, want %d", got, want)
	}
	tk := c.Tasks
	if tk.Submitted < chaosRateTasks*int64(chaosDuration/time.Second)/2 {
		t.Errorf("%d tasks submitted, want at least half of %d/s over %v", tk.Submitted, chaosRateTasks, chaosDuration)
	}
	if tk.Lost != 0 {
		t.Errorf("%d tasks lost (accepted, never final), want 0: %v", tk.Lost, tk.LostIDs)
	}
	if tk.RunsCheckErr != "" {
		t.Errorf("runs per task not read: %s", tk.RunsCheckErr)
	}
	if c.ReadYourWrites.Checks == 0 || c.ReadYourWrites.Violations != 0 {
		t.Errorf("read-your-writes: %d violations in %d checks, want 0 in some: %q",
			c.ReadYourWrites.Violations, c.ReadYourWrites.Checks, c.ReadYourWrites.Examples)
	}
	for _, f := range c.Faults {
		if f.Err != "" {
			t.Errorf("%s: %s", f.Name, f.Err)
		}
		window := fmt.Sprintf("%v after the fault, %v after the recovery", f.AfterInject, f.AfterRecover)
		if f.UntilRecovered {
			window = fmt.Sprintf("until the recovery and %v after it", f.AfterRecover)
		}
		if f.Outside != 0 {
			t.Errorf("%s (%s): %d failed requests outside the window (%s), want 0: %q\nthe stack's log lines that name them:\n%s",
				f.Name, f.Target, f.Outside, window, f.OutsideSamples, strings.Join(f.OutsideLogs, "\n"))
		}
		if f.Duplicates != 0 && !f.FaultSpec.Duplicates {
			t.Errorf("%s: %d tasks ran twice, want none: no delivery is lost under this fault", f.Name, f.Duplicates)
		}
		t.Logf("%s on %s: %d requests, %d failed (%.2f–%.2f s after it; window %s), %d ran twice",
			f.Name, f.Target, f.Requests, f.Failed, f.FirstFail, f.LastFail, window, f.Duplicates)
	}
}

// logWriter writes each line it is given to the test's log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// stack is the drills' compose project: platform/compose's Stack, with
// the test's helpers around it.
type stack struct {
	*compose.Stack
	downed bool
}

// startStack starts the drills' stack, or skips the test when there is no
// Docker engine to run it on. It is taken down at cleanup, with its logs
// in the test output if the test failed.
func startStack(t *testing.T) *stack {
	t.Helper()
	cmd, err := compose.Find(t.Context())
	if errors.Is(err, compose.ErrNoEngine) {
		t.Skipf("drill: skipped: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatalf("repository root: %v", err)
	}
	s, err := compose.Start(t.Context(), compose.Options{Command: cmd, Root: root, Prefix: "scalelabdrill",
		Gateways: gateways, Workers: workers, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{Stack: s}
	t.Cleanup(func() {
		st.Client.CloseIdleConnections()
		if st.downed {
			return
		}
		if t.Failed() {
			t.Log(st.Logs(40))
		}
		if err := st.Down(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return st
}

// down takes the project down with its volumes and checks that nothing of
// it is left.
func (st *stack) down(t *testing.T) {
	t.Helper()
	start := time.Now()
	if t.Failed() {
		t.Log(st.Logs(40))
	}
	st.downed = true
	if err := st.Down(); err != nil {
		t.Fatal(err)
	}
	t.Logf("down -v took %v", time.Since(start).Round(time.Millisecond))
}

// containers lists the running containers of a service.
func (st *stack) containers(t *testing.T, service string) []compose.Container {
	t.Helper()
	cs, err := st.Containers(service)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// health returns a container's health status.
func (st *stack) health(t *testing.T, id string) string {
	t.Helper()
	h, err := st.Health(id)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// docker runs a docker command that must succeed.
func (st *stack) docker(t *testing.T, limit time.Duration, args ...string) error {
	t.Helper()
	return st.Docker(limit, args...)
}

// createSchedule posts a schedule through the balancer and returns its id.
func (st *stack) createSchedule(t *testing.T, body string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, st.Base+"/schedules", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+st.Token)
	res, b, err := st.Do(req)
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /schedules %s = %v, %v %s", body, err, res, b)
	}
	var sc struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &sc); err != nil || sc.ID == "" {
		t.Fatalf("POST /schedules answer %q: no id (%v)", b, err)
	}
	return sc.ID
}

// waitScheduleTicks waits until the schedule id's last_run (its latest
// tick's time) has moved on n times: n more ticks fired.
func (st *stack) waitScheduleTicks(t *testing.T, id string, n int) {
	t.Helper()
	var seen []string
	testutil.Eventually(t, time.Minute, func() error {
		res, b, err := st.Get(t.Context(), "/schedules/"+id)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /schedules/%s = %d %s", id, res.StatusCode, b)
		}
		var sc struct {
			LastRun string `json:"last_run"`
		}
		if err := json.Unmarshal(b, &sc); err != nil {
			return err
		}
		if len(seen) == 0 || seen[len(seen)-1] != sc.LastRun {
			seen = append(seen, sc.LastRun)
		}
		if len(seen) <= n {
			return fmt.Errorf("schedule %s: last runs seen %v, want %d changes", id, seen, n)
		}
		return nil
	})
}

// deleteSchedule deletes the schedule id through the balancer.
func (st *stack) deleteSchedule(t *testing.T, id string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, st.Base+"/schedules/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+st.Token)
	if res, b, err := st.Do(req); err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("DELETE /schedules/%s = %v, %v %s", id, err, res, b)
	}
}

// parallel runs the functions at once and returns their errors.
func parallel(fns ...func() error) []error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	return errs
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
