package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scalelab/scalelab/internal/reqid"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/platform/compose"
)

// ChaosOptions configure a chaos run (`scalelab chaos`): a steady mixed load
// through the compose stack's balancer while a schedule of faults runs, each
// fault followed by its recovery, and everything counted.
type ChaosOptions struct {
	// Out is the directory the report is written to; it is created.
	Out string
	// Duration is how long the load runs; the faults share it equally,
	// after a warm-up of a tenth of it (at most 10 s). A recovery that
	// takes longer than its share stretches the run.
	Duration time.Duration
	// RateTasks is the tally tasks submitted per second (POST /longtask).
	RateTasks int
	// RateHTTP is the other requests per second: 40 % GET /data, 60 %
	// read-your-writes pairs on /items (a PUT, then a GET of the same item).
	RateHTTP int
	// TaskMillis is each task's duration_ms.
	TaskMillis int
	// Hold is how long a fault lasts before its recovery starts; 0 picks
	// a quarter of a fault's share of Duration, 1..10 s.
	Hold time.Duration
	// Faults names the schedule's faults in order; nil runs them all
	// (ChaosFaults).
	Faults []string
	// Drain is how long the tasks unfinished when the load stops are
	// waited for before they count as lost.
	Drain time.Duration
	// Progress gets a line per step; nil shows none.
	Progress io.Writer
	// Log gets the run's warnings.
	Log *slog.Logger
}

// Validate reports every bad option at once.
func (o ChaosOptions) Validate() error {
	var errs []error
	if o.Out == "" {
		errs = append(errs, errors.New("chaos: --out must not be empty"))
	}
	if o.Duration < 10*time.Second || o.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("chaos: --duration must be 10s..24h, got %v", o.Duration))
	}
	if o.RateTasks < 0 || o.RateTasks > 10000 {
		errs = append(errs, fmt.Errorf("chaos: --rate-tasks must be 0..10000, got %d", o.RateTasks))
	}
	if o.RateHTTP < 0 || o.RateHTTP > 100000 {
		errs = append(errs, fmt.Errorf("chaos: --rate-http must be 0..100000, got %d", o.RateHTTP))
	}
	if o.TaskMillis < 0 || o.TaskMillis > 60000 {
		errs = append(errs, fmt.Errorf("chaos: --task-ms must be 0..60000, got %d", o.TaskMillis))
	}
	if o.Hold < 0 || o.Hold > 10*time.Minute {
		errs = append(errs, fmt.Errorf("chaos: --hold must be 0..10m, got %v", o.Hold))
	}
	if o.Drain < 0 {
		errs = append(errs, fmt.Errorf("chaos: --drain must not be negative, got %v", o.Drain))
	}
	for _, f := range o.Faults {
		if _, ok := chaosFault(f); !ok {
			errs = append(errs, fmt.Errorf("chaos: no fault %q (want one of %s)", f, strings.Join(FaultNames(), ", ")))
		}
	}
	return errors.Join(errs...)
}

// FaultSpec is one fault a chaos run can inject, with its recovery and
// the window in which requests may fail because of it: the targets of
// issue #30, which the report checks and the drill's chaos test asserts.
type FaultSpec struct {
	Name  string `json:"name"`
	Title string `json:"title"`
	// Service is the compose service whose container the fault hits.
	Service string `json:"service"`
	// Action is what is done: kill (SIGKILL, then docker start), pause
	// (docker pause, then unpause), partition (docker network
	// disconnect, then connect) or restart (docker restart).
	Action string `json:"action"`
	// AfterInject is how long after the fault requests may fail; with
	// UntilRecovered they may fail until the recovery, since the service
	// has a single instance (or stalls every caller) while it is out.
	AfterInject    time.Duration `json:"after_inject_ns"`
	UntilRecovered bool          `json:"until_recovered"`
	// AfterRecover is how long after the recovery requests may
	// still fail (the service starting, rejoining, being found again).
	AfterRecover time.Duration `json:"after_recover_ns"`
	// Duplicates says whether at-least-once delivery may run a task twice
	// under this fault: a worker, or the NATS node its acks go through,
	// dying or vanishing between a run's record and its ack.
	Duplicates bool `json:"duplicates_allowed"`
	// Why says what the window and the duplicates allowance rest on.
	Why string `json:"why"`
}

// natsFailover is how long after a NATS node's kill requests may fail:
// the most a stream it led stays without a leader. nats-server's raft
// followers wait a random 4-9 s after the last heartbeat (sent every 1 s)
// before they call an election (server/raft.go, minElectionTimeoutDefault,
// maxElectionTimeoutDefault, hbIntervalDefault), so a stream is leaderless
// for up to 10 s, plus the vote. It was 5 s: CI's drill failed on 42 task
// submissions answered 503 at +5.7 s, the `TASKS` stream still without a
// leader, which the server's timers allow.
const natsFailover = 11 * time.Second

// chaosFaults is the full schedule, in order.
var chaosFaults = []FaultSpec{
	{Name: "kill-worker", Title: "kill -9 of a worker", Service: "worker", Action: "kill",
		AfterInject: time.Second, AfterRecover: time.Second, Duplicates: true,
		Why: "no request goes to a worker; a task it ran but had not acked is redelivered after the ack wait and runs again"},
	{Name: "kill-gateway", Title: "kill -9 of a gateway", Service: "gateway", Action: "kill",
		AfterInject: time.Second, AfterRecover: time.Second,
		Why: "the requests in flight on it fail (a POST is not retried by the balancer), then the balancer ejects it"},
	{Name: "kill-dbsvc", Title: "kill -9 of dbsvc", Service: "dbsvc", Action: "kill",
		UntilRecovered: true, AfterRecover: 5 * time.Second,
		Why: "one dbsvc: item writes and uncached reads fail until it is back and its micro service answers again"},
	{Name: "kill-cachesvc", Title: "kill -9 of cachesvc", Service: "cachesvc", Action: "kill",
		AfterInject: time.Second, AfterRecover: time.Second,
		Why: "the gateways use the cache bucket over NATS, not cachesvc: no request needs it"},
	{Name: "kill-nats1", Title: "kill -9 of NATS node nats1", Service: "nats1", Action: "kill",
		AfterInject: natsFailover, AfterRecover: 10 * time.Second, Duplicates: true,
		Why: "its clients reconnect to the other two and a stream it led elects a new leader (up to 10 s: raft's election timers); when it comes back, " +
			"requests through it time out while it rejoins the cluster and catches up"},
	{Name: "kill-nats2", Title: "kill -9 of NATS node nats2", Service: "nats2", Action: "kill",
		AfterInject: natsFailover, AfterRecover: 10 * time.Second, Duplicates: true,
		Why: "as nats1"},
	{Name: "kill-nats3", Title: "kill -9 of NATS node nats3", Service: "nats3", Action: "kill",
		AfterInject: natsFailover, AfterRecover: 10 * time.Second, Duplicates: true,
		Why: "as nats1"},
	{Name: "pause-nats", Title: "docker pause of a NATS node (a hung peer)", Service: "nats", Action: "pause",
		UntilRecovered: true, AfterRecover: 5 * time.Second, Duplicates: true,
		Why: "a hung node keeps its TCP connections open: its clients stall until the roles' pings give up on it or it resumes"},
	{Name: "partition-nats", Title: "network partition of a NATS node", Service: "nats", Action: "partition",
		UntilRecovered: true, AfterRecover: 5 * time.Second, Duplicates: true,
		Why: "as a pause: the node's clients see silence, not a closed connection"},
	{Name: "restart-balancer", Title: "restart of the balancer", Service: "balancer", Action: "restart",
		UntilRecovered: true, AfterRecover: 2 * time.Second,
		Why: "the one front door: nothing is served while it restarts"},
}

// ChaosFaults returns every fault of the full schedule, in order.
func ChaosFaults() []FaultSpec { return slices.Clone(chaosFaults) }

// FaultNames returns the names of ChaosFaults.
func FaultNames() []string {
	var names []string
	for _, f := range chaosFaults {
		names = append(names, f.Name)
	}
	return names
}

func chaosFault(name string) (FaultSpec, bool) {
	for _, f := range chaosFaults {
		if f.Name == name {
			return f, true
		}
	}
	return FaultSpec{}, false
}

// Chaos is what a chaos run measured: report.json's "chaos".
type Chaos struct {
	RateTasks  int    `json:"rate_tasks"`
	RateHTTP   int    `json:"rate_http"`
	TaskMillis int    `json:"task_ms"`
	Mix        string `json:"mix"`
	// LoadSeconds is how long the load ran; WarmUpSeconds when the first
	// fault came.
	LoadSeconds   float64 `json:"load_seconds"`
	WarmUpSeconds float64 `json:"warm_up_seconds"`
	// Skipped counts requests the load generator could not send on time
	// (all its clients busy): the offered load fell short by that much.
	Skipped int64 `json:"skipped"`
	// Requests counts every request; Codes by status ("0": no answer);
	// CodesByRoute the same per route.
	Requests     int64                       `json:"requests"`
	Failed       int64                       `json:"failed"`
	Codes        map[string]int64            `json:"codes"`
	CodesByRoute map[string]map[string]int64 `json:"codes_by_route"`
	// BaselineFailed counts the failures before the first fault.
	BaselineFailed int64         `json:"baseline_failed"`
	Faults         []ChaosFault  `json:"faults"`
	Tasks          ChaosTasks    `json:"tasks"`
	ReadYourWrites ChaosRYW      `json:"read_your_writes"`
	Timeline       []ChaosSecond `json:"timeline"`
}

// ChaosFault is one injected fault and what followed it, up to the next.
type ChaosFault struct {
	FaultSpec
	// Target is the container hit (its hostname, or the node's name);
	// Note what else was true of it (the JetStream meta leader).
	Target string `json:"target"`
	Note   string `json:"note,omitempty"`
	// InjectAt, RecoveringAt, RecoverAt and HealthyAt are seconds since
	// the load began: the fault, when the docker command that undoes it
	// was sent and when it returned (the container running again, or back
	// on the network), and when the target was healthy again. The
	// recovery's window runs from the first to AfterRecover after the
	// second: the node or service starts (and its callers see it) while
	// docker's command runs, which took seconds on a busy 2-core machine,
	// and that time is docker's, so it does not eat into AfterRecover.
	InjectAt     float64 `json:"inject_at"`
	RecoveringAt float64 `json:"recovering_at"`
	RecoverAt    float64 `json:"recover_at"`
	HealthyAt    float64 `json:"healthy_at"`
	// Requests, Failed and Codes count the requests that ended from this
	// fault to the next.
	Requests int64            `json:"requests"`
	Failed   int64            `json:"failed"`
	Codes    map[string]int64 `json:"codes"`
	// FirstFail and LastFail are the first and last failure, in seconds
	// after InjectAt (-1: none). LongestRun is the longest time between
	// the first and last of consecutive failures (no success between).
	FirstFail  float64 `json:"first_fail"`
	LastFail   float64 `json:"last_fail"`
	LongestRun float64 `json:"longest_run"`
	// Outside counts failures outside the fault's window (FaultSpec):
	// the target is 0.
	Outside        int64    `json:"outside_window"`
	OutsideSamples []string `json:"outside_samples,omitempty"`
	// OutsideLogs are the stack's log lines that name the request ids of
	// OutsideSamples: which gateway answered, and the error under it.
	OutsideLogs []string `json:"outside_logs,omitempty"`
	// FailSamples are the first failures, inside the window or not.
	FailSamples []string `json:"fail_samples,omitempty"`
	// Duplicates counts tasks submitted from this fault to the next that
	// ran more than once, Lost those never final; RYWViolations the
	// read-your-writes violations seen from this fault to the next.
	Duplicates    int64 `json:"duplicates"`
	Lost          int64 `json:"lost"`
	RYWViolations int64 `json:"ryw_violations"`
	// Err is why the fault or its recovery could not be done.
	Err string `json:"error,omitempty"`
}

// ChaosTasks counts the tasks of a chaos run.
type ChaosTasks struct {
	// Submitted counts 202 answers; Final their final states.
	Submitted int64            `json:"submitted"`
	Final     map[string]int64 `json:"final"`
	Succeeded int64            `json:"succeeded"`
	Dead      int64            `json:"dead"`
	// Lost are accepted but not final after the drain; LostRecords
	// says, for the first ones, what their record held then.
	Lost        int64    `json:"lost"`
	LostIDs     []string `json:"lost_ids,omitempty"`
	LostRecords []string `json:"lost_records,omitempty"`
	// LostLogs are the stack's log lines that name the first lost tasks.
	LostLogs []string `json:"lost_logs,omitempty"`
	// RanMoreThanOnce counts the tasks whose handler recorded more than
	// one run (task.ExecStream), ExtraRuns their runs beyond the first.
	RanMoreThanOnce int64    `json:"ran_more_than_once"`
	ExtraRuns       int64    `json:"extra_runs"`
	DuplicateIDs    []string `json:"duplicate_ids,omitempty"`
	// RunsCheckErr is why the runs could not be read.
	RunsCheckErr  string  `json:"runs_check_error,omitempty"`
	DrainSeconds  float64 `json:"drain_seconds"`
	CheckFailures int64   `json:"check_failures,omitempty"`
}

// ChaosRYW counts the read-your-writes checks on /items: a GET right after
// a PUT's 2xx, through the balancer, must show that write (or a later one).
type ChaosRYW struct {
	Checks     int64    `json:"checks"`
	Violations int64    `json:"violations"`
	Examples   []string `json:"examples,omitempty"`
}

// ChaosSecond is one second of the run: answers that ended in it.
type ChaosSecond struct {
	Second int     `json:"t"`
	OK     int64   `json:"ok"`
	Errors int64   `json:"errors"`
	P99Ms  float64 `json:"p99_ms"`
}

// chaosMix describes the load.
const chaosMix = "POST /longtask (tally tasks) at --rate-tasks; at --rate-http: 40% GET /data, " +
	"60% read-your-writes pairs (PUT /items/{id}, then GET /items/{id})"

// The routes of the load, as the report names them.
const (
	routeTask    = "POST /longtask"
	routeData    = "GET /data"
	routePut     = "PUT /items/{id}"
	routeGetItem = "GET /items/{id}"
)

// chaosReq is one request: when it started and ended (seconds since the
// load began), its route and its status (0: no answer).
type chaosReq struct {
	start, end float64
	route      string
	code       int
	msg        string // of a failure: the start of its body, or the client's error
}

func (r chaosReq) failed() bool { return r.code < 200 || r.code >= 300 }

// chaosLoad drives the load and keeps every request.
type chaosLoad struct {
	st     *compose.Stack
	client *http.Client
	began  time.Time
	body   string

	mu      sync.Mutex
	reqs    []chaosReq
	tasks   []string  // accepted task ids
	taskAt  []float64 // when each was accepted
	ryw     ChaosRYW
	rywAt   []float64 // when each violation was seen
	skipped atomic.Int64
}

// since is seconds since the load began.
func (l *chaosLoad) since() float64 { return time.Since(l.began).Seconds() }

// do sends one request through the balancer and records it.
func (l *chaosLoad) do(ctx context.Context, route, method, path, body string, hdr map[string]string) (int, []byte, http.Header) {
	start := l.since()
	req, err := http.NewRequestWithContext(ctx, method, l.st.Base+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil
	}
	req.Header.Set("Authorization", "Bearer "+l.st.Token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	code := 0
	var b []byte
	var h http.Header
	res, err := l.client.Do(req)
	if err == nil {
		b, err = io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if err == nil {
			code, h = res.StatusCode, res.Header
		}
	}
	if ctx.Err() != nil {
		return code, b, h // the run is over: not the platform's failure
	}
	q := chaosReq{start: start, end: l.since(), route: route, code: code}
	if q.failed() {
		q.msg = string(b)
		if err != nil {
			q.msg = err.Error()
		}
		q.msg = task.Truncate(strings.TrimSpace(q.msg), 120)
		// The id ends the body, which the cut may have taken: the
		// header's, for the log lines that name it (OutsideLogs).
		if rid := h.Get(reqid.Header); rid != "" && !strings.Contains(q.msg, rid) {
			q.msg += " (request_id " + rid + ")"
		}
	}
	l.mu.Lock()
	l.reqs = append(l.reqs, q)
	l.mu.Unlock()
	return code, b, h
}

// submit posts one tally task and keeps its id when accepted.
func (l *chaosLoad) submit(ctx context.Context, n int64) {
	code, b, _ := l.do(ctx, routeTask, http.MethodPost, "/longtask", l.body,
		map[string]string{"Idempotency-Key": fmt.Sprintf("chaos-%d-%d", l.began.UnixNano(), n)})
	if code != http.StatusAccepted {
		return
	}
	var sub struct {
		TaskID string `json:"task_id"`
	}
	if json.Unmarshal(b, &sub) != nil || sub.TaskID == "" {
		return
	}
	l.mu.Lock()
	l.tasks = append(l.tasks, sub.TaskID)
	l.taskAt = append(l.taskAt, l.since())
	l.mu.Unlock()
}

// readYourWrite writes item id with version seq of its name, then reads it
// back; a 200 that shows a seq older than the last acknowledged write is a
// violation. A write that got no 2xx may or may not have landed, so a read
// may show it: only older than acked counts.
func (l *chaosLoad) readYourWrite(ctx context.Context, id int, seq int64, acked map[int]int64) {
	path := "/items/" + strconv.Itoa(id)
	code, _, wh := l.do(ctx, routePut, http.MethodPut, path,
		fmt.Sprintf(`{"name":"chaos %d","price_cents":%d,"stock":%d}`, seq, 100+seq%1000, seq%50), nil)
	if code < 200 || code >= 300 {
		return
	}
	acked[id] = seq
	code, b, rh := l.do(ctx, routeGetItem, http.MethodGet, path, "", nil)
	if code != http.StatusOK {
		return
	}
	var item struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(b, &item)
	got, err := strconv.ParseInt(strings.TrimPrefix(item.Name, "chaos "), 10, 64)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ryw.Checks++
	if err != nil || got < seq {
		l.ryw.Violations++
		l.rywAt = append(l.rywAt, l.since())
		if len(l.ryw.Examples) < 10 {
			l.ryw.Examples = append(l.ryw.Examples, fmt.Sprintf("at %.1f s: PUT %s wrote %q (2xx, by %s), the GET after it read %q (by %s, X-Cache %s)",
				l.since(), path, fmt.Sprintf("chaos %d", seq), wh.Get("X-Served-By"), item.Name, rh.Get("X-Served-By"), rh.Get("X-Cache")))
		}
	}
}

// chaosItems is how many of the seeded items the pairs write (ids 1..N).
const chaosItems = 960

// run drives the load until ctx ends: each stream paced at its rate, its
// requests handed to a fixed pool of clients; a request due while every
// client of its stream is busy is skipped and counted.
func (l *chaosLoad) run(ctx context.Context, o ChaosOptions) {
	var wg sync.WaitGroup
	stream := func(rate float64, clients int, work func(client int, n int64)) {
		if rate <= 0 {
			return
		}
		tokens := make(chan int64, clients)
		for c := range clients {
			wg.Go(func() {
				for n := range tokens {
					work(c, n)
				}
			})
		}
		wg.Go(func() {
			defer close(tokens)
			for n := int64(0); ; n++ {
				due := l.began.Add(time.Duration(float64(n) / rate * float64(time.Second)))
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(due)):
				}
				select {
				case tokens <- n:
				default:
					l.skipped.Add(1)
				}
			}
		})
	}
	stream(float64(o.RateTasks), 64, func(_ int, n int64) { l.submit(ctx, n) })
	stream(0.4*float64(o.RateHTTP), 48, func(int, int64) { l.do(ctx, routeData, http.MethodGet, "/data", "", nil) })
	// Each pair client owns the items id ≡ client (mod pairClients), so
	// no two clients write the same item and each knows its last write.
	const pairClients = 48
	acked := make([]map[int]int64, pairClients)
	next := make([]int, pairClients)
	for i := range acked {
		acked[i] = map[int]int64{}
	}
	stream(0.3*float64(o.RateHTTP), pairClients, func(c int, n int64) {
		id := 1 + c + pairClients*(next[c]%(chaosItems/pairClients))
		next[c]++
		l.readYourWrite(ctx, id, n, acked[c])
	})
	wg.Wait()
}

// RunChaos runs the chaos schedule against st, a running compose stack
// (compose.Start): the load, then each fault and its recovery in turn, then
// a drain of the tasks, and the counts. It writes the report (report.md,
// report.json, charts) to o.Out. A fault that cannot be injected or
// recovered is in the report with its error; the run goes on.
func RunChaos(ctx context.Context, st *compose.Stack, o ChaosOptions) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	specs := chaosFaults
	if o.Faults != nil {
		specs = nil
		for _, name := range o.Faults {
			f, _ := chaosFault(name)
			specs = append(specs, f)
		}
	}
	r := &Report{Scenario: "chaos", Title: "faults at load on the compose stack, counted", Started: time.Now(),
		Machine: thisMachine(), Options: map[string]string{
			"duration": o.Duration.String(), "rate_tasks": fmt.Sprint(o.RateTasks), "rate_http": fmt.Sprint(o.RateHTTP),
			"task_ms": fmt.Sprint(o.TaskMillis), "hold": o.Hold.String(), "drain": o.Drain.String(),
			"faults": strings.Join(faultNames(specs), ","),
		}}
	c := &Chaos{RateTasks: o.RateTasks, RateHTTP: o.RateHTTP, TaskMillis: o.TaskMillis, Mix: chaosMix}
	r.Chaos = c

	l := &chaosLoad{st: st, began: time.Now(), body: fmt.Sprintf(`{"task":"tally","duration_ms":%d}`, o.TaskMillis),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}}}
	defer l.client.CloseIdleConnections()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		l.run(loadCtx, o)
	}()

	warm := min(10*time.Second, o.Duration/10)
	share := (o.Duration - warm) / time.Duration(max(1, len(specs)))
	hold := o.Hold
	if hold == 0 {
		hold = min(10*time.Second, max(time.Second, share/4))
	}
	c.WarmUpSeconds = warm.Seconds()
	fmt.Fprintf(o.Progress, "chaos: load on %s: %d tasks/s, %d req/s; %d faults, one every %v, each held %v\n",
		st.Base, o.RateTasks, o.RateHTTP, len(specs), share.Round(time.Second), hold)
	wait := func(until time.Time) {
		select {
		case <-time.After(time.Until(until)):
		case <-ctx.Done():
		}
	}
	wait(l.began.Add(warm))
	for i, spec := range specs {
		if ctx.Err() != nil {
			break
		}
		slotEnd := time.Now().Add(share)
		f := injectFault(ctx, st, l, spec, hold)
		c.Faults = append(c.Faults, f)
		fmt.Fprintf(o.Progress, "chaos: %2d/%d %-16s %s at %.1f s, recovery at %.1f s, healthy at %.1f s %s\n",
			i+1, len(specs), spec.Name, f.Target, f.InjectAt, f.RecoverAt, f.HealthyAt, f.Err)
		wait(slotEnd)
	}
	stopLoad()
	<-loaded
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("chaos: interrupted: %w", err)
	}
	c.LoadSeconds = math.Round(l.since()*10) / 10

	fmt.Fprintf(o.Progress, "chaos: load stopped after %.0f s; checking %d tasks (drain up to %v)\n", c.LoadSeconds, len(l.tasks), o.Drain)
	tk, states := checkTaskStates(ctx, st.Base, st.Token, l.tasks, 0, o.Drain, o.Log)
	c.Tasks = ChaosTasks{Submitted: tk.Accepted, Final: tk.Final, Succeeded: tk.Final[string(task.Succeeded)],
		Dead: tk.Final[string(task.Dead)], Lost: tk.Lost, LostIDs: tk.LostIDs, DrainSeconds: tk.DrainSeconds,
		CheckFailures: tk.CheckFailures}
	again, err := extraRuns(st)
	if err != nil {
		c.Tasks.RunsCheckErr = err.Error()
	}
	runs := extraRunTimes(st, l, again, o.Log)
	c.Skipped = l.skipped.Load()
	c.ReadYourWrites = l.ryw
	c.count(l, again, runs, states)
	for _, id := range c.Tasks.LostIDs {
		if len(c.Tasks.LostRecords) == 5 {
			break
		}
		if rec, err := st.Task(ctx, id); err == nil {
			c.Tasks.LostRecords = append(c.Tasks.LostRecords, fmt.Sprintf("%s: state %s, attempts %d, worker %q, created %s, updated %s, error %q",
				id, rec.State, rec.Attempts, rec.Worker, rec.CreatedAt.Format(time.TimeOnly), rec.UpdatedAt.Format(time.TimeOnly), rec.Error))
		} else {
			c.Tasks.LostRecords = append(c.Tasks.LostRecords, fmt.Sprintf("%s: %v", id, err))
		}
	}
	outside := slices.ContainsFunc(c.Faults, func(f ChaosFault) bool { return f.Outside > 0 })
	if len(c.Tasks.LostIDs) > 0 || outside {
		logs, _ := st.Compose(2*time.Minute, "logs", "--no-color")
		c.Tasks.LostLogs = linesNaming(logs, c.Tasks.LostIDs[:min(3, len(c.Tasks.LostIDs))], 30)
		for i := range c.Faults {
			f := &c.Faults[i]
			f.OutsideLogs = linesNaming(logs, requestIDs(f.OutsideSamples), 20)
		}
	}
	chaosFindings(r, c)
	chaosCharts(r, c)
	r.Seconds = time.Since(r.Started).Round(time.Second).Seconds()
	if err := r.write(o.Out); err != nil {
		return nil, err
	}
	return r, nil
}

// linesNaming returns the lines of logs that contain one of ids, at most
// limit of them, each cut to 400 bytes.
func linesNaming(logs string, ids []string, limit int) []string {
	var out []string
	if len(ids) == 0 {
		return nil
	}
	for line := range strings.Lines(logs) {
		if len(out) == limit {
			break
		}
		for _, id := range ids {
			if strings.Contains(line, id) {
				out = append(out, task.Truncate(strings.TrimSpace(line), 400))
				break
			}
		}
	}
	return out
}

// requestIDPattern finds a failed request's id in its sample: in the
// error body the roles wrote ({"error":{...,"request_id":"..."}}), or
// after it, from the X-Request-ID header, when the body was cut before it.
var requestIDPattern = regexp.MustCompile(`"request_id":"([A-Za-z0-9]+)"|\(request_id ([A-Za-z0-9]+)\)`)

// requestIDs returns the request ids that samples (failed requests with
// their answers) name, each once.
func requestIDs(samples []string) []string {
	var ids []string
	for _, s := range samples {
		for _, m := range requestIDPattern.FindAllStringSubmatch(s, -1) {
			id := m[1] + m[2] // one of the two is empty
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func faultNames(specs []FaultSpec) []string {
	var names []string
	for _, f := range specs {
		names = append(names, f.Name)
	}
	return names
}

// injectFault does spec to its target, waits hold, recovers, and waits
// until the target is healthy again (at most two minutes).
func injectFault(ctx context.Context, st *compose.Stack, l *chaosLoad, spec FaultSpec, hold time.Duration) ChaosFault {
	f := ChaosFault{FaultSpec: spec, FirstFail: -1, LastFail: -1}
	fail := func(err error) ChaosFault {
		f.Err = err.Error()
		if f.RecoverAt == 0 {
			f.RecoverAt = l.since()
		}
		if f.RecoveringAt == 0 {
			f.RecoveringAt = f.RecoverAt
		}
		f.HealthyAt = l.since()
		return f
	}
	if js, err := st.JSZ(ctx); err == nil {
		f.Note = "JetStream meta leader: " + js.Meta.Leader
		if s, ok := js.Stream(task.Stream); ok {
			f.Note += ", TASKS leader: " + s.Cluster.Leader
		}
	}
	service := spec.Service
	if service == "nats" {
		service = hungNode(ctx, st)
	}
	cs, err := st.Containers(service)
	if err != nil {
		return fail(err)
	}
	if len(cs) == 0 {
		return fail(fmt.Errorf("no running %s container", service))
	}
	victim := cs[0]
	f.Target = victim.Hostname
	if strings.HasPrefix(service, "nats") {
		f.Target = service
	}
	var inject, recover []string
	switch spec.Action {
	case "kill":
		inject, recover = []string{"kill", "--signal", "KILL", victim.ID}, []string{"start", victim.ID}
	case "pause":
		inject, recover = []string{"pause", victim.ID}, []string{"unpause", victim.ID}
	case "partition":
		inject = []string{"network", "disconnect", "--force", st.Network, victim.ID}
		recover = []string{"network", "connect", "--alias", service, st.Network, victim.ID}
	case "restart":
		inject, hold = []string{"restart", "--time", "10", victim.ID}, 0
	}
	f.InjectAt = l.since()
	if err := st.Docker(time.Minute, inject...); err != nil {
		return fail(err)
	}
	select {
	case <-time.After(hold):
	case <-ctx.Done():
	}
	f.RecoveringAt = l.since()
	if recover != nil {
		if err := st.Docker(time.Minute, recover...); err != nil {
			return fail(err)
		}
	}
	f.RecoverAt = l.since()
	err = compose.Poll(ctx, 2*time.Minute, func() error {
		h, err := st.Health(victim.ID)
		if err != nil {
			return err
		}
		if h != "healthy" {
			return fmt.Errorf("%s is %s", f.Target, h)
		}
		if strings.HasPrefix(service, "nats") {
			// Caught up: JetStream on, its streams and consumers current.
			return st.Docker(10*time.Second, "exec", victim.ID, "/scalelab", "probe", "http://127.0.0.1:8222/healthz")
		}
		return nil
	})
	if err != nil {
		return fail(fmt.Errorf("after the recovery: %w", err))
	}
	f.HealthyAt = l.since()
	return f
}

// hungNode picks the NATS node to pause or cut off: the one leading TASKS,
// the hardest case for the task pipeline, unless that is nats1, whose
// published monitoring port the run reads the cluster through; nats2 then.
func hungNode(ctx context.Context, st *compose.Stack) string {
	if js, err := st.JSZ(ctx); err == nil {
		if s, ok := js.Stream(task.Stream); ok && (s.Cluster.Leader == "nats2" || s.Cluster.Leader == "nats3") {
			return s.Cluster.Leader
		}
	}
	return "nats2"
}

// extraRuns reads, with the nats CLI of compose's tools service, the
// subjects of the tasks whose handler recorded more than one run: task id
// to the runs beyond the first.
func extraRuns(st *compose.Stack) (map[string]int64, error) {
	out, err := st.Compose(2*time.Minute, "run", "--rm", "-T", "nats", "req", "--raw",
		"$JS.API.STREAM.INFO."+task.ExecStream, fmt.Sprintf(`{"subjects_filter":%q}`, task.ExecAgainPrefix+">"))
	if err != nil {
		return nil, err
	}
	var info struct {
		State struct {
			Subjects map[string]int64 `json:"subjects"`
		} `json:"state"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(compose.JSONPart(out), &info); err != nil {
		return nil, fmt.Errorf("stream info %s: %w: %s", task.ExecStream, err, out)
	}
	if info.Error != nil {
		return nil, fmt.Errorf("stream info %s: %s", task.ExecStream, info.Error.Description)
	}
	runs := map[string]int64{}
	for subj, n := range info.State.Subjects {
		runs[strings.TrimPrefix(subj, task.ExecAgainPrefix)] = n
	}
	return runs, nil
}

// runSpan is when a task that ran more than once first ran and last ran,
// in seconds since the load began.
type runSpan struct{ first, last float64 }

// extraRunTimes reads, for the first 20 tasks of this run with extra
// runs, the times of their first and last recorded runs (the Exec.At of
// the messages), in seconds since the load began. A duplicate comes from a
// fault between the two: the run whose ack a fault lost, then the run
// again, which may come an ack wait (30 s) later, in another fault's
// slot. A time that cannot be read is left out (logged).
func extraRunTimes(st *compose.Stack, l *chaosLoad, again map[string]int64, log *slog.Logger) map[string]runSpan {
	out := map[string]runSpan{}
	for _, id := range l.tasks {
		if again[id] == 0 {
			continue
		}
		if len(out) == 20 {
			break
		}
		first, err1 := execAt(st, task.ExecFirstPrefix+id)
		last, err2 := execAt(st, task.ExecAgainPrefix+id)
		if err := errors.Join(err1, err2); err != nil {
			log.Warn("chaos: read the runs of a task", "task", id, "err", err)
			continue
		}
		out[id] = runSpan{first: first.Sub(l.began).Seconds(), last: last.Sub(l.began).Seconds()}
	}
	return out
}

// execAt reads the time of the last run recorded under subject on
// task.ExecStream.
func execAt(st *compose.Stack, subject string) (time.Time, error) {
	res, err := st.Compose(time.Minute, "run", "--rm", "-T", "nats", "req", "--raw",
		"$JS.API.STREAM.MSG.GET."+task.ExecStream, fmt.Sprintf(`{"last_by_subj":%q}`, subject))
	var msg struct {
		Message struct {
			Data []byte `json:"data"`
		} `json:"message"`
	}
	var e task.Exec
	if err == nil {
		err = json.Unmarshal(compose.JSONPart(res), &msg)
	}
	if err == nil {
		err = json.Unmarshal(msg.Message.Data, &e)
	}
	if err == nil && e.At.IsZero() {
		err = fmt.Errorf("no run time in %s", task.Truncate(res, 200))
	}
	return e.At, err
}

// count fills the totals, each fault's window and the timeline from the
// requests, and the duplicates from again (the extra runs by task id).
func (c *Chaos) count(l *chaosLoad, again map[string]int64, runs map[string]runSpan, states []task.State) {
	l.mu.Lock()
	defer l.mu.Unlock()
	reqs := slices.Clone(l.reqs)
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].end < reqs[j].end })
	c.Codes, c.CodesByRoute = map[string]int64{}, map[string]map[string]int64{}
	for i := range c.Faults {
		c.Faults[i].Codes = map[string]int64{}
	}
	// faultAt is the fault whose slot holds t (-1: before the first).
	faultAt := func(t float64) int {
		return sort.Search(len(c.Faults), func(i int) bool { return c.Faults[i].InjectAt > t }) - 1
	}
	runStart := map[int]float64{} // a fault's current run of failures, since
	for _, q := range reqs {
		code := strconv.Itoa(q.code)
		c.Requests++
		c.Codes[code]++
		if c.CodesByRoute[q.route] == nil {
			c.CodesByRoute[q.route] = map[string]int64{}
		}
		c.CodesByRoute[q.route][code]++
		if q.failed() {
			c.Failed++
		}
		i := faultAt(q.end)
		if i < 0 {
			if q.failed() {
				c.BaselineFailed++
			}
			continue
		}
		f := &c.Faults[i]
		f.Requests++
		f.Codes[code]++
		if !q.failed() {
			delete(runStart, i)
			continue
		}
		f.Failed++
		at := q.end - f.InjectAt
		if len(f.FailSamples) < 3 {
			f.FailSamples = append(f.FailSamples, fmt.Sprintf("%s %s at +%.2f s: %s", q.route, code, at, q.msg))
		}
		if f.FirstFail < 0 {
			f.FirstFail = at
		}
		f.LastFail = at
		if _, ok := runStart[i]; !ok {
			runStart[i] = q.end
		}
		f.LongestRun = max(f.LongestRun, q.end-runStart[i])
		if !f.allows(q.start, q.end) {
			f.Outside++
			if len(f.OutsideSamples) < 5 {
				f.OutsideSamples = append(f.OutsideSamples, fmt.Sprintf("%s %s at +%.2f s: %s", q.route, code, at, q.msg))
			}
		}
	}
	for i := range c.Faults {
		f := &c.Faults[i]
		f.FirstFail, f.LastFail, f.LongestRun = round2(f.FirstFail), round2(f.LastFail), round2(f.LongestRun)
		f.InjectAt, f.RecoveringAt, f.RecoverAt, f.HealthyAt = round2(f.InjectAt), round2(f.RecoveringAt), round2(f.RecoverAt), round2(f.HealthyAt)
	}
	// Duplicates: the tasks of this run with extra runs, each put down to
	// the last fault that allows duplicates and came between its first run
	// (less a second: the fault may land as the run ends) and its last;
	// without one, to the fault whose slot its last run came in; without
	// the times, to the one it was submitted in.
	for k, id := range l.tasks {
		if k < len(states) && !states[k].Terminal() {
			if i := faultAt(l.taskAt[k] + 1); i >= 0 {
				c.Faults[i].Lost++
			}
		}
		n := again[id]
		if n == 0 {
			continue
		}
		c.Tasks.RanMoreThanOnce++
		c.Tasks.ExtraRuns += n
		if len(c.Tasks.DuplicateIDs) < 20 {
			c.Tasks.DuplicateIDs = append(c.Tasks.DuplicateIDs, id)
		}
		i := faultAt(l.taskAt[k])
		if span, ok := runs[id]; ok {
			i = faultAt(span.last)
			for j := i; j >= 0 && c.Faults[j].InjectAt >= span.first-1; j-- {
				if c.Faults[j].FaultSpec.Duplicates {
					i = j
					break
				}
			}
		}
		if i >= 0 {
			c.Faults[i].Duplicates++
		}
	}
	for _, t := range l.rywAt {
		if i := faultAt(t); i >= 0 {
			c.Faults[i].RYWViolations++
		}
	}
	// The timeline: per second, answers that ended in it.
	var lat [][]float64
	for _, q := range reqs {
		s := int(q.end)
		for len(c.Timeline) <= s {
			c.Timeline = append(c.Timeline, ChaosSecond{Second: len(c.Timeline)})
			lat = append(lat, nil)
		}
		if q.failed() {
			c.Timeline[s].Errors++
		} else {
			c.Timeline[s].OK++
		}
		lat[s] = append(lat[s], (q.end-q.start)*1000)
	}
	for s := range c.Timeline {
		if len(lat[s]) > 0 {
			slices.Sort(lat[s])
			c.Timeline[s].P99Ms = round2(lat[s][int(math.Ceil(0.99*float64(len(lat[s]))))-1])
		}
	}
}

// allows reports whether a failed request that ran from start to end
// (seconds since the load began) overlaps the fault's window: a request
// sent inside it may take its timeout (seconds) to fail, and one in
// flight when the fault came fails with it.
func (f ChaosFault) allows(start, end float64) bool {
	if end < f.InjectAt {
		return false
	}
	if start <= f.InjectAt+f.AfterInject.Seconds() || (f.UntilRecovered && start <= f.RecoverAt) {
		return true
	}
	from := f.RecoveringAt
	if from == 0 { // a report from before the field: the window began at the return
		from = f.RecoverAt
	}
	return end >= from && start <= f.RecoverAt+f.AfterRecover.Seconds()
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// chaosFindings states the verdict against issue #30's targets.
func chaosFindings(r *Report, c *Chaos) {
	tk := c.Tasks
	r.finding("Tasks: %d submitted (202), %d succeeded, %d dead, %d lost (accepted, not final after %.1f s of drain)%s; lost by the fault they were submitted after: %s.",
		tk.Submitted, tk.Succeeded, tk.Dead, tk.Lost, tk.DrainSeconds, verdict(tk.Lost == 0, "target 0 lost"),
		byFault(c, func(f ChaosFault) int64 { return f.Lost }))
	if tk.RunsCheckErr != "" {
		r.finding("Runs per task could not be read: %s.", tk.RunsCheckErr)
	} else {
		r.finding("Ran more than once (the handler's own record on %s): %d tasks, %d extra runs; %s.",
			task.ExecStream, tk.RanMoreThanOnce, tk.ExtraRuns, byFault(c, func(f ChaosFault) int64 { return f.Duplicates }))
	}
	r.finding("Read-your-writes on /items: %d checks, %d violations%s: %s.", c.ReadYourWrites.Checks, c.ReadYourWrites.Violations,
		verdict(c.ReadYourWrites.Violations == 0, "target 0"), byFault(c, func(f ChaosFault) int64 { return f.RYWViolations }))
	r.finding("Requests: %d at %d/s offered (%d skipped by a saturated load generator), %d failed (%s); %d of them before the first fault.",
		c.Requests, c.RateTasks+c.RateHTTP, c.Skipped, c.Failed, formatMap64(c.Codes), c.BaselineFailed)
	var outside []string
	for _, f := range c.Faults {
		if f.Outside > 0 || f.Err != "" {
			outside = append(outside, fmt.Sprintf("%s: %d outside%s", f.Name, f.Outside, errNote(f.Err)))
		}
		if f.Duplicates > 0 && !f.FaultSpec.Duplicates {
			outside = append(outside, fmt.Sprintf("%s: %d duplicates where none are allowed", f.Name, f.Duplicates))
		}
	}
	if len(outside) == 0 {
		r.finding("Every failure fell inside its fault's window, and duplicates only under faults that allow them.")
	} else {
		r.finding("MISSED: %s.", strings.Join(outside, "; "))
	}
}

func verdict(ok bool, target string) string {
	if ok {
		return " (" + target + ": met)"
	}
	return " (" + target + ": **MISSED**)"
}

func errNote(err string) string {
	if err == "" {
		return ""
	}
	return " (" + err + ")"
}

// byFault says how many of something each fault's slot had, e.g. "3
// after kill-nats1, 1 after kill-worker".
func byFault(c *Chaos, n func(ChaosFault) int64) string {
	var parts []string
	for _, f := range c.Faults {
		if k := n(f); k > 0 {
			parts = append(parts, fmt.Sprintf("%d after %s", k, f.Name))
		}
	}
	if len(parts) == 0 {
		return "none under any fault"
	}
	return strings.Join(parts, ", ")
}

// chaosCharts draws the timeline: answers and errors per second, and the
// p99 latency per second, with each fault marked.
func chaosCharts(r *Report, c *Chaos) {
	if len(c.Timeline) == 0 {
		return
	}
	x := make([]float64, len(c.Timeline))
	ok, errs, p99 := series{name: "2xx answers/s"}, series{name: "failed requests/s"}, series{name: "p99 latency, ms"}
	for i, s := range c.Timeline {
		x[i] = float64(s.Second)
		ok.values = append(ok.values, float64(s.OK))
		errs.values = append(errs.values, float64(s.Errors))
		p99.values = append(p99.values, s.P99Ms)
	}
	var marks []mark
	for _, f := range c.Faults {
		marks = append(marks, mark{x: f.InjectAt, label: f.Name})
	}
	r.chart("chaos-throughput.png", "Throughput and failures per second, faults marked",
		marked(lines("seconds into the run", "requests/s", x, []series{ok, errs}), marks))
	r.chart("chaos-p99.png", "p99 latency per second, faults marked",
		marked(lines("seconds into the run", "ms", x, []series{p99}), marks))
}

// markdown writes the chaos run's tables.
func (c *Chaos) markdown(w io.Writer) {
	fmt.Fprintf(w, "## Chaos\n\nLoad: %s; tasks of %d ms. %.0f s of load, the first fault at %.0f s.\n\n",
		c.Mix, c.TaskMillis, c.LoadSeconds, c.WarmUpSeconds)
	tk := c.Tasks
	fmt.Fprintf(w, "| tasks | count |\n|---|--:|\n| submitted (202) | %d |\n| succeeded | %d |\n| dead | %d |\n| lost (accepted, never final) | %d |\n"+
		"| ran more than once (handler's record) | %d |\n| extra runs | %d |\n\n",
		tk.Submitted, tk.Succeeded, tk.Dead, tk.Lost, tk.RanMoreThanOnce, tk.ExtraRuns)
	if len(tk.LostIDs) > 0 {
		fmt.Fprintf(w, "Lost: %s.\n\n", strings.Join(tk.LostIDs, ", "))
		for _, rec := range tk.LostRecords {
			fmt.Fprintf(w, "- %s\n", rec)
		}
		if len(tk.LostLogs) > 0 {
			fmt.Fprintf(w, "\nThe stack's log lines that name them:\n\n```\n%s\n```\n", strings.Join(tk.LostLogs, "\n"))
		}
		fmt.Fprintln(w)
	}
	if len(tk.DuplicateIDs) > 0 {
		fmt.Fprintf(w, "Ran more than once: %s.\n\n", strings.Join(tk.DuplicateIDs, ", "))
	}
	fmt.Fprintf(w, "Read-your-writes on /items: %d checks, %d violations.\n\n", c.ReadYourWrites.Checks, c.ReadYourWrites.Violations)
	for _, e := range c.ReadYourWrites.Examples {
		fmt.Fprintf(w, "- %s\n", e)
	}
	if len(c.ReadYourWrites.Examples) > 0 {
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "HTTP requests by status: %s (0: no answer).\n\n| route | by status |\n|---|---|\n", formatMap64(c.Codes))
	for _, route := range slices.Sorted(maps.Keys(c.CodesByRoute)) {
		fmt.Fprintf(w, "| %s | %s |\n", route, formatMap64(c.CodesByRoute[route]))
	}
	fmt.Fprintf(w, "\n### Faults\n\nTimes in seconds: since the load began for the fault, its recovery and the target healthy again; "+
		"since the fault for the failures. The window is where failures are allowed: after the fault (or until the recovery), "+
		"and after the recovery. Longest run: from the first to the last of consecutive failed requests.\n\n")
	fmt.Fprintf(w, "| fault | target | at | recovery | healthy | requests | failed | first–last fail | longest run | window | outside | ran twice | lost | RYW violations | note |\n")
	fmt.Fprintf(w, "|---|---|--:|--:|--:|--:|--:|---|--:|---|--:|--:|--:|--:|---|\n")
	for _, f := range c.Faults {
		span := "–"
		if f.Failed > 0 {
			span = fmt.Sprintf("%.2f–%.2f", f.FirstFail, f.LastFail)
		}
		window := fmt.Sprintf("%v, +%v", f.AfterInject, f.AfterRecover)
		if f.UntilRecovered {
			window = fmt.Sprintf("until recovery, +%v", f.AfterRecover)
		}
		dup := fmt.Sprint(f.Duplicates)
		if !f.FaultSpec.Duplicates {
			dup += " (none allowed)"
		}
		note := f.Note
		if f.Err != "" {
			note = "ERROR: " + f.Err
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %.1f | %d | %d | %s | %.2f | %s | %d | %s | %d | %d | %s |\n", f.Name, f.Target, f.InjectAt,
			f.RecoverAt, f.HealthyAt, f.Requests, f.Failed, span, f.LongestRun, window, f.Outside, dup, f.Lost, f.RYWViolations, note)
	}
	fmt.Fprintln(w)
	for _, f := range c.Faults {
		if len(f.FailSamples) > 0 {
			fmt.Fprintf(w, "- %s, first failures: %s\n", f.Name, strings.Join(f.FailSamples, "; "))
		}
		if len(f.OutsideSamples) > 0 {
			fmt.Fprintf(w, "- %s, failures outside the window: %s\n", f.Name, strings.Join(f.OutsideSamples, "; "))
		}
		if len(f.OutsideLogs) > 0 {
			fmt.Fprintf(w, "\n  The stack's log lines that name them:\n\n  ```\n  %s\n  ```\n\n", strings.Join(f.OutsideLogs, "\n  "))
		}
	}
	fmt.Fprintf(w, "\nWhy each window: \n\n")
	for _, f := range c.Faults {
		fmt.Fprintf(w, "- %s: %s.\n", f.Name, f.Why)
	}
	fmt.Fprintln(w)
}
