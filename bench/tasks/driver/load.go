package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/bench/tasks/internal/measure"
)

// loadConfig is the configuration of `driver run`.
type loadConfig struct {
	URL      string // balancer base URL
	Token    string
	NATS     string // embedded NATS URL of scalelab up
	System   string // the result's system name: scalelab, or scalelab-baseline
	Varz     string // NATS monitoring /varz URL; empty: no message counts
	PID      string // pid of scalelab up, for its CPU time
	N, C     int
	Rate     int // submissions per second; 0: as fast as the C submitters go
	Warmup   int
	Round    int
	Timeout  time.Duration
	Out      string
	TaskBody string
	Client   string // HTTP client for submissions: fasthttp or net/http
	Observe  string // how outcomes are learnt: after or watch
	// Submit is how tasks are submitted: http (POST /longtask through the
	// balancer) or sdk-nats (the Go SDK's NATS client, client.NewNATS: no
	// HTTP, for programs inside the cluster).
	Submit string
}

func runLoad(args []string) error {
	var cfg loadConfig
	fs := flag.NewFlagSet("driver run", flag.ContinueOnError)
	fs.StringVar(&cfg.URL, "url", "", "balancer base URL, e.g. http://127.0.0.1:8000")
	fs.StringVar(&cfg.Token, "token", "", "bearer token (the dev token printed by scalelab up)")
	fs.StringVar(&cfg.NATS, "nats", "", "NATS URL of scalelab up's embedded server")
	fs.StringVar(&cfg.System, "system", "scalelab", "system name of the result (scalelab-baseline: the build of BASELINE)")
	fs.StringVar(&cfg.Varz, "varz", "", "NATS /varz URL for message counts (optional)")
	fs.StringVar(&cfg.PID, "pid", "", "pid of scalelab up, for its CPU time (optional)")
	fs.IntVar(&cfg.N, "n", 10000, "tasks to submit")
	fs.IntVar(&cfg.C, "c", 32, "submissions in flight at once")
	fs.IntVar(&cfg.Rate, "rate", 0, "pace submissions at this many per second (0: as fast as possible)")
	fs.IntVar(&cfg.Warmup, "warmup", 200, "tasks submitted and awaited first, not measured")
	fs.IntVar(&cfg.Round, "round", 0, "round number, copied to the result")
	fs.DurationVar(&cfg.Timeout, "timeout", 3*time.Minute, "give up on the measured phase after this long")
	fs.StringVar(&cfg.Out, "out", "", "append the JSON result line to this file")
	fs.StringVar(&cfg.TaskBody, "body", `{"task":"noop"}`, "POST /longtask body")
	fs.StringVar(&cfg.Client, "client", "fasthttp", "HTTP client for submissions: fasthttp (lighter: it shares the machine with the system under test) or net/http")
	fs.StringVar(&cfg.Observe, "observe", "after", "how the driver learns outcomes: after (read the stored records once the queue is drained: "+
		"no load on the system while it is measured) or watch (watch the tasks bucket live; also gives the watcher's lag)")
	fs.StringVar(&cfg.Submit, "submit", "http", "how tasks are submitted: http (POST /longtask through the balancer) or sdk-nats (the Go SDK's NATS client, no HTTP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.Submit != "http" && cfg.Submit != "sdk-nats" {
		return fmt.Errorf("run: -submit %q: want http or sdk-nats", cfg.Submit)
	}
	if cfg.URL == "" || cfg.Token == "" || cfg.NATS == "" || cfg.N < 1 || cfg.C < 1 {
		return errors.New("run: -url, -token, -nats are required; -n and -c must be positive")
	}
	if cfg.Client != "fasthttp" && cfg.Client != "net/http" {
		return fmt.Errorf("run: -client %q: want fasthttp or net/http", cfg.Client)
	}
	if cfg.Observe != "after" && cfg.Observe != "watch" {
		return fmt.Errorf("run: -observe %q: want after or watch", cfg.Observe)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout+time.Minute)
	defer cancel()

	// scalelab up's NATS wants a user: the operator's, from the banner.
	opts := []nats.Option{nats.Name("bench-driver")}
	if u := os.Getenv("SCALELAB_NATS_USER"); u != "" {
		opts = append(opts, nats.UserInfo(u, os.Getenv("SCALELAB_NATS_PASSWORD")))
	}
	nc, err := nats.Connect(cfg.NATS, opts...)
	if err != nil {
		return fmt.Errorf("connect %s: %w", cfg.NATS, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	tr := newTracker()
	var obs observer = &afterObserver{js: js, tr: tr, timeout: cfg.Timeout}
	if cfg.Observe == "watch" {
		wo, err := startWatch(ctx, js, tr, cfg.Timeout)
		if err != nil {
			return err
		}
		defer wo.stop()
		obs = wo
	}

	hc := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        2 * cfg.C,
			MaxIdleConnsPerHost: 2 * cfg.C,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	sub := submitter{post: netHTTPPost(hc, cfg.URL+"/longtask", cfg.Token, []byte(cfg.TaskBody))}
	if cfg.Client == "fasthttp" {
		sub.post = fastHTTPPost(2*cfg.C, cfg.URL+"/longtask", cfg.Token, []byte(cfg.TaskBody))
	}
	if cfg.Submit == "sdk-nats" {
		direct, err := sdkNATSSubmit(nc, []byte(cfg.TaskBody))
		if err != nil {
			return err
		}
		defer direct.Close()
		sub.direct = direct.submit
	}

	if cfg.Warmup > 0 {
		ph := tr.begin(cfg.Warmup)
		if err := obs.begin(ctx); err != nil {
			return err
		}
		sub.run(ctx, ph, cfg.C, time.Now(), 0)
		if err := obs.settled(ctx, ph); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if err := obs.collect(ctx, ph); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}

	v0, err := readVarz(ctx, hc, cfg.Varz)
	if err != nil {
		return err
	}
	if err := obs.begin(ctx); err != nil {
		return err
	}
	w0 := obs.received()
	u0 := measure.ReadUsage(cfg.PID)

	ph := tr.begin(cfg.N)
	start := time.Now()
	lastAccepted := sub.run(ctx, ph, cfg.C, start, cfg.Rate)
	werr := obs.settled(ctx, ph)

	used := measure.ReadUsage(cfg.PID).Since(u0)
	// Let the last acks and their replies land before counting messages.
	time.Sleep(200 * time.Millisecond)
	v1, err := readVarz(ctx, hc, cfg.Varz)
	if err != nil {
		return err
	}
	w1 := obs.received()
	// After the counters: its reads are not the system's load. Even after a
	// timeout, so the result shows the outcomes that did arrive.
	if cerr := obs.collect(ctx, ph); werr == nil {
		werr = cerr
	}

	r := ph.result(start)
	r.System, r.Round, r.C, r.Rate = cfg.System, cfg.Round, cfg.C, cfg.Rate
	if cfg.Rate > 0 {
		r.System = fmt.Sprintf("%s@%d/s", cfg.System, cfg.Rate)
	}
	if acc := ph.accepted(); acc > 0 {
		r.SubmitPerS = float64(acc) / lastAccepted.Sub(start).Seconds()
	}
	r.SUTCPU, r.DriverCPU, r.SUTSyscalls = used.SUTCPU, used.SelfCPU, used.SUTSyscalls
	r.MachineBusy, r.MachineSteal = used.MachineBusy, used.MachineSteal
	if cfg.Varz != "" {
		r.InClientMsgs, r.OutClientMsgs = v1.InClientMsgs-v0.InClientMsgs, v1.OutClientMsgs-v0.OutClientMsgs
		r.WatchMsgs = w1 - w0
	}
	fmt.Fprintf(os.Stderr, "%s round %d: %d ok, %d failed, %d errors, %.0f tasks/s, p50 %.1f ms, p99 %.1f ms, submit %.0f/s\n",
		r.System, cfg.Round, r.OK, r.Failed, r.Errors, r.TasksPerSec, r.P50ms, r.P99ms, r.SubmitPerS)
	if cfg.Out != "" {
		if err := measure.AppendResult(cfg.Out, r); err != nil {
			return err
		}
	}
	if werr != nil {
		return fmt.Errorf("measured phase: %w", werr)
	}
	return nil
}

// submitter POSTs tasks to /longtask, or submits them directly.
type submitter struct {
	// post sends one task and returns the answer's status and body.
	post func(ctx context.Context) (status int, body []byte, err error)
	// direct, when set, submits one task without HTTP and returns its id.
	direct func(ctx context.Context) (string, error)
}

// run submits ph's tasks with c requests in flight (paced at rate per
// second from start, if rate > 0) and returns when every submission has
// been answered; it returns the time of the last 202.
func (s submitter) run(ctx context.Context, ph *phase, c int, start time.Time, rate int) time.Time {
	return measure.Submit(ctx, ph.n, c, start, rate, func(i int) time.Time {
		t0 := time.Now()
		id, err := s.submit(ctx)
		if err != nil {
			ph.fail(i, err)
			return time.Time{}
		}
		t1 := time.Now() // the 202, before the bookkeeping below
		ph.accept(i, id, t0)
		return t1
	})
}

func (s submitter) submit(ctx context.Context) (string, error) {
	if s.direct != nil {
		return s.direct(ctx)
	}
	status, b, err := s.post(ctx)
	if err != nil {
		return "", err
	}
	if status != http.StatusAccepted {
		return "", fmt.Errorf("POST /longtask: %d %s", status, bytes.TrimSpace(b))
	}
	var out struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.TaskID == "" {
		return "", fmt.Errorf("POST /longtask: no task_id in %q", b)
	}
	return out.TaskID, nil
}

// netHTTPPost posts body to url with net/http's client.
func netHTTPPost(hc *http.Client, url, token string, body []byte) func(context.Context) (int, []byte, error) {
	return func(ctx context.Context) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		res, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, b, err
	}
}

// fastHTTPPost posts body to url with fasthttp's client, which writes and
// reads in the caller's goroutine: net/http's client hands every request
// to two goroutines per connection, and the driver shares the two cores
// with the system it measures (about a fifth of the machine's CPU went to
// the driver with net/http).
func fastHTTPPost(conns int, url, token string, body []byte) func(context.Context) (int, []byte, error) {
	fc := &fasthttp.Client{
		MaxConnsPerHost:     conns,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
		MaxIdleConnDuration: 90 * time.Second,
	}
	auth := "Bearer " + token
	return func(ctx context.Context) (int, []byte, error) {
		req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(res)
		req.SetRequestURI(url)
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.Set("Authorization", auth)
		req.Header.SetContentType("application/json")
		req.SetBodyRaw(body)
		timeout := 30 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(d))
		}
		if err := fc.DoTimeout(req, res, timeout); err != nil {
			return 0, nil, err
		}
		return res.StatusCode(), bytes.Clone(res.Body()), nil
	}
}

// recordState returns the "state" of a task record as scalelab stores it
// (encoding/json, fields in Record's order: "id" and "type", both plain
// words, come first, so the first "state" key is the record's). Cheaper
// than decoding the record: the watcher sees every record update.
func recordState(b []byte) string {
	const key = `"state":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return ""
	}
	b = b[i+len(key):]
	j := bytes.IndexByte(b, '"')
	if j < 0 {
		return ""
	}
	return string(b[:j])
}

// tracker matches task ids from HTTP answers with outcomes from the watch,
// in whichever order they arrive: a no-op task often succeeds before its
// 202 reaches the driver.
type tracker struct {
	mu   sync.Mutex
	ph   *phase
	seen map[string]outcome // outcomes of ids not (yet) known to a phase
}

type outcome struct {
	ok            bool
	stored, noted time.Time
}

func newTracker() *tracker { return &tracker{seen: make(map[string]outcome)} }

// begin starts a phase of n tasks; the previous phase must be over.
func (t *tracker) begin(n int) *phase {
	ph := &phase{t: t, n: n, submitted: make([]time.Time, n), out: make([]outcome, n),
		done: make([]bool, n), pending: make(map[string]int, n), remaining: n, all: make(chan struct{})}
	t.mu.Lock()
	t.ph = ph
	t.mu.Unlock()
	return ph
}

// finish records the outcome of id.
func (t *tracker) finish(id string, ok bool, stored, noted time.Time) {
	o := outcome{ok: ok, stored: stored, noted: noted}
	t.mu.Lock()
	defer t.mu.Unlock()
	if ph := t.ph; ph != nil {
		if i, found := ph.pending[id]; found {
			delete(ph.pending, id)
			ph.settle(i, o)
			return
		}
	}
	if _, dup := t.seen[id]; !dup {
		t.seen[id] = o
	}
}

// phase is one batch of tasks: the warm-up or the measured run.
type phase struct {
	t         *tracker
	n         int
	submitted []time.Time
	out       []outcome
	done      []bool
	errs      []error
	pending   map[string]int
	remaining int
	all       chan struct{}
}

// accept notes that task i was accepted as id, submitted at t0.
func (ph *phase) accept(i int, id string, t0 time.Time) {
	ph.t.mu.Lock()
	defer ph.t.mu.Unlock()
	ph.submitted[i] = t0
	if o, found := ph.t.seen[id]; found {
		delete(ph.t.seen, id)
		ph.settle(i, o)
		return
	}
	ph.pending[id] = i
}

// fail notes that task i was not accepted.
func (ph *phase) fail(i int, err error) {
	ph.t.mu.Lock()
	defer ph.t.mu.Unlock()
	ph.errs = append(ph.errs, err)
	ph.remaining--
	if ph.remaining == 0 {
		close(ph.all)
	}
}

// settle records the outcome of task i; the caller holds the lock.
func (ph *phase) settle(i int, o outcome) {
	if ph.done[i] {
		return
	}
	ph.done[i], ph.out[i] = true, o
	ph.remaining--
	if ph.remaining == 0 {
		close(ph.all)
	}
}

func (ph *phase) accepted() int {
	ph.t.mu.Lock()
	defer ph.t.mu.Unlock()
	return ph.n - len(ph.errs)
}

// complete reports whether every task of the phase has an outcome or was
// refused.
func (ph *phase) complete() bool {
	select {
	case <-ph.all:
		return true
	default:
		return false
	}
}

// wait blocks until every task of the phase has an outcome or was refused.
func (ph *phase) wait(ctx context.Context, timeout time.Duration) error {
	if ph.complete() {
		return nil
	}
	select {
	case <-ph.all:
		return nil
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	ph.t.mu.Lock()
	defer ph.t.mu.Unlock()
	return fmt.Errorf("%d of %d tasks without an outcome after %v", ph.remaining, ph.n, timeout)
}

// result computes throughput and latency of the tasks that succeeded.
func (ph *phase) result(start time.Time) Result {
	ph.t.mu.Lock()
	defer ph.t.mu.Unlock()
	r := Result{N: ph.n, Errors: len(ph.errs)}
	var lat, lag []time.Duration
	var end time.Time
	for i := range ph.n {
		if !ph.done[i] {
			continue
		}
		o := ph.out[i]
		if !o.ok {
			r.Failed++
			continue
		}
		r.OK++
		lat = append(lat, o.stored.Sub(ph.submitted[i]))
		lag = append(lag, o.noted.Sub(o.stored))
		if o.stored.After(end) {
			end = o.stored
		}
	}
	if r.OK == 0 {
		return r
	}
	slices.Sort(lat)
	slices.Sort(lag)
	r.Seconds = end.Sub(start).Seconds()
	r.TasksPerSec = float64(r.OK) / r.Seconds
	r.P50ms, r.P99ms, r.MaxMs = measure.Percentile(lat, 0.50), measure.Percentile(lat, 0.99), measure.Ms(lat[len(lat)-1])
	r.WatchLagP50ms = measure.Percentile(lag, 0.50)
	if len(ph.errs) > 0 {
		fmt.Fprintf(os.Stderr, "first submission error: %v\n", ph.errs[0])
	}
	return r
}

// varz is the part of NATS /varz the driver reads.
type varz struct {
	InClientMsgs  int64 `json:"in_client_msgs"`
	OutClientMsgs int64 `json:"out_client_msgs"`
}

func readVarz(ctx context.Context, hc *http.Client, url string) (varz, error) {
	var v varz
	if url == "" {
		return v, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return v, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return v, fmt.Errorf("read %s: %w", url, err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("decode %s: %w", url, err)
	}
	return v, nil
}
