// Command tasklist is the task-listing benchmark of issue #26: it runs the
// platform in this process (platform.Start, as `scalelab up`, with one
// gateway), fills the tasks bucket with -n records (default 1,000,000)
// straight through JetStream as the operator, restarts the platform on
// the same data so the gateway loads its listing index from the full
// bucket, and measures the latency of one page of GET /tasks (-limit 50)
// through the balancer, by filter: sequential requests, then -concurrency
// at once. It prints a Markdown table and writes it to -out.
//
// The records look like a day of real use: -owners owners of which
// "alice" has 10 %, the built-in types and queues, 80 % succeeded, 10 %
// failed, 5 % dead, 3 % queued, 2 % cancelled, created over the bucket's
// retention (24 h) but its last hour. They are written as a worker leaves
// them, not run: the queued ones have no message, so the workers stay
// idle.
//
//	go run ./bench/tasklist -n 20000                  # a quick try
//	bench/tasklist/run.sh                             # the 1,000,000 run, into bench/tasklist/result.md
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/platform"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tasklist:", err)
		os.Exit(1)
	}
}

// options are the benchmark's flags.
type options struct {
	n           int
	owners      int
	requests    int
	concurrency int
	limit       int
	deep        int
	pending     int
	out         string
	dataDir     string
	wait        time.Duration
	logLevel    string
	fillOnly    bool
	commit      string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tasklist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.IntVar(&o.n, "n", 1_000_000, "task records to fill the bucket with")
	fs.IntVar(&o.owners, "owners", 100, "owners of the records (alice has 10 %, the others share the rest)")
	fs.IntVar(&o.requests, "requests", 500, "requests per filter, sequential and again concurrent")
	fs.IntVar(&o.concurrency, "concurrency", 8, "requests at once in the concurrent pass")
	fs.IntVar(&o.limit, "limit", 50, "tasks per page")
	fs.IntVar(&o.deep, "deep", 20, "pages followed before the deep page is measured")
	fs.IntVar(&o.pending, "pending", 4096, "most unacknowledged publishes while filling")
	fs.StringVar(&o.out, "out", "", "also write the result (Markdown) to this file")
	fs.StringVar(&o.dataDir, "data", "", "data directory (default: a temporary one, removed at the end)")
	fs.DurationVar(&o.wait, "wait", 15*time.Minute, "longest wait for the listing to be ready")
	fs.StringVar(&o.logLevel, "log-level", "warn", "the platform's log level")
	fs.StringVar(&o.commit, "commit", "", "the commit the report names (default: the binary's VCS stamp; run.sh passes git's)")
	fs.BoolVar(&o.fillOnly, "fill-only", false, "fill the bucket, report the fill and stop: no listing (the fill alone, or a gateway without GET /tasks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.n < 1 || o.owners < 2 || o.requests < 1 || o.concurrency < 1 || o.limit < 1 || o.deep < 0 || o.pending < 1 {
		return errors.New("-n, -requests, -concurrency, -limit and -pending must be positive, -owners at least 2, -deep not negative")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.dataDir == "" {
		dir, err := os.MkdirTemp("", "scalelab-tasklist-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.dataDir = dir
	}
	b := &bench{o: o, log: log, progress: stderr}
	res, err := b.run(ctx)
	if err != nil {
		return err
	}
	report := res.markdown()
	fmt.Fprint(stdout, report)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(report), 0o644)
	}
	return nil
}

// bench is one run of the benchmark.
type bench struct {
	o        options
	log      *slog.Logger
	progress io.Writer
	cfg      platform.Config
	hc       *http.Client
	admin    string // bearer tokens
	alice    string
}

// result is what a run measured.
type result struct {
	o                   options
	commit              string
	goVersion           string
	procs               int
	fill                time.Duration
	fillErrors          int64
	bucketBytes         uint64
	caughtUp            time.Duration // after the last ack, until the running gateway listed every record
	restart             time.Duration // platform.Start on the full bucket
	loaded              time.Duration // from the restart until GET /tasks answered 200
	rssStart, rssFilled memReading
	rssLoaded           memReading
	rows                []row
}

// memReading is the process's memory at one point.
type memReading struct {
	rss, hwm  int64 // VmRSS and VmHWM of /proc/self/status, bytes
	heapInUse uint64
}

// row is the latency of one filter's page.
type row struct {
	name, token string
	total       int // the tasks matching, from the page's totals ("all", or the state's)
	seq, conc   latencies
}

// latencies sums a set of request durations.
type latencies struct {
	p50, p99, max time.Duration
	rate          float64 // requests per second over the pass
	errors        int
}

func (b *bench) run(ctx context.Context) (*result, error) {
	res := &result{o: b.o, goVersion: runtime.Version(), commit: b.o.commit}
	if res.commit == "" {
		res.commit = commit()
	}
	b.cfg = platform.DefaultConfig()
	b.cfg.BcryptSlots = platform.ReserveLoopProcs(os.Getenv) // as `scalelab up` does
	res.procs = runtime.GOMAXPROCS(0)
	c := &b.cfg
	c.DataDir = b.o.dataDir
	c.BalancerAddr, c.AdminAddr, c.DBAddr, c.CacheAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	c.GatewayAddrs, c.NATSPort, c.NATSHTTPPort = "127.0.0.1:0", -1, 0
	c.Workers, c.SeedRows = 1, 100
	// Room for the records (about 700 bytes each in the store) with the
	// gateways' half kept free, and no rate limit: one token sends all.
	c.MaxTaskBytes = max(c.MaxTaskBytes, int64(b.o.n)*2048)
	c.Limits.PerIP, c.Limits.PerSubject = 0, 0
	secret, err := auth.RandomSecret()
	if err != nil {
		return nil, err
	}
	c.Keys = auth.Keys{Secret: []byte(secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	now := time.Now()
	if b.admin, _, err = c.Keys.Issue("bench-admin", auth.AllScopes, 24*time.Hour, now); err != nil {
		return nil, err
	}
	if b.alice, _, err = c.Keys.Issue("alice", []string{auth.ScopeTasksRead}, 24*time.Hour, now); err != nil {
		return nil, err
	}
	b.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: b.o.concurrency * 2}}

	// 1. Start on an empty bucket and fill it while the gateway follows.
	b.say("starting the platform in %s", c.DataDir)
	p, err := platform.Start(ctx, *c, b.log)
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	defer func() { _ = p.Stop() }()
	if !b.o.fillOnly {
		if _, err := b.waitListing(ctx, p.BalancerURL); err != nil {
			return nil, err
		}
	}
	res.rssStart = readMem()
	start := time.Now()
	if res.fillErrors, err = b.fill(ctx, p.Admin); err != nil {
		return nil, err
	}
	res.fill = time.Since(start)
	res.rssFilled = readMem()
	b.say("filled %d records in %v (%.0f/s); %d publish errors", b.o.n, res.fill.Round(time.Millisecond), float64(b.o.n)/res.fill.Seconds(), res.fillErrors)
	if js, err := jetstream.New(p.Admin); err == nil {
		if kv, err := js.KeyValue(ctx, task.Bucket); err == nil {
			if st, err := kv.Status(ctx); err == nil {
				res.bucketBytes = st.Bytes()
			}
		}
	}
	if b.o.fillOnly {
		return res, nil
	}
	caught := time.Now()
	if err := b.waitTotal(ctx, p.BalancerURL, b.o.n-int(res.fillErrors)); err != nil {
		return nil, err
	}
	res.caughtUp = time.Since(caught)
	b.say("the running gateway listed them all %v after the last ack", res.caughtUp.Round(time.Millisecond))

	// 2. Restart on the full bucket: the gateway loads its index.
	if err := p.Stop(); err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	start = time.Now()
	p, err = platform.Start(ctx, *c, b.log)
	if err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	res.restart = time.Since(start)
	if _, err := b.waitListing(ctx, p.BalancerURL); err != nil {
		return nil, err
	}
	res.loaded = time.Since(start)
	res.rssLoaded = readMem()
	b.say("restarted in %v; GET /tasks answered 200 %v after the restart began", res.restart.Round(time.Millisecond), res.loaded.Round(time.Millisecond))

	// 3. Page latency by filter.
	deep, err := b.cursorAfter(ctx, p.BalancerURL, b.o.deep)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, token, query, count string }{
		{"none", "admin", "", "all"},
		{"state=failed", "admin", "state=failed", "failed"},
		{"own tasks (alice)", "alice", "", "all"},
		{"own tasks (alice), state=dead", "alice", "state=dead", "dead"},
		{"type=report", "admin", "type=report", "all"},
		{"queue=critical", "admin", "queue=critical", "all"},
		{fmt.Sprintf("none, page %d (cursor)", b.o.deep+1), "admin", "cursor=" + url.QueryEscape(deep), "all"},
	} {
		tok := b.admin
		if f.token == "alice" {
			tok = b.alice
		}
		q := "limit=" + strconv.Itoa(b.o.limit)
		if f.query != "" {
			q += "&" + f.query
		}
		r, err := b.measure(ctx, p.BalancerURL+"/tasks?"+q, tok, f.count)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		r.name, r.token = f.name, f.token
		b.say("%-34s sequential p50 %v p99 %v; %d at once p50 %v p99 %v", f.name, r.seq.p50, r.seq.p99, b.o.concurrency, r.conc.p50, r.conc.p99)
		res.rows = append(res.rows, r)
	}
	return res, nil
}

// say prints a progress line.
func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// page is what the benchmark reads of GET /tasks.
type page struct {
	Tasks      []json.RawMessage `json:"tasks"`
	NextCursor string            `json:"next_cursor"`
	Totals     map[string]int    `json:"totals"`
}

// get sends GET url with token and decodes a 200 into out (when not nil).
func (b *bench) get(ctx context.Context, u, token string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := b.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %d %s", u, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(body, out)
	}
	return resp.StatusCode, nil
}

// waitListing polls GET /tasks until it answers 200 (503 while the
// gateway loads its index) and returns that page.
func (b *bench) waitListing(ctx context.Context, base string) (*page, error) {
	deadline := time.Now().Add(b.o.wait)
	var last error
	for time.Now().Before(deadline) {
		var p page
		_, err := b.get(ctx, base+"/tasks?limit=1", b.admin, &p)
		if err == nil {
			return &p, nil
		}
		// 503 while the index loads; the last error says why it never
		// got ready (a gateway without GET /tasks says 404).
		last = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("GET /tasks did not answer 200 within %v: %w", b.o.wait, last)
}

// waitTotal polls GET /tasks until its total is want.
func (b *bench) waitTotal(ctx context.Context, base string, want int) error {
	deadline := time.Now().Add(b.o.wait)
	got, lastSay := -1, time.Now()
	for time.Now().Before(deadline) {
		var p page
		if _, err := b.get(ctx, base+"/tasks?limit=1", b.admin, &p); err == nil {
			if got = p.Totals["all"]; got >= want {
				return nil
			}
		}
		if time.Since(lastSay) >= 5*time.Second {
			lastSay = time.Now()
			b.say("GET /tasks lists %d of %d records", got, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("GET /tasks listed %d of %d records after %v", got, want, b.o.wait)
}

// cursorAfter follows next_cursor over n pages (admin, no filter) and
// returns the cursor of the page after them.
func (b *bench) cursorAfter(ctx context.Context, base string, n int) (string, error) {
	cursor := ""
	for i := range n {
		var p page
		u := base + "/tasks?limit=" + strconv.Itoa(b.o.limit)
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		if _, err := b.get(ctx, u, b.admin, &p); err != nil {
			return "", fmt.Errorf("page %d: %w", i+1, err)
		}
		if p.NextCursor == "" {
			return "", fmt.Errorf("page %d is the last: fill more records or lower -deep", i+1)
		}
		cursor = p.NextCursor
	}
	return cursor, nil
}

// measure sends u -requests times in a row, then -requests times
// -concurrency at once, after a few warm-up requests, and checks the
// first answer's page (count: the totals key that says how many match).
func (b *bench) measure(ctx context.Context, u, token, count string) (row, error) {
	var r row
	var first page
	if _, err := b.get(ctx, u, token, &first); err != nil {
		return r, err
	}
	if len(first.Tasks) == 0 {
		return r, fmt.Errorf("GET %s: an empty page", u)
	}
	r.total = first.Totals[count]
	for range 10 {
		_, _ = b.get(ctx, u, token, nil)
	}
	r.seq = b.pass(ctx, u, token, 1)
	r.conc = b.pass(ctx, u, token, b.o.concurrency)
	return r, ctx.Err()
}

// pass sends -requests GETs of u, workers at a time.
func (b *bench) pass(ctx context.Context, u, token string, workers int) latencies {
	durs := make([]time.Duration, 0, b.o.requests)
	var mu sync.Mutex
	var next, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.o.requests) && ctx.Err() == nil {
				t0 := time.Now()
				_, err := b.get(ctx, u, token, nil)
				d := time.Since(t0)
				if err != nil {
					errs.Add(1)
					continue
				}
				mu.Lock()
				durs = append(durs, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	l := latencies{errors: int(errs.Load()), rate: float64(len(durs)) / time.Since(start).Seconds()}
	if len(durs) > 0 {
		slices.Sort(durs)
		l.p50, l.p99, l.max = quantile(durs, 0.50), quantile(durs, 0.99), durs[len(durs)-1]
	}
	return l
}

// quantile is the nearest-rank q-quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// The records' mix (issue #26's brief).
var (
	stateMix = []weighted[task.State]{{task.Succeeded, 80}, {task.Failed, 10}, {task.Dead, 5}, {task.Queued, 3}, {task.Cancelled, 2}}
	typeMix  = []weighted[string]{{"noop", 50}, {"sleep", 30}, {"report", 20}}
	queueMix = []weighted[string]{{task.DefaultQueue, 60}, {"low", 30}, {"critical", 10}}
	errors3  = []string{
		"dial tcp 10.0.3.17:5432: connect: connection refused",
		"context deadline exceeded (task timeout 30s)",
		`payment provider answered 502: {"error":"upstream unavailable","retry_after":30}`,
		"invalid input: field \"email\" must be an address, got \"bob at example\"",
	}
)

// weighted is a value and its weight in percent.
type weighted[T any] struct {
	v T
	w int
}

// pick is the value of mix that x (0..99) falls on.
func pick[T any](mix []weighted[T], x int) T {
	for _, m := range mix {
		if x < m.w {
			return m.v
		}
		x -= m.w
	}
	return mix[len(mix)-1].v
}

// record is the i-th record of the fill: seeded by i, so two runs write
// the same mix.
func (b *bench) record(r *rand.Rand, now time.Time, retention time.Duration) *task.Record {
	st := pick(stateMix, r.IntN(100))
	typ := pick(typeMix, r.IntN(100))
	owner := "alice"
	if r.IntN(10) != 0 {
		owner = fmt.Sprintf("user%02d", 1+r.IntN(b.o.owners-1))
	}
	created := now.Add(-time.Duration(r.Int64N(int64(retention)))).UTC()
	rec := &task.Record{
		ID: task.NewID(), Type: typ, Queue: pick(queueMix, r.IntN(100)), State: st, MaxAttempts: 3,
		Payload:   json.RawMessage(fmt.Sprintf(`{"task":%q,"duration_ms":%d,"customer":"c-%05d"}`, typ, r.IntN(5000), r.IntN(100000))),
		Owner:     owner,
		RequestID: fmt.Sprintf("%016x", r.Uint64()),
		CreatedAt: created, UpdatedAt: created,
	}
	if st == task.Queued {
		return rec
	}
	started := created.Add(time.Duration(r.IntN(2000)) * time.Millisecond)
	finished := started.Add(time.Duration(1+r.IntN(30000)) * time.Millisecond)
	rec.StartedAt, rec.FinishedAt, rec.UpdatedAt = &started, &finished, finished
	rec.Worker = fmt.Sprintf("worker-%d", 1+r.IntN(4))
	rec.Attempts = 1
	switch st {
	case task.Succeeded:
		rec.Progress = 100
		rec.Result = json.RawMessage(`{"status":"done","items":` + strconv.Itoa(r.IntN(1000)) + `}`)
	case task.Failed, task.Dead:
		rec.Attempts = 3
		rec.Error = "attempt 3 of 3: " + errors3[r.IntN(len(errors3))]
		rec.Progress = r.IntN(100)
	case task.Cancelled:
		rec.Attempts = r.IntN(2)
		rec.Error = "cancelled"
	}
	return rec
}

// fill publishes -n records to the tasks bucket ($KV.tasks.<id>), at most
// -pending unacknowledged at once, and returns how many the server
// refused.
func (b *bench) fill(ctx context.Context, nc *nats.Conn) (int64, error) {
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(b.o.pending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			if failed.Add(1) == 1 {
				b.log.Error("publish refused", "err", err)
			}
		}))
	if err != nil {
		return 0, err
	}
	r := rand.New(rand.NewPCG(26, 1))
	now := time.Now()
	// Created over the bucket's retention but its last hour: a record
	// last written a whole retention ago is one the bucket has expired,
	// and the gateway's index drops it (its sweep goes by updated_at),
	// so records written now but dated a day back would leave the
	// listing while the benchmark runs.
	retention := task.DefaultProvisionConfig().Retention - time.Hour
	start, lastSay := time.Now(), time.Now()
	for i := range b.o.n {
		rec := b.record(r, now, retention)
		body, err := json.Marshal(rec)
		if err != nil {
			return 0, err
		}
		// At -pending unacknowledged, a publish waits for room: up to
		// 30 s, not nats.go's 200 ms, which a busy machine outlasts.
		if _, err := js.PublishAsync("$KV."+task.Bucket+"."+rec.ID, body, jetstream.WithStallWait(30*time.Second)); err != nil {
			return 0, fmt.Errorf("publish record %d: %w", i, err)
		}
		if time.Since(lastSay) >= 5*time.Second {
			lastSay = time.Now()
			b.say("%d records (%.0f/s), rss %d MiB", i+1, float64(i+1)/time.Since(start).Seconds(), readMem().rss>>20)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return failed.Load(), nil
}

// readMem reads the process's memory after returning what the runtime can
// to the OS, so that RSS says what the data holds, not what garbage
// waits for a collection.
func readMem() memReading {
	debug.FreeOSMemory()
	var m memReading
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.heapInUse = ms.HeapInuse
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			m.rss = kb << 10
		case "VmHWM":
			m.hwm = kb << 10
		}
	}
	return m
}

// commit is the VCS revision the binary was built from ("+dirty" when
// modified), or "unknown" (go run does not stamp it: run.sh builds).
func commit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "unknown", ""
	for _, s := range info.Settings {
		switch {
		case s.Key == "vcs.revision" && len(s.Value) >= 12:
			rev = s.Value[:12]
		case s.Key == "vcs.modified" && s.Value == "true":
			dirty = "+dirty"
		}
	}
	return rev + dirty
}

// mib is n bytes in MiB.
func mib(n int64) string { return strconv.FormatInt(n>>20, 10) + " MiB" }

// ms is d in milliseconds with two decimals.
func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }

// markdown is the result as the README shows it.
func (r *result) markdown() string {
	var s strings.Builder
	fmt.Fprintf(&s, "Records: %d (%d owners, alice 10 %%; 80 %% succeeded, 10 %% failed, 5 %% dead, 3 %% queued, 2 %% cancelled), "+
		"bucket %s. Commit %s, %s, GOMAXPROCS %d.\n\n", r.o.n, r.o.owners, mib(int64(r.bucketBytes)), r.commit, r.goVersion, r.procs)
	fmt.Fprintf(&s, "- fill: %v, %.0f records/s (async publishes, %d pending at most; %d refused), the gateway's index following live\n",
		r.fill.Round(time.Millisecond), float64(r.o.n)/r.fill.Seconds(), r.o.pending, r.fillErrors)
	if r.o.fillOnly {
		fmt.Fprintf(&s, "- process RSS: %s before the fill, %s after it\n", mib(r.rssStart.rss), mib(r.rssFilled.rss))
		return s.String()
	}
	fmt.Fprintf(&s, "- the running gateway listed every record %v after the last ack\n", r.caughtUp.Round(time.Millisecond))
	fmt.Fprintf(&s, "- restart on the full bucket: platform.Start %v; GET /tasks answered 200 (not 503) %v after the restart began\n",
		r.restart.Round(time.Millisecond), r.loaded.Round(time.Millisecond))
	fmt.Fprintf(&s, "- process RSS (embedded NATS server, one gateway, the other roles): %s before the fill, %s after it, %s after the restart's load (peak %s); Go heap in use %s, %s, %s\n\n",
		mib(r.rssStart.rss), mib(r.rssFilled.rss), mib(r.rssLoaded.rss), mib(r.rssLoaded.hwm),
		mib(int64(r.rssStart.heapInUse)), mib(int64(r.rssFilled.heapInUse)), mib(int64(r.rssLoaded.heapInUse)))
	fmt.Fprintf(&s, "GET /tasks?limit=%d through the balancer, %d requests per pass; latency in ms:\n\n", r.o.limit, r.o.requests)
	fmt.Fprintf(&s, "| filter | token | matching | p50 | p99 | max | req/s | p50 ×%d | p99 ×%d | max ×%d | req/s ×%d |\n", r.o.concurrency, r.o.concurrency, r.o.concurrency, r.o.concurrency)
	s.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, w := range r.rows {
		errs := ""
		if w.seq.errors+w.conc.errors > 0 {
			errs = fmt.Sprintf(" (%d errors)", w.seq.errors+w.conc.errors)
		}
		fmt.Fprintf(&s, "| %s%s | %s | %d | %s | %s | %s | %.0f | %s | %s | %s | %.0f |\n", w.name, errs, w.token, w.total,
			ms(w.seq.p50), ms(w.seq.p99), ms(w.seq.max), w.seq.rate, ms(w.conc.p50), ms(w.conc.p99), ms(w.conc.max), w.conc.rate)
	}
	return s.String()
}
