package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/platform"
	"github.com/scalelab/scalelab/worker"
)

// SoakOptions configure a soak run: `up`'s platform, in this process, under
// a steady mixed load for a long time, its resources sampled as it runs.
type SoakOptions struct {
	// Out is the directory the report is written to; it is created.
	Out string
	// Duration is how long the steady load runs.
	Duration time.Duration
	// Sample is the time between two samples.
	Sample time.Duration
	// Rate is the steady load in requests per second. Zero measures the
	// peak first (a closed loop of the same mix for PeakFor) and runs at
	// half of it.
	Rate int
	// PeakFor is how long the peak is measured when Rate is zero.
	PeakFor time.Duration
	// WarmUp is the share of the run whose samples are warm-up: growth is
	// measured from the last of them (the first sample at least).
	WarmUp float64
	// Drain is how long the tasks still unfinished when the load stops
	// are waited for before they count as lost.
	Drain time.Duration
	// Connections is the most requests in flight at once.
	Connections int
	// SeedRows sizes the database.
	SeedRows int
	// Progress gets a progress bar; nil shows none.
	Progress io.Writer
	// Log gets the platform's logs.
	Log *slog.Logger
	// BcryptSlots is the platform's platform.Config.BcryptSlots.
	BcryptSlots int
}

// Defaults of the soak's options that its callers share.
const (
	// DefaultSoakWarmUp is the share of a soak run that is warm-up.
	DefaultSoakWarmUp = 0.2
	// FlatTolerance is the most a metric may grow from the end of warm-up
	// to the end of the run and still be called flat.
	FlatTolerance = 0.10
)

// Validate reports every bad option at once.
func (o SoakOptions) Validate() error {
	var errs []error
	if o.Out == "" {
		errs = append(errs, errors.New("bench soak: --out must not be empty"))
	}
	if o.Duration < time.Second || o.Duration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("bench soak: --duration must be 1s..24h, got %v", o.Duration))
	}
	if o.Sample < 100*time.Millisecond || o.Sample > o.Duration {
		errs = append(errs, fmt.Errorf("bench soak: --sample must be 100ms..--duration, got %v", o.Sample))
	}
	if o.Rate < 0 || o.Rate > 100000 {
		errs = append(errs, fmt.Errorf("bench soak: --rate must be 0..100000 (0: half the measured peak), got %d", o.Rate))
	}
	if o.Rate == 0 && (o.PeakFor < time.Second || o.PeakFor > 10*time.Minute) {
		errs = append(errs, fmt.Errorf("bench soak: --peak-for must be 1s..10m, got %v", o.PeakFor))
	}
	if o.WarmUp < 0 || o.WarmUp >= 1 {
		errs = append(errs, fmt.Errorf("bench soak: --warm-up must be in [0, 1), got %g", o.WarmUp))
	}
	if o.Drain < 0 {
		errs = append(errs, fmt.Errorf("bench soak: --drain must not be negative, got %v", o.Drain))
	}
	if o.Connections < 1 || o.Connections > 1024 {
		errs = append(errs, fmt.Errorf("bench soak: --connections must be 1..1024, got %d", o.Connections))
	}
	if o.SeedRows < 0 {
		errs = append(errs, fmt.Errorf("bench soak: --seed-rows must not be negative, got %d", o.SeedRows))
	}
	return errors.Join(errs...)
}

// Soak is what a soak run measured: report.json's "soak".
type Soak struct {
	// Rate is the steady load, in requests per second; PeakRate the
	// measured peak it is half of (zero when --rate gave it).
	Rate     int     `json:"rate"`
	PeakRate float64 `json:"peak_rate,omitempty"`
	// Mix says what the load sends, in shares of the requests.
	Mix string `json:"mix"`
	// WarmUpSeconds is when warm-up ends: growth is measured from the
	// last sample at or before it.
	WarmUpSeconds float64       `json:"warm_up_seconds"`
	Samples       []SoakSample  `json:"samples"`
	Verdicts      []SoakVerdict `json:"verdicts"`
	// NotFlat names every metric that grew more than FlatTolerance.
	NotFlat []string  `json:"not_flat"`
	Tasks   SoakTasks `json:"tasks"`
	// HeapProfiles are the heap profiles written next to the report, at
	// the end of warm-up and at the end.
	HeapProfiles []string `json:"heap_profiles,omitempty"`
}

// writeHeapProfile writes this process's heap profile to dir/name and
// returns name, or "" when it could not (logged: the run goes on).
func writeHeapProfile(dir, name string, log *slog.Logger) string {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Warn("soak: heap profile", "err", err)
		return ""
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err == nil {
		err = errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
	}
	if err != nil {
		log.Warn("soak: heap profile", "err", err)
		return ""
	}
	return name
}

// SoakSample is the process and the platform at one moment of the run,
// and the answers since the sample before.
type SoakSample struct {
	Seconds float64 `json:"seconds"` // since the steady load began
	// RSSBytes is VmRSS of this process: the platform and the load
	// generator, which share it.
	RSSBytes       uint64 `json:"rss_bytes"`
	HeapInuseBytes uint64 `json:"heap_inuse_bytes"`
	Goroutines     int    `json:"goroutines"`
	OpenFDs        int    `json:"open_fds"`
	// JetStreamBytes is the account's JetStream file store use.
	JetStreamBytes uint64 `json:"jetstream_store_bytes"`
	// Requests, Codes and Errors count the answers since the sample
	// before (Errors: any not 2xx, "0" for no answer).
	Requests int64            `json:"requests"`
	Codes    map[string]int64 `json:"codes"`
	Errors   int64            `json:"errors"`
	// TasksAccepted (202 answers) and TasksFinished (final attempts the
	// workers report: succeeded, failed, dead, cancelled) count from the
	// start of the run.
	TasksAccepted int64 `json:"tasks_accepted"`
	TasksFinished int64 `json:"tasks_finished"`
}

// SoakVerdict is one metric's growth from the end of warm-up to the end.
type SoakVerdict struct {
	Metric string  `json:"metric"`
	BaseAt float64 `json:"base_at_seconds"`
	Base   float64 `json:"base"`
	End    float64 `json:"end"`
	// Growth is (End-Base)/Base; from a base of zero any rise counts as
	// 100 %.
	Growth float64 `json:"growth"`
	Flat   bool    `json:"flat"`
}

// SoakTasks counts the tasks the run submitted, checked one by one at the
// end (after waiting up to --drain for the last ones).
type SoakTasks struct {
	Accepted int64 `json:"accepted"`
	// Final counts them by final state; Lost are accepted but not final
	// at the end (LostIDs lists the first ones).
	Final   map[string]int64 `json:"final"`
	Lost    int64            `json:"lost"`
	LostIDs []string         `json:"lost_ids,omitempty"`
	// NoID counts 202 answers whose body had no task id to check.
	NoID          int64   `json:"no_id,omitempty"`
	DrainSeconds  float64 `json:"drain_seconds"`
	CheckFailures int64   `json:"check_failures,omitempty"`
}

// soakMetrics are the sampled metrics a verdict is given on, in order.
var soakMetrics = []struct {
	name string
	get  func(SoakSample) float64
}{
	{"rss_bytes", func(s SoakSample) float64 { return float64(s.RSSBytes) }},
	{"heap_inuse_bytes", func(s SoakSample) float64 { return float64(s.HeapInuseBytes) }},
	{"goroutines", func(s SoakSample) float64 { return float64(s.Goroutines) }},
	{"open_fds", func(s SoakSample) float64 { return float64(s.OpenFDs) }},
	{"jetstream_store_bytes", func(s SoakSample) float64 { return float64(s.JetStreamBytes) }},
}

// soakVerdicts measures each metric's growth from the end of warm-up (the
// last sample at or before warmUp of the run's length, which is the last
// sample's time; the first sample at least) to the last sample. Fewer than two samples give no verdict.
func soakVerdicts(samples []SoakSample, warmUp float64) (verdicts []SoakVerdict, notFlat []string, warmUpEnd float64) {
	if len(samples) < 2 {
		return nil, nil, 0
	}
	last := samples[len(samples)-1]
	warmUpEnd = warmUp * last.Seconds
	base := 0
	for i, s := range samples[:len(samples)-1] {
		if s.Seconds <= warmUpEnd+1e-9 {
			base = i
		}
	}
	for _, m := range soakMetrics {
		b, e := m.get(samples[base]), m.get(last)
		var g float64
		switch {
		case b > 0:
			g = (e - b) / b
		case e > 0:
			g = 1
		}
		v := SoakVerdict{Metric: m.name, BaseAt: samples[base].Seconds, Base: b, End: e,
			Growth: math.Round(g*10000) / 10000, Flat: g <= FlatTolerance}
		if !v.Flat {
			notFlat = append(notFlat, m.name)
		}
		verdicts = append(verdicts, v)
	}
	return verdicts, notFlat, warmUpEnd
}

// soakTaskBody is each task the soak submits: short, so the workers keep
// up and a task still queued at the end is a lost one, not a slow one.
const soakTaskBody = `{"task":"sleep","duration_ms":10}`

// soakMix describes soakTargets' mix.
const soakMix = "40% GET /items/{zipf}, 20% GET /data, 20% POST /longtask (10 ms sleep), 10% PUT /items/{id}, 10% PATCH /items/{id}"

// soakTargets sends the soak's mix, in a fixed order of ten.
func (t *target) soakTargets() vegeta.Targeter {
	items := t.zipfItems()
	data, submit := t.get("/data"), t.post("/longtask", soakTaskBody)
	put := t.post("/items/", "")
	put.Method = http.MethodPut
	patch := t.post("/items/", "")
	patch.Method = http.MethodPatch
	patch.Header = http.Header{"Authorization": patch.Header["Authorization"], "Content-Type": {"application/merge-patch+json"}}
	var n atomic.Uint64
	return func(out *vegeta.Target) error {
		i := n.Add(1)
		id := strconv.FormatUint(1+(i/10)%itemCount, 10)
		switch i % 10 {
		case 0, 5:
			*out = data
		case 1, 6:
			*out = submit
		case 2:
			*out = put
			out.URL += id
			out.Body = fmt.Appendf(nil, `{"name":"soak %d","price_cents":%d,"stock":%d}`, i, 100+i%1000, i%50)
		case 7:
			*out = patch
			out.URL += id
			out.Body = fmt.Appendf(nil, `{"stock":%d}`, i%50)
		default:
			return items(out)
		}
		return nil
	}
}

// soakCounts are the answers since the last sample and the tasks accepted.
type soakCounts struct {
	mu       sync.Mutex
	requests int64
	errors   int64
	codes    map[string]int64
	ids      []string
	noID     int64
}

// answer counts one answer, and keeps the id of an accepted task.
func (c *soakCounts) answer(res *vegeta.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	c.codes[strconv.Itoa(int(res.Code))]++
	if res.Code < 200 || res.Code >= 300 {
		c.errors++
	}
	if res.Code == http.StatusAccepted && res.Method == http.MethodPost && strings.HasSuffix(res.URL, "/longtask") {
		var sub struct {
			TaskID string `json:"task_id"`
		}
		if json.Unmarshal(res.Body, &sub) == nil && sub.TaskID != "" {
			c.ids = append(c.ids, sub.TaskID)
		} else {
			c.noID++
		}
	}
}

// take returns the answers since the last take and the tasks accepted.
func (c *soakCounts) take() (requests, errs int64, codes map[string]int64, accepted int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	requests, errs, codes = c.requests, c.errors, c.codes
	c.requests, c.errors, c.codes = 0, 0, map[string]int64{}
	return requests, errs, codes, int64(len(c.ids)) + c.noID
}

// RunSoak starts `up`'s platform in this process, drives a steady mixed
// load through its balancer for opts.Duration, samples the process and
// the platform every opts.Sample, checks that every task it submitted
// finished, and writes the report (report.md, report.json, a chart) to
// opts.Out.
func RunSoak(ctx context.Context, opts SoakOptions) (*Report, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "scalelab-soak-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	r := &Report{Scenario: "soak", Title: "soak: `up` under a steady mixed load, its resources sampled", Started: time.Now(),
		Machine: thisMachine(), Options: map[string]string{
			"duration": opts.Duration.String(), "sample": opts.Sample.String(), "rate": fmt.Sprint(opts.Rate),
			"warm_up": fmt.Sprint(opts.WarmUp), "drain": opts.Drain.String(), "connections": fmt.Sprint(opts.Connections),
			"seed_rows": fmt.Sprint(opts.SeedRows),
		}}
	e := &env{ctx: ctx, dataDir: dir, report: r, opts: Options{Duration: opts.Duration, Connections: opts.Connections,
		SeedRows: opts.SeedRows, Progress: opts.Progress, Log: opts.Log, BcryptSlots: opts.BcryptSlots}}
	t, err := e.start(map[string]string{}, func(c *platform.Config) { c.Cache.Mode = cache.ModeKVLocal })
	if err != nil {
		return nil, err
	}
	defer t.stop()
	s := &Soak{Rate: opts.Rate, Mix: soakMix}
	r.Soak = s
	counts := &soakCounts{codes: map[string]int64{}}
	e.warm(t, "/data")
	if s.Rate == 0 {
		peak := e.measure(t, Load{Name: "peak: mixed load, closed loop", Group: "peak", Variant: "closed loop",
			Targets: t.soakTargets(), Duration: opts.PeakFor, OnAnswer: counts.answer}, map[string]string{"mix": soakMix})
		s.PeakRate = peak.Throughput
		s.Rate = max(1, int(peak.Throughput/2))
		r.finding("Peak of the mixed load on this machine: %.0f answers/s over %v with %d connections; the soak runs at half of it, %d/s.",
			peak.Throughput, opts.PeakFor, opts.Connections, s.Rate)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("bench: soak interrupted: %w", ctx.Err())
		}
	}
	counts.take() // the peak's answers are not the soak's samples (its tasks are checked with the others)

	// The load runs a sample longer than asked and is stopped right after
	// the last sample: every sample, the last included, sees the load
	// running (its goroutines and connections), not a platform at rest.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loaded := make(chan struct{})
	began := time.Now()
	go func() {
		defer close(loaded)
		e2 := *e
		e2.ctx = loadCtx
		e2.measure(t, Load{Name: "soak: mixed load", Group: "soak", Variant: fmt.Sprintf("%d/s", s.Rate),
			Targets: t.soakTargets(), Rate: s.Rate, Duration: opts.Duration + opts.Sample, OnAnswer: counts.answer},
			map[string]string{"mix": soakMix})
	}()
	js, _ := jetstream.New(t.p.Admin) // fails only on bad options
	// The first sample is one --sample in, not at 0 s: at 0 s the load
	// has not started, and a base without it would call its own
	// connections and goroutines growth.
	n := int(opts.Duration / opts.Sample)
	for i := 1; i <= n; i++ {
		select {
		case <-time.After(time.Until(began.Add(time.Duration(i) * opts.Sample))):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		s.Samples = append(s.Samples, e.sample(t, js, counts, time.Since(began)))
		// A heap profile at the end of warm-up and one at the end say
		// what a growing heap holds: go tool pprof -base heap-warmup.pprof heap-end.pprof.
		if i == max(1, int(opts.WarmUp*float64(n))) {
			s.HeapProfiles = append(s.HeapProfiles, writeHeapProfile(opts.Out, "heap-warmup.pprof", opts.Log))
		}
		if i == n {
			s.HeapProfiles = append(s.HeapProfiles, writeHeapProfile(opts.Out, "heap-end.pprof", opts.Log))
		}
	}
	stopLoad()
	<-loaded
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: soak interrupted: %w", err)
	}
	// The answers after the last sample (the load stopping) are in the
	// run's totals, not in a sample.
	s.Verdicts, s.NotFlat, s.WarmUpSeconds = soakVerdicts(s.Samples, opts.WarmUp)
	s.Tasks = e.checkTasks(t, counts, opts.Drain)

	soakFindings(r, s, opts)
	soakChart(r, s)
	r.Seconds = time.Since(r.Started).Round(time.Second).Seconds()
	if err := r.write(opts.Out); err != nil {
		return nil, err
	}
	return r, nil
}

// sample reads the process and the platform now, and takes the answers
// counted since the sample before.
func (e *env) sample(t *target, js jetstream.JetStream, c *soakCounts, at time.Duration) SoakSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := SoakSample{Seconds: math.Round(at.Seconds()*10) / 10, RSSBytes: rss(), HeapInuseBytes: ms.HeapInuse,
		Goroutines: runtime.NumGoroutine(), OpenFDs: openFDs()}
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	defer cancel()
	if info, err := js.AccountInfo(ctx); err == nil {
		s.JetStreamBytes = info.Store
	} else {
		e.opts.Log.Warn("soak: jetstream account info", "err", err)
	}
	s.TasksFinished = finishedTasks(ctx, t)
	s.Requests, s.Errors, s.Codes, s.TasksAccepted = c.take()
	return s
}

// rss is this process's resident set (VmRSS), or 0 where there is no
// /proc.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// openFDs counts this process's open file descriptors, or 0 where there
// is no /proc.
func openFDs() int {
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return max(0, len(d)-1) // the directory read itself held one
}

// finishedTasks sums the workers' final attempts (their process
// service's stats, as the dashboard reads them).
func finishedTasks(ctx context.Context, t *target) int64 {
	subject, err := micro.ControlSubject(micro.StatsVerb, "process", "")
	if err != nil {
		return 0
	}
	replies, _ := natsconn.Gather(ctx, t.p.Admin, subject, nil, natsconn.GatherOptions{First: time.Second, Stall: 100 * time.Millisecond})
	var n int64
	for _, msg := range replies {
		var st micro.Stats
		if json.Unmarshal(msg.Data, &st) != nil {
			continue
		}
		for _, ep := range st.Endpoints {
			var w worker.TaskStats
			if len(ep.Data) > 0 && json.Unmarshal(ep.Data, &w) == nil {
				n += int64(w.Succeeded + w.Failed + w.Dead + w.Cancelled)
			}
		}
	}
	return n
}

// checkTasks reads every submitted task's record until all are final or
// drain has passed; those still not final are lost.
func (e *env) checkTasks(t *target, c *soakCounts, drain time.Duration) SoakTasks {
	c.mu.Lock()
	ids := append([]string(nil), c.ids...)
	noID := c.noID
	c.mu.Unlock()
	out, _ := checkTaskStates(e.ctx, t.url, t.token, ids, noID, drain, e.opts.Log)
	return out
}

// checkTaskStates reads the records of ids through the balancer at url
// until all are final or drain has passed; those still not final are
// lost, as are noID accepted tasks whose id is unknown. It also returns
// each task's last state read, in the order of ids.
func checkTaskStates(ctx context.Context, url, token string, ids []string, noID int64, drain time.Duration, log *slog.Logger) (SoakTasks, []task.State) {
	out := SoakTasks{Accepted: int64(len(ids)) + noID, NoID: noID, Final: map[string]int64{}}
	hc := &http.Client{Timeout: 10 * time.Second}
	states := make([]task.State, len(ids))
	var failures atomic.Int64
	began := time.Now()
	deadline := began.Add(drain)
	pending := make([]int, len(ids))
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 && ctx.Err() == nil {
		parallel(len(pending), func(k int) {
			i := pending[k]
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/tasks/"+ids[i], nil)
			if err != nil {
				return
			}
			req.Header.Set("Authorization", "Bearer "+token)
			res, err := hc.Do(req)
			if err != nil {
				failures.Add(1)
				return
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
			var rec struct {
				State task.State `json:"state"`
			}
			if res.StatusCode != http.StatusOK || json.Unmarshal(b, &rec) != nil {
				failures.Add(1)
				log.Warn("soak: read task", "id", ids[i], "status", res.StatusCode, "body", string(bytes.TrimSpace(b)))
				return
			}
			states[i] = rec.State
		})
		var still []int
		for _, i := range pending {
			if !states[i].Terminal() {
				still = append(still, i)
			}
		}
		pending = still
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-time.After(500 * time.Millisecond): // the workers' pace, not a test's wait
		case <-ctx.Done():
		}
	}
	out.DrainSeconds = math.Round(time.Since(began).Seconds()*10) / 10
	out.CheckFailures = failures.Load()
	for i, st := range states {
		if st.Terminal() {
			out.Final[string(st)]++
			continue
		}
		out.Lost++
		if len(out.LostIDs) < 20 {
			out.LostIDs = append(out.LostIDs, ids[i])
		}
	}
	out.Lost += out.NoID
	return out, states
}

// soakFindings states the verdict in sentences.
func soakFindings(r *Report, s *Soak, opts SoakOptions) {
	if len(s.Verdicts) == 0 {
		r.finding("Too few samples (%d) for a verdict: run longer than --sample.", len(s.Samples))
	} else if len(s.NotFlat) == 0 {
		r.finding("Flat: every sampled metric (%s) grew at most %.0f%% from the end of warm-up (%.0f s) to the end of the %v run.",
			verdictNames(s.Verdicts), 100*FlatTolerance, s.WarmUpSeconds, opts.Duration)
	} else {
		for _, v := range s.Verdicts {
			if !v.Flat {
				r.finding("Not flat: %s grew %+.1f%% (%s at %.0f s → %s at the end), over the %.0f%% allowed.",
					v.Metric, 100*v.Growth, formatMetric(v.Metric, v.Base), v.BaseAt, formatMetric(v.Metric, v.End), 100*FlatTolerance)
			}
		}
	}
	if len(s.Verdicts) > 0 {
		js := s.Verdicts[len(s.Verdicts)-1]
		base := slices.IndexFunc(s.Samples, func(x SoakSample) bool { return x.Seconds == js.BaseAt })
		last := s.Samples[len(s.Samples)-1]
		if tasks := last.TasksAccepted - s.Samples[base].TasksAccepted; !js.Flat && tasks > 0 {
			r.finding("The JetStream store grew %.0f bytes per task accepted after warm-up (%d tasks): task records are kept %v "+
				"after their last update (task.DefaultProvisionConfig's Retention), so the store grows with the tasks run until "+
				"then, bounded by the bucket's and the queue's byte limits (1 GiB each). A leak would be growth without tasks.",
				(js.End-js.Base)/float64(tasks), tasks, task.DefaultProvisionConfig().Retention)
		}
	}
	var codes, errs, n5xx int64
	for _, x := range s.Samples {
		codes += x.Requests
		errs += x.Errors
		for c, k := range x.Codes {
			if strings.HasPrefix(c, "5") {
				n5xx += k
			}
		}
	}
	r.finding("Requests in the samples: %d at %d/s, %d not 2xx (%d of them 5xx).", codes, s.Rate, errs, n5xx)
	tk := s.Tasks
	r.finding("Tasks: %d accepted, %s final after a drain of %.1f s, %d lost (accepted but not final).",
		tk.Accepted, formatCounts(tk.Final), tk.DrainSeconds, tk.Lost)
}

func verdictNames(vs []SoakVerdict) string {
	var names []string
	for _, v := range vs {
		names = append(names, v.Metric)
	}
	return strings.Join(names, ", ")
}

func formatCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range []string{"succeeded", "failed", "dead", "cancelled"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	return strings.Join(parts, ", ")
}

// formatMetric prints a byte count in MiB, anything else as a number.
func formatMetric(metric string, v float64) string {
	if strings.HasSuffix(metric, "_bytes") {
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	}
	return fmt.Sprintf("%.0f", v)
}

// soakChart draws each metric relative to its value at the end of
// warm-up, so five units share one axis and a leak is a rising line.
func soakChart(r *Report, s *Soak) {
	if len(s.Verdicts) == 0 {
		return
	}
	at := make([]float64, len(s.Samples))
	for i, x := range s.Samples {
		at[i] = x.Seconds / 60
	}
	var rows []series
	for j, m := range soakMetrics {
		base := s.Verdicts[j].Base
		row := series{name: m.name}
		for _, x := range s.Samples {
			v := 0.0
			if base > 0 {
				v = 100 * m.get(x) / base
			}
			row.values = append(row.values, v)
		}
		rows = append(rows, row)
	}
	r.chart("soak-resources.png", "Resources, % of their value at the end of warm-up", lines("minutes into the run", "% of warm-up", at, rows))
}

// soakMarkdown writes the soak's samples and verdicts.
func (s *Soak) markdown(w io.Writer) {
	fmt.Fprintf(w, "## Soak\n\nSteady load: %d requests/s", s.Rate)
	if s.PeakRate > 0 {
		fmt.Fprintf(w, " (half the measured peak of %.0f/s)", s.PeakRate)
	}
	fmt.Fprintf(w, "; mix: %s. RSS, heap and goroutines are this process's: the platform and the load generator share it.\n\n", s.Mix)
	fmt.Fprintf(w, "| time | RSS MiB | heap MiB | goroutines | fds | JetStream MiB | requests | not 2xx | codes | tasks accepted | tasks finished |\n")
	fmt.Fprintf(w, "|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|\n")
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	for _, x := range s.Samples {
		sec := int(math.Round(x.Seconds))
		fmt.Fprintf(w, "| %d:%02d | %.1f | %.1f | %d | %d | %.2f | %d | %d | %s | %d | %d |\n", sec/60, sec%60, mib(x.RSSBytes),
			mib(x.HeapInuseBytes), x.Goroutines, x.OpenFDs, mib(x.JetStreamBytes), x.Requests, x.Errors, formatMap64(x.Codes),
			x.TasksAccepted, x.TasksFinished)
	}
	fmt.Fprintf(w, "\nVerdict: growth from the end of warm-up (the sample at %.0f s or before) to the last sample; flat is at most %.0f%%.\n\n",
		s.WarmUpSeconds, 100*FlatTolerance)
	fmt.Fprintf(w, "| metric | at end of warm-up | at the end | growth | verdict |\n|---|--:|--:|--:|---|\n")
	for _, v := range s.Verdicts {
		verdict := "flat"
		if !v.Flat {
			verdict = "**NOT FLAT**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %+.1f%% | %s |\n", v.Metric, formatMetric(v.Metric, v.Base), formatMetric(v.Metric, v.End),
			100*v.Growth, verdict)
	}
	tk := s.Tasks
	fmt.Fprintf(w, "\nTasks: %d accepted; final: %s; lost (accepted, not final after %.1f s of drain): %d", tk.Accepted,
		formatCounts(tk.Final), tk.DrainSeconds, tk.Lost)
	if len(tk.LostIDs) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(tk.LostIDs, ", "))
	}
	fmt.Fprintf(w, ".\n\n")
}

func formatMap64(m map[string]int64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s×%d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
