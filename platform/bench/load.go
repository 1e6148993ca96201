package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// Load is one measured run of HTTP load against the platform.
type Load struct {
	// Name names the run in reports, e.g. "cache=kv+local GET /items";
	// compare matches two reports' runs by it.
	Name string
	// Group and Variant place the run in a chart: one group of bars per
	// Group, one bar per Variant.
	Group, Variant string
	// Targets gives each request. Vegeta calls it from many goroutines.
	Targets vegeta.Targeter
	// Rate is the requests per second sent whatever the answers (open
	// loop); zero sends as fast as Connections allow (closed loop), which
	// is how throughput is measured.
	Rate int
	// Connections is the most requests in flight at once.
	Connections int
	// Duration is how long the load runs.
	Duration time.Duration
	// During, when set, runs once the load has run for DuringAfter, in its
	// own goroutine: a scenario stops a gateway with it.
	During      func()
	DuringAfter time.Duration
	// OnAnswer, when set, sees every answer as it is counted, with up to
	// 4 KiB of its body (otherwise bodies are not read): the soak counts
	// outcomes per sample and keeps the ids of the tasks it submitted.
	// It runs on the run's own goroutine, so it must be quick.
	OnAnswer func(*vegeta.Result)
}

// Result is what one Load measured: the raw figures of the JSON report.
type Result struct {
	Name    string `json:"name"`
	Group   string `json:"group"`
	Variant string `json:"variant"`
	// Config is the exact setting of this run (mode, gateways, policy...).
	Config map[string]string `json:"config"`

	Rate        int     `json:"rate"` // 0: closed loop, as fast as it goes
	Connections int     `json:"connections"`
	Seconds     float64 `json:"seconds"` // from the first request sent to the last answer

	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"` // 2xx answers
	Errors   int64 `json:"errors"`
	// Codes counts answers by HTTP status ("0" is no answer at all).
	Codes map[string]int64 `json:"codes"`
	// ErrorSamples are a few distinct errors, to say what went wrong.
	ErrorSamples []string `json:"error_samples,omitempty"`
	// Throughput is OK answers per second.
	Throughput float64 `json:"throughput"`
	// Latency are percentiles of every request's latency, from an HDR
	// histogram, in milliseconds.
	Latency Latency `json:"latency_ms"`
	// Cache counts the X-Cache answers (local, kv, miss); HitRatio is the
	// share of local and kv among them, nil when no answer had one.
	Cache    map[string]int64 `json:"cache,omitempty"`
	HitRatio *float64         `json:"hit_ratio,omitempty"`
	// Gateways counts answers by X-Served-By: the balancer's distribution.
	Gateways map[string]int64 `json:"gateways,omitempty"`
	// Timeline is the run cut in equal slices of TimelineStep seconds:
	// answers OK, errors and answers per gateway in each.
	Timeline     []Slice `json:"timeline,omitempty"`
	TimelineStep float64 `json:"timeline_step_seconds,omitempty"`
	// Metrics are a scenario's own figures (db_queries_per_request,
	// drain_tasks_per_s, ...).
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Latency holds latency percentiles in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Slice is one slice of a run's timeline.
type Slice struct {
	OK       int64            `json:"ok"`
	Errors   int64            `json:"errors"`
	Gateways map[string]int64 `json:"gateways,omitempty"`
}

// Share is each gateway's share of the answers, in [0, 1].
func (r Result) Share() map[string]float64 {
	var total int64
	for _, n := range r.Gateways {
		total += n
	}
	out := map[string]float64{}
	for g, n := range r.Gateways {
		out[g] = float64(n) / float64(total)
	}
	return out
}

// histogram records latencies in microseconds, from 1 µs to 1 min with 3
// significant digits: HDR keeps the tail exact where an average hides it.
type histogram struct{ h *hdrhistogram.Histogram }

func newHistogram() histogram {
	return histogram{hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)}
}

func (h histogram) record(d time.Duration) {
	_ = h.h.RecordValue(max(1, min(d.Microseconds(), h.h.HighestTrackableValue()))) // clamped: never out of range
}

func (h histogram) latency() Latency {
	ms := func(us int64) float64 { return math.Round(float64(us)) / 1000 }
	return Latency{
		P50: ms(h.h.ValueAtQuantile(50)), P90: ms(h.h.ValueAtQuantile(90)), P99: ms(h.h.ValueAtQuantile(99)),
		P999: ms(h.h.ValueAtQuantile(99.9)), Max: ms(h.h.Max()), Mean: math.Round(h.h.Mean()) / 1000,
	}
}

// tally adds up answers as they come: the counts, histogram and timeline
// of a Result.
type tally struct {
	res     Result
	step    time.Duration // of the timeline
	hist    histogram
	start   time.Time
	last    time.Time
	samples map[string]bool
}

// newTally starts a tally of a run of about d that began at start (zero:
// at the first answer's start): its timeline has 20 slices, of 50 ms to
// 1 s each, from start.
func newTally(name string, d time.Duration, start time.Time) *tally {
	return &tally{res: Result{Name: name, Codes: map[string]int64{}, Cache: map[string]int64{}, Gateways: map[string]int64{}},
		step: min(max(d/20, 50*time.Millisecond), time.Second).Round(10 * time.Millisecond), start: start,
		hist: newHistogram(), samples: map[string]bool{}}
}

// add counts one answer: began is when it was sent, took how long it took,
// code its status (0 for none), errText why it failed, header its headers.
func (t *tally) add(began time.Time, took time.Duration, code int, errText string, cacheHdr, servedBy string) {
	if t.start.IsZero() {
		t.start = began
	}
	if end := began.Add(took); end.After(t.last) {
		t.last = end
	}
	t.res.Requests++
	t.res.Codes[fmt.Sprint(code)]++
	t.hist.record(took)
	// Answers come in the order they end, not the order they began; the
	// start is fixed, so a slice never moves once counted.
	i := max(0, int(began.Sub(t.start)/t.step))
	for len(t.res.Timeline) <= i {
		t.res.Timeline = append(t.res.Timeline, Slice{Gateways: map[string]int64{}})
	}
	slice := &t.res.Timeline[i]
	if servedBy != "" {
		slice.Gateways[servedBy]++
	}
	if code >= 200 && code < 300 {
		t.res.OK++
		slice.OK++
	} else {
		t.res.Errors++
		slice.Errors++
		if errText == "" {
			errText = fmt.Sprintf("HTTP %d", code)
		}
		if len(t.samples) < 5 && !t.samples[errText] {
			t.samples[errText] = true
			t.res.ErrorSamples = append(t.res.ErrorSamples, errText)
		}
	}
	if cacheHdr != "" {
		t.res.Cache[cacheHdr]++
	}
	if servedBy != "" {
		t.res.Gateways[servedBy]++
	}
}

// result finishes the tally.
func (t *tally) result() Result {
	r := t.res
	r.TimelineStep = t.step.Seconds()
	r.Seconds = t.last.Sub(t.start).Seconds()
	if r.Seconds > 0 {
		r.Throughput = math.Round(float64(r.OK)/r.Seconds*10) / 10
	}
	r.Latency = t.hist.latency()
	var hits, all int64
	for k, n := range r.Cache {
		all += n
		if k == "local" || k == "kv" {
			hits += n
		}
	}
	if all > 0 {
		ratio := math.Round(float64(hits)/float64(all)*10000) / 10000
		r.HitRatio = &ratio
	}
	sort.Strings(r.ErrorSamples)
	if len(r.Cache) == 0 {
		r.Cache = nil
	}
	if len(r.Gateways) == 0 {
		r.Gateways = nil
	}
	return r
}

// run sends l's load and measures the answers. It stops early, with what
// it measured so far, when ctx ends. progress, when not nil, gets a bar.
func (l Load) run(ctx context.Context, progress io.Writer) Result {
	conns := max(l.Connections, 1)
	opts := []func(*vegeta.Attacker){
		vegeta.Connections(conns), vegeta.MaxConnections(conns), vegeta.KeepAlive(true), vegeta.HTTP2(false),
		vegeta.Timeout(30 * time.Second), vegeta.MaxBody(0), vegeta.Redirects(vegeta.NoFollow),
	}
	if l.OnAnswer != nil {
		opts = append(opts, vegeta.MaxBody(4<<10)) // a task id, not a /data page
	}
	pace := vegeta.Rate{Freq: l.Rate, Per: time.Second}
	if l.Rate <= 0 {
		// Closed loop: exactly conns requests in flight, each worker
		// sending its next as soon as its last is answered.
		pace = vegeta.Rate{Freq: 0, Per: time.Second}
		opts = append(opts, vegeta.Workers(uint64(conns)), vegeta.MaxWorkers(uint64(conns)))
	} else {
		opts = append(opts, vegeta.Workers(uint64(min(conns, 16))), vegeta.MaxWorkers(uint64(conns)))
	}
	atk := vegeta.NewAttacker(opts...)
	began := time.Now()
	t := newTally(l.Name, l.Duration, began)
	bar := newBar(progress, l.Name, l.Duration)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	if l.During != nil {
		timer := time.AfterFunc(l.DuringAfter, l.During)
		defer timer.Stop()
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	results := atk.Attack(l.Targets, pace, l.Duration, l.Name)
	for {
		select {
		case res, ok := <-results:
			if !ok {
				bar.finish()
				r := t.result()
				r.Group, r.Variant, r.Rate, r.Connections = l.Group, l.Variant, l.Rate, conns
				return r
			}
			t.add(res.Timestamp, res.Latency, int(res.Code), res.Error, res.Headers.Get("X-Cache"), res.Headers.Get("X-Served-By"))
			if l.OnAnswer != nil {
				l.OnAnswer(res)
			}
		case <-tick.C:
			bar.set(time.Since(began))
		}
	}
}

// bar is a progress bar over a run's duration, or nothing.
type bar struct{ b *progressbar.ProgressBar }

func newBar(w io.Writer, name string, d time.Duration) bar {
	if w == nil {
		return bar{}
	}
	return bar{progressbar.NewOptions64(d.Milliseconds(),
		progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(fmt.Sprintf("%-40s", name)),
		progressbar.OptionSetWidth(30), progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(false), progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))}
}

func (b bar) set(elapsed time.Duration) {
	if b.b != nil {
		_ = b.b.Set64(min(elapsed.Milliseconds(), b.b.GetMax64()))
	}
}

func (b bar) finish() {
	if b.b != nil {
		_ = b.b.Finish()
	}
}

// checkLoopback refuses a target that is not on this machine: the load
// generator is for the lab's own platform, never for someone else's host.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bench: --url %q is not an http(s) URL", raw)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("bench: --url %q: load is only sent to this machine (127.0.0.1, ::1 or localhost)", raw)
}
