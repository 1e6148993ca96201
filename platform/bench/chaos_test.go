package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/task"
)

// TestChaosCount: each failure is counted against the fault whose slot it
// ended in, and outside its window when it is neither soon after the fault
// nor soon after the recovery (by when it was sent and when it ended);
// tasks that ran twice, tasks lost and
// read-your-writes violations go to the fault they came after.
func TestChaosCount(t *testing.T) {
	t.Parallel()
	gw, _ := chaosFault("kill-gateway") // 1 s after the fault, 1 s after the recovery
	db, _ := chaosFault("kill-dbsvc")   // until the recovery, and 5 s after it
	c := &Chaos{Faults: []ChaosFault{
		{FaultSpec: gw, InjectAt: 10, RecoverAt: 13, FirstFail: -1, LastFail: -1},
		{FaultSpec: db, InjectAt: 20, RecoverAt: 24, FirstFail: -1, LastFail: -1},
	}}
	l := &chaosLoad{
		reqs: []chaosReq{
			{start: 5, end: 5.1, route: routeData, code: 503},    // before any fault: baseline
			{start: 10, end: 10.5, route: routeTask, code: 0},    // gateway: in its first second
			{start: 11, end: 11.2, route: routeData, code: 200},  // ends the run of failures
			{start: 11.9, end: 12, route: routeData, code: 502},  // gateway: outside (2 s after, 1 s before the recovery)
			{start: 13, end: 13.5, route: routeData, code: 503},  // gateway: after its recovery, inside
			{start: 21, end: 23.9, route: routePut, code: 503},   // dbsvc: until the recovery
			{start: 24, end: 28.5, route: routePut, code: 503},   // dbsvc: 4.5 s after the recovery
			{start: 29.5, end: 30.1, route: routePut, code: 503}, // dbsvc: sent 5.5 s after: outside
		},
		tasks:  []string{"a", "b", "c"},
		taskAt: []float64{9.5, 15, 21},
		rywAt:  []float64{22},
	}
	c.count(l, map[string]int64{"a": 1, "c": 2}, map[string]runSpan{"a": {first: 10.1, last: 10.2}}, []task.State{task.Succeeded, task.Running, task.Succeeded})
	if c.Requests != 8 || c.Failed != 7 || c.BaselineFailed != 1 {
		t.Errorf("requests %d, failed %d, baseline %d, want 8, 7, 1", c.Requests, c.Failed, c.BaselineFailed)
	}
	g, d := c.Faults[0], c.Faults[1]
	if g.Failed != 3 || g.Outside != 1 || g.FirstFail != 0.5 || g.LastFail != 3.5 || g.LongestRun != 1.5 {
		t.Errorf("kill-gateway: failed %d, outside %d, first %v, last %v, longest run %v, want 3, 1, 0.5, 3.5, 1.5",
			g.Failed, g.Outside, g.FirstFail, g.LastFail, g.LongestRun)
	}
	if d.Failed != 3 || d.Outside != 1 || d.LongestRun != 6.2 {
		t.Errorf("kill-dbsvc: failed %d, outside %d, longest run %v, want 3, 1, 6.2", d.Failed, d.Outside, d.LongestRun)
	}
	// a was submitted before the gateway's kill and ran again after it
	// (its last run's time), c was submitted after dbsvc's (no time read).
	if c.Tasks.RanMoreThanOnce != 2 || c.Tasks.ExtraRuns != 3 || g.Duplicates != 1 || d.Duplicates != 1 {
		t.Errorf("ran more than once %d (extra runs %d), by fault %d and %d, want 2 (3), 1 and 1",
			c.Tasks.RanMoreThanOnce, c.Tasks.ExtraRuns, g.Duplicates, d.Duplicates)
	}
	if g.Lost != 1 || d.Lost != 0 || g.RYWViolations != 0 || d.RYWViolations != 1 {
		t.Errorf("lost %d and %d, read-your-writes violations %d and %d, want 1, 0, 0, 1", g.Lost, d.Lost, g.RYWViolations, d.RYWViolations)
	}
	if len(c.Timeline) != 31 || c.Timeline[10].Errors != 1 || c.Timeline[11].OK != 1 {
		t.Errorf("timeline: %d seconds, %+v, %+v, want 31, one error at 10 s, one answer at 11 s", len(c.Timeline), c.Timeline[10], c.Timeline[11])
	}
}

// TestChaosDuplicateAttribution: a task that ran again an ack wait after
// a worker was killed mid-run goes to that kill, which allows duplicates,
// not to the fault in whose slot it ran again; one with no such fault
// between its runs goes to the slot of its last run (and is a finding).
func TestChaosDuplicateAttribution(t *testing.T) {
	t.Parallel()
	w, _ := chaosFault("kill-worker")
	cs, _ := chaosFault("kill-cachesvc")
	c := &Chaos{Faults: []ChaosFault{
		{FaultSpec: w, InjectAt: 10, RecoverAt: 12, FirstFail: -1, LastFail: -1},
		{FaultSpec: cs, InjectAt: 40, RecoverAt: 42, FirstFail: -1, LastFail: -1},
	}}
	l := &chaosLoad{tasks: []string{"x", "y"}, taskAt: []float64{9, 44}}
	c.count(l, map[string]int64{"x": 1, "y": 1},
		map[string]runSpan{"x": {first: 10.3, last: 41}, "y": {first: 45, last: 46}},
		[]task.State{task.Succeeded, task.Succeeded})
	if c.Faults[0].Duplicates != 1 || c.Faults[1].Duplicates != 1 {
		t.Errorf("duplicates by fault: kill-worker %d, kill-cachesvc %d; want 1 and 1", c.Faults[0].Duplicates, c.Faults[1].Duplicates)
	}
}

// TestChaosOptionsValidate names every bad option.
func TestChaosOptionsValidate(t *testing.T) {
	t.Parallel()
	o := ChaosOptions{Out: "x", Duration: time.Minute, RateTasks: 1, RateHTTP: 1, Faults: []string{"kill-worker"}}
	if err := o.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	o.Duration, o.Faults = time.Second, []string{"nope"}
	err := o.Validate()
	for _, want := range []string{"--duration", `no fault "nope"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}

// TestChaosWindow: a failed request is inside its fault's window while it
// overlaps AfterInject after the fault, or the recovery, from the moment
// docker's command was sent to AfterRecover after it returned (a CI run
// saw a NATS node's restart take 5.8 s of `docker start`, and its clients
// fail while it rejoined), or the whole outage of an UntilRecovered fault.
func TestChaosWindow(t *testing.T) {
	node := ChaosFault{FaultSpec: FaultSpec{AfterInject: 5 * time.Second, AfterRecover: 10 * time.Second},
		InjectAt: 113.7, RecoveringAt: 115.8, RecoverAt: 121.5}
	single := ChaosFault{FaultSpec: FaultSpec{UntilRecovered: true, AfterRecover: 5 * time.Second},
		InjectAt: 32.2, RecoveringAt: 34.5, RecoverAt: 37.0}
	for _, tc := range []struct {
		name       string
		f          ChaosFault
		start, end float64
		want       bool
	}{
		{"before the fault", node, 100, 110, false},
		{"in flight when the fault came", node, 113, 114, true},
		{"sent just after the fault", node, 118, 119, true},
		{"while docker starts the node", node, 119.6, 119.7, true},
		{"after the recovery", node, 130, 131, true},
		{"past the recovery's window", node, 131.6, 132, false},
		{"during the outage", single, 36, 36.5, true},
		{"after the recovery", single, 41.9, 42, true},
		{"past the window", single, 42.1, 42.2, false},
	} {
		if got := tc.f.allows(tc.start, tc.end); got != tc.want {
			t.Errorf("%s: allows(%v, %v) = %v, want %v", tc.name, tc.start, tc.end, got, tc.want)
		}
	}
}

// TestOutsideLogs: the log lines kept for failures outside a window are
// the ones that name their request ids (an answer without one names
// none), each line once.
func TestOutsideLogs(t *testing.T) {
	samples := []string{
		`POST /longtask 503 at +1.28 s: {"error":{"code":"unavailable","message":"task queue is not available","request_id":"NL3ZM2"}}`,
		`POST /longtask 503 at +1.28 s: {"error":{"code":"unavailable","message":"task queue is not available","request_id":"HKJEEV"}}`,
		`POST /longtask 503 at +1.29 s: {"error":{"code":"unavailable","request_id":"NL3ZM2"}}`,
		`GET /data 0 at +1.30 s: EOF`,
		`PUT /items/{id} 503 at +1.31 s: {"error":{"code":"unavailable","message":"database service did not answer in time","re… (request_id CUT123)`,
	}
	ids := requestIDs(samples)
	if want := []string{"NL3ZM2", "HKJEEV", "CUT123"}; !slices.Equal(ids, want) {
		t.Fatalf("requestIDs = %q, want %q", ids, want)
	}
	logs := "gateway_1 | {\"msg\":\"request failed\",\"request_id\":\"NL3ZM2\",\"err\":\"nats: no response from stream\"}\n" +
		"gateway_2 | {\"msg\":\"proxied\",\"request_id\":\"OTHER1\"}\n" +
		"balancer_1 | {\"msg\":\"proxied\",\"request_id\":\"HKJEEV\",\"upstream\":\"gw2\"}\n"
	got := linesNaming(logs, ids, 20)
	want := []string{
		`gateway_1 | {"msg":"request failed","request_id":"NL3ZM2","err":"nats: no response from stream"}`,
		`balancer_1 | {"msg":"proxied","request_id":"HKJEEV","upstream":"gw2"}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("linesNaming = %q, want %q", got, want)
	}
	if got := linesNaming(logs, ids, 1); len(got) != 1 {
		t.Errorf("linesNaming with limit 1 = %d lines", len(got))
	}
	if got := linesNaming(logs, nil, 20); got != nil {
		t.Errorf("linesNaming with no ids = %q, want none", got)
	}
}
