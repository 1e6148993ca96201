package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/platform"
)

// Scenario is one experiment of the lab.
type Scenario struct {
	// Name is what `scalelab bench <name>` takes.
	Name string
	// Title says what it shows, in a line.
	Title string
	run   func(e *env) error
}

// Scenarios lists every scenario, in the order `scalelab bench all` runs them.
func Scenarios() []Scenario {
	return []Scenario{
		{"cache", "caching: /data and /items with the cache off, KV, KV + near-cache", runCache},
		{"scale", "load balancing: 1, 2 and 4 gateways behind the balancer", runScale},
		{"async", "async processing: sync-wait vs async-submit latency; queue drain with 1, 2, 4 workers", runAsync},
		{"balance", "balancer policies with one slow gateway; a gateway stopped, then killed, under load", runBalance},
	}
}

// ErrOptions wraps the errors of a bad scenario name or bad options.
var ErrOptions = errors.New("bad bench options")

// Run runs the scenario named name, writes its report (report.md,
// report.json and PNG charts) to opts.Out and returns it.
func Run(ctx context.Context, name string, opts Options) (*Report, error) {
	i := slices.IndexFunc(Scenarios(), func(s Scenario) bool { return s.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("%w: bench: no scenario %q (one of %s, or all)", ErrOptions, name, scenarioNames())
	}
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	s := Scenarios()[i]
	r := &Report{Scenario: s.Name, Title: s.Title, Started: time.Now(), Machine: thisMachine(), Options: map[string]string{
		"duration": opts.Duration.String(), "connections": fmt.Sprint(opts.Connections), "seed_rows": fmt.Sprint(opts.SeedRows),
	}}
	if opts.URL != "" {
		r.Options["url"] = opts.URL
	}
	e := &env{ctx: ctx, opts: opts, report: r}
	if !e.external() {
		dir, err := os.MkdirTemp("", "scalelab-bench-")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(dir)
		e.dataDir = dir
	}
	if e.external() {
		r.finding("Measured the platform running at %s as it is configured: one run per load. The variants (cache modes, gateway "+
			"and worker counts, policies) need the platforms the bench starts itself, without --url.", opts.URL)
	}
	if err := s.run(e); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: %s interrupted: %w", name, err)
	}
	var limited int64
	for _, x := range r.Results {
		limited += x.Codes["429"]
	}
	if limited > 0 {
		r.finding("The platform rate-limited %d requests (429): these figures measure its limits, not its capacity. Start it "+
			"with `--rate-limit-ip 0 --rate-limit-subject 0` to measure the rest.", limited)
	}
	r.Seconds = time.Since(r.Started).Round(time.Second).Seconds()
	if err := r.write(opts.Out); err != nil {
		return nil, err
	}
	return r, nil
}

func scenarioNames() string {
	var names []string
	for _, s := range Scenarios() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

// each runs fn once per variant against a platform started for it (tuned
// by tune), or once against the running platform of --url.
func (e *env) each(key string, variants []string, tune func(v string, c *platform.Config), fn func(v string, t *target) error) error {
	if e.external() {
		variants = []string{"as running"}
	}
	for _, v := range variants {
		if e.ctx.Err() != nil {
			return nil
		}
		t, err := e.start(map[string]string{key: v}, func(c *platform.Config) { tune(v, c) })
		if err != nil {
			return err
		}
		err = fn(v, t)
		if serr := t.stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("bench: stop platform %s=%s: %w", key, v, serr))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// warm sends one request, so a run measures a steady state, not its
// first miss.
func (e *env) warm(t *target, path string) {
	tg := t.get(path)
	req, err := tg.Request()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second) // a first /data reads the whole table
	defer cancel()
	if res, err := http.DefaultClient.Do(req.WithContext(ctx)); err == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
}

// runCache: the same reads with the cache off, KV only, and KV plus the
// gateways' near-cache.
func runCache(e *env) error {
	modes := []string{string(cache.ModeOff), string(cache.ModeKV), string(cache.ModeKVLocal)}
	err := e.each("cache", modes, func(m string, c *platform.Config) { c.Cache.Mode = cache.Mode(m) }, func(m string, t *target) error {
		e.warm(t, "/data")
		e.measure(t, Load{Name: "cache=" + m + " GET /data", Group: "GET /data", Variant: m, Targets: fixed(t.get("/data"))}, nil)
		e.measure(t, Load{Name: "cache=" + m + " GET /items/{zipf}", Group: "GET /items/{id}", Variant: m, Targets: t.zipfItems()}, nil)
		return nil
	})
	if err != nil || e.external() {
		e.chartThroughputLatency("cache")
		return err
	}
	r := e.report
	for _, path := range []string{"GET /data", "GET /items/{zipf}"} {
		off, _ := r.result("cache=off " + path)
		kv, _ := r.result("cache=kv " + path)
		both, _ := r.result("cache=kv+local " + path)
		r.finding("%s: KV + near-cache serves %s the requests/s of no cache (%.0f vs %.0f) at %s its p99; KV alone %s.",
			path, ratio(both.Throughput, off.Throughput), both.Throughput, off.Throughput,
			ratio(both.Latency.P99, off.Latency.P99), ratio(kv.Throughput, off.Throughput))
		if both.HitRatio != nil {
			r.finding("%s: hit ratio %.3f with KV + near-cache; %.3f database queries per request against %.3f without cache.",
				path, *both.HitRatio, both.Metrics["db_queries_per_request"], off.Metrics["db_queries_per_request"])
		}
	}
	e.chartThroughputLatency("cache")
	return nil
}

// runScale: one load, 1, 2 and 4 gateways behind the balancer.
func runScale(e *env) error {
	counts := []string{"1", "2", "4"}
	err := e.each("gateways", counts, func(n string, c *platform.Config) {
		fmt.Sscan(n, &c.Gateways)
		c.Cache.Mode = cache.ModeKVLocal
	}, func(n string, t *target) error {
		e.warm(t, "/items/1")
		e.measure(t, Load{Name: n + " gateway(s) GET /items/{zipf}", Group: "GET /items/{id}", Variant: n + " gw", Targets: t.zipfItems()}, nil)
		e.measure(t, Load{Name: n + " gateway(s) GET /process", Group: "GET /process", Variant: n + " gw", Targets: fixed(t.get("/process"))}, nil)
		return nil
	})
	r := e.report
	if err == nil && !e.external() {
		one, _ := r.result("1 gateway(s) GET /items/{zipf}")
		four, _ := r.result("4 gateway(s) GET /items/{zipf}")
		r.finding("4 gateways serve %s the requests/s of 1 on this %d-CPU machine: every gateway shares the same cores, so more "+
			"gateways spread the load (see the per-gateway shares) but add no CPU. Across machines, as in compose, each "+
			"gateway brings its own CPU, and the same balancer spreads the load the same way.", ratio(four.Throughput, one.Throughput), r.Machine.CPUs)
	}
	e.chartThroughputLatency("scale")
	e.chartShares("scale")
	return err
}

// asyncTaskMillis is how long each task of the async scenario works:
// long enough that waiting for it shows, short enough to run many.
const asyncTaskMillis = 100

// runAsync: the latency a client sees when it waits for a task (sync)
// and when it only submits it (async); then how fast 1, 2 and 4 workers
// drain a queue of tasks.
func runAsync(e *env) error {
	body := fmt.Sprintf(`{"task":"sleep","duration_ms":%d}`, asyncTaskMillis)
	rate := max(5, min(50, e.opts.Connections)) // well under what the workers drain: latency, not queueing
	err := e.each("workers", []string{"2"}, func(_ string, c *platform.Config) { c.Workers = 2 }, func(_ string, t *target) error {
		e.measure(t, Load{Name: "async-submit POST /longtask", Group: "client latency", Variant: "async submit",
			Targets: fixed(t.post("/longtask", body)), Rate: rate}, map[string]string{"task": body})
		e.measure(t, Load{Name: "sync-wait POST /longtask?wait=20s", Group: "client latency", Variant: "sync wait",
			Targets: fixed(t.post("/longtask?wait=20s", body)), Rate: rate}, map[string]string{"task": body})
		return nil
	})
	if err != nil {
		return err
	}
	workers := []string{"1", "2", "4"}
	const concurrency = 4
	tasks := max(40, int(e.opts.Duration.Seconds()*80))
	err = e.each("workers", workers, func(n string, c *platform.Config) {
		fmt.Sscan(n, &c.Workers)
		c.Concurrency = concurrency
	}, func(n string, t *target) error {
		res, err := e.drain(t, tasks, body)
		if err != nil {
			return err
		}
		res.Name, res.Group, res.Variant = n+" worker(s) drain", "queue drain", n+" workers"
		res.Config = map[string]string{"workers": n, "concurrency_per_worker": fmt.Sprint(concurrency), "task": body, "tasks": fmt.Sprint(tasks)}
		if e.external() {
			res.Config = map[string]string{"platform": e.opts.URL, "task": body, "tasks": fmt.Sprint(tasks)}
		}
		e.report.Results = append(e.report.Results, res)
		return nil
	})
	r := e.report
	submit, _ := r.result("async-submit POST /longtask")
	wait, _ := r.result("sync-wait POST /longtask?wait=20s")
	r.finding("A client that submits a %d ms task and moves on waits %.2f ms (p50, p99 %.2f ms); one that waits for the result "+
		"waits %.2f ms (p50, p99 %.2f ms): the work leaves the request path.", asyncTaskMillis, submit.Latency.P50, submit.Latency.P99,
		wait.Latency.P50, wait.Latency.P99)
	if err == nil && !e.external() {
		one, _ := r.result("1 worker(s) drain")
		four, _ := r.result("4 worker(s) drain")
		r.finding("%d queued %d ms tasks drain at %.0f tasks/s with 1 worker and %.0f with 4 (%s), each worker running %d at once: "+
			"these tasks wait rather than compute, so workers scale even on %d CPUs.", tasks, asyncTaskMillis,
			one.Throughput, four.Throughput, ratio(four.Throughput, one.Throughput), concurrency, r.Machine.CPUs)
	}
	lat := []Result{submit, wait}
	r.chart("async-latency.png", "Client latency of a 100 ms task: submit vs wait (ms)", bars("ms",
		[]string{lat[0].Variant, lat[1].Variant},
		[]series{{"p50", []float64{lat[0].Latency.P50, lat[1].Latency.P50}}, {"p99", []float64{lat[0].Latency.P99, lat[1].Latency.P99}}}, "%.1f"))
	var names []string
	var rates []float64
	for _, x := range r.Results {
		if x.Group == "queue drain" {
			names, rates = append(names, x.Variant), append(rates, x.Throughput)
		}
	}
	r.chart("async-drain.png", fmt.Sprintf("Queue drain rate, %d tasks of %d ms (tasks/s)", tasks, asyncTaskMillis),
		bars("tasks/s", names, []series{{"drain", rates}}, "%.0f"))
	return err
}

// balanceSlowDelay is how slow the slow gateway of the balance scenario is.
const balanceSlowDelay = 20 * time.Millisecond

// runBalance: each policy over 3 gateways of which gw1 is slow; then a
// gateway stopped in the middle of a run.
func runBalance(e *env) error {
	policies := []string{balancer.PolicyRoundRobin, balancer.PolicyWeightedRoundRobin, balancer.PolicyLeastConnections, balancer.PolicyPowerOfTwo}
	err := e.each("policy", policies, func(pol string, c *platform.Config) {
		c.Gateways, c.Policy, c.Cache.Mode = 3, pol, cache.ModeKVLocal
		c.GatewayLatency = []time.Duration{balanceSlowDelay}
		if pol == balancer.PolicyWeightedRoundRobin {
			c.Weights = []int{1, 3, 3}
		}
	}, func(pol string, t *target) error {
		e.warm(t, "/items/1")
		e.measure(t, Load{Name: "policy=" + pol + " gw1 slow", Group: "gw1 +20 ms", Variant: pol, Targets: t.zipfItems()},
			map[string]string{"slow": "gw1 +" + balanceSlowDelay.String(), "weights": weightsOf(pol)})
		return nil
	})
	if err != nil {
		return err
	}
	r := e.report
	if !e.external() {
		rr, _ := r.result("policy=round_robin gw1 slow")
		lc, _ := r.result("policy=least_connections gw1 slow")
		r.finding("With gw1 %v slower, round robin still sends it %.1f%% of the requests (p99 %.1f ms); least connections sends "+
			"it %.1f%% (p99 %.1f ms) and serves %s the requests/s: a policy that looks at in-flight requests routes around a slow instance.",
			balanceSlowDelay, 100*rr.Share()["gw1"], rr.Latency.P99, 100*lc.Share()["gw1"], lc.Latency.P99, ratio(lc.Throughput, rr.Throughput))
	}
	// A gateway lost a third into an open-loop run: stopped as SIGTERM
	// stops it (it finishes what it has), then killed as SIGKILL would
	// (connections reset, requests in flight unanswered).
	rate := 20 * e.opts.Connections
	losses := []struct {
		how, chart, what string
		do               func(p *platform.Platform) error
	}{
		{"stopped", "balance-stop.png", "stopped (as by SIGTERM: it drained)", func(p *platform.Platform) error { return p.StopGateway(2) }},
		{"killed", "balance-kill.png", "killed (as by SIGKILL: its connections reset)", func(p *platform.Platform) error { return p.KillGateway(2) }},
	}
	for _, loss := range losses {
		if err != nil {
			break
		}
		err = e.each("policy", []string{balancer.PolicyRoundRobin}, func(_ string, c *platform.Config) {
			c.Gateways, c.Cache.Mode = 3, cache.ModeKVLocal
			// The run shows passive ejection: the failed requests take gw3
			// out. An active check landing between the loss and the fifth
			// failure would take it out first, which a loaded machine
			// makes likely, and the run would show the checks instead.
			c.HealthInterval = time.Minute
		}, func(_ string, t *target) error {
			if t.p == nil {
				return nil // a running platform is not ours to break
			}
			l := Load{Name: "round_robin gw3 " + loss.how + " under load", Group: "gw3 " + loss.how, Variant: "round_robin",
				Targets: t.zipfItems(), Rate: rate}
			l.DuringAfter = max(e.opts.Duration/3, 100*time.Millisecond).Round(time.Millisecond)
			l.During = func() {
				if err := loss.do(t.p); err != nil {
					e.opts.Log.Warn("lose gateway", "how", loss.how, "err", err)
				}
			}
			e.warm(t, "/items/1")
			x := e.measure(t, l, map[string]string{loss.how: "gw3 after " + l.DuringAfter.String()})
			r.finding("gw3 %s %v into a %v run at %d req/s: %d of %d requests failed. The balancer retried the %.0f "+
				"requests gw3 failed on the other gateways (GETs are safe to retry) and ejected gw3 after them.", loss.what,
				l.DuringAfter, e.opts.Duration, rate, x.Errors, x.Requests, x.Metrics["balancer_retries"])
			r.chart(loss.chart, "gw3 "+loss.how+" under load: answers per second, per gateway", timeline(x))
			return nil
		})
	}
	e.chartThroughputLatency("balance")
	e.chartShares("balance")
	return err
}

func weightsOf(policy string) string {
	if policy == balancer.PolicyWeightedRoundRobin {
		return "1,3,3"
	}
	return "1,1,1"
}

// chartThroughputLatency asks for the throughput and latency charts of
// the closed-loop runs: one group per Group, one bar per Variant.
func (e *env) chartThroughputLatency(prefix string) {
	r := e.report
	var groups, variants []string
	for _, x := range r.Results {
		if x.Rate > 0 || x.Variant == "" {
			continue
		}
		if !slices.Contains(groups, x.Group) {
			groups = append(groups, x.Group)
		}
		if !slices.Contains(variants, x.Variant) {
			variants = append(variants, x.Variant)
		}
	}
	if len(groups) == 0 {
		return
	}
	var tput, p99 []series
	for _, v := range variants {
		t, l := series{name: v}, series{name: v}
		for _, g := range groups {
			var y, z float64
			for _, x := range r.Results {
				if x.Group == g && x.Variant == v && x.Rate == 0 {
					y, z = x.Throughput, x.Latency.P99
				}
			}
			t.values, l.values = append(t.values, y), append(l.values, z)
		}
		tput, p99 = append(tput, t), append(p99, l)
	}
	r.chart(prefix+"-throughput.png", "Throughput (2xx answers/s, higher is better)", bars("requests/s", groups, tput, "%.0f"))
	r.chart(prefix+"-p99.png", "p99 latency (ms, lower is better)", bars("ms", groups, p99, "%.1f"))
}

// chartShares asks for a chart of each run's per-gateway shares.
func (e *env) chartShares(prefix string) {
	r := e.report
	var runs []string
	var gws []string
	for _, x := range r.Results {
		if len(x.Gateways) == 0 {
			continue
		}
		runs = append(runs, x.Variant+"\n"+strings.TrimPrefix(x.Group, "GET "))
		for g := range x.Gateways {
			if !slices.Contains(gws, g) {
				gws = append(gws, g)
			}
		}
	}
	if len(runs) == 0 {
		return
	}
	slices.Sort(gws)
	var rows []series
	for _, g := range gws {
		s := series{name: g}
		for _, x := range r.Results {
			if len(x.Gateways) > 0 {
				s.values = append(s.values, 100*x.Share()[g])
			}
		}
		rows = append(rows, s)
	}
	r.chart(prefix+"-shares.png", "Share of requests per gateway (%)", bars("%", runs, rows, "%.0f"))
}

// timeline draws a run's answers per second over time: per gateway, and
// its errors.
func timeline(x Result) func(*plot.Plot) error {
	at := make([]float64, len(x.Timeline))
	var gws []string
	for i, s := range x.Timeline {
		at[i] = float64(i) * x.TimelineStep
		for g := range s.Gateways {
			if !slices.Contains(gws, g) {
				gws = append(gws, g)
			}
		}
	}
	slices.Sort(gws)
	perSecond := func(n int64) float64 { return float64(n) / x.TimelineStep }
	var rows []series
	for _, g := range gws {
		s := series{name: g}
		for _, sl := range x.Timeline {
			s.values = append(s.values, perSecond(sl.Gateways[g]))
		}
		rows = append(rows, s)
	}
	errs := series{name: "errors"}
	for _, sl := range x.Timeline {
		errs.values = append(errs.values, perSecond(sl.Errors))
	}
	return lines("seconds into the run", "answers/s", at, append(rows, errs))
}
