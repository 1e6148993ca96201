package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/platform"
)

// Options configure a bench run.
type Options struct {
	// Out is the directory the report is written to; it is created.
	Out string
	// Duration is how long each measured load runs.
	Duration time.Duration
	// Connections is the concurrency of closed-loop loads.
	Connections int
	// SeedRows sizes the database of an embedded platform (the cost of an
	// uncached /data).
	SeedRows int
	// URL and Token, when URL is set, target a platform already running
	// (its balancer, and a token with every scope) instead of starting
	// one: variants that need another configuration then collapse to one
	// run of the platform as it is.
	URL, Token string
	// AdminURL, with URL, is that platform's balancer admin listener
	// (`up` prints it), whose /-/metrics give the retry and ejection
	// counts; without it they are left out of the report.
	AdminURL string
	// Progress gets a progress bar per load; nil shows none.
	Progress io.Writer
	// Log gets the embedded platforms' logs.
	Log *slog.Logger
	// BcryptSlots is the embedded platforms' platform.Config.BcryptSlots
	// (what platform.ReserveLoopProcs answered).
	BcryptSlots int
}

// Validate reports every bad option at once.
func (o Options) Validate() error {
	var errs []error
	if o.Out == "" {
		errs = append(errs, errors.New("bench: --out must not be empty"))
	}
	if o.Duration < 200*time.Millisecond || o.Duration > 10*time.Minute {
		errs = append(errs, fmt.Errorf("bench: --duration must be 200ms..10m, got %v", o.Duration))
	}
	if o.Connections < 1 || o.Connections > 1024 {
		errs = append(errs, fmt.Errorf("bench: --connections must be 1..1024, got %d", o.Connections))
	}
	if o.SeedRows < 0 {
		errs = append(errs, fmt.Errorf("bench: --seed-rows must not be negative, got %d", o.SeedRows))
	}
	if o.URL != "" {
		if err := checkLoopback(o.URL); err != nil {
			errs = append(errs, err)
		}
		if o.Token == "" {
			errs = append(errs, errors.New("bench: --url needs a token with every scope (--token or TOKEN)"))
		}
	}
	return errors.Join(errs...)
}

// env is what a scenario runs in: the options, a data directory shared by
// its embedded platforms (the database is seeded once), and the report.
type env struct {
	ctx     context.Context
	opts    Options
	dataDir string
	report  *Report
}

// target is a platform under load: where to send requests, and, when the
// bench started it, the platform itself.
type target struct {
	url, token string
	p          *platform.Platform // nil against a running platform
	// config describes the platform for reports.
	config map[string]string
	// admin is the balancer's admin listener, or "" when not known.
	admin string
}

// external reports whether the scenario targets a platform it did not
// start, so it cannot reconfigure it.
func (e *env) external() bool { return e.opts.URL != "" }

// start starts an embedded platform tuned by tune, or returns the running
// one given by --url (tune is then not applied). The caller stops it.
func (e *env) start(config map[string]string, tune func(*platform.Config)) (*target, error) {
	if e.external() {
		return &target{url: strings.TrimRight(e.opts.URL, "/"), admin: strings.TrimRight(e.opts.AdminURL, "/"),
			token: e.opts.Token, config: map[string]string{"platform": e.opts.URL}}, nil
	}
	cfg := platform.DefaultConfig()
	cfg.DataDir, cfg.SeedRows, cfg.BcryptSlots = e.dataDir, e.opts.SeedRows, e.opts.BcryptSlots
	cfg.BalancerAddr, cfg.DBAddr, cfg.CacheAddr, cfg.GatewayAddrs = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0,127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.NATSPort, cfg.NATSHTTPPort = -1, 0
	cfg.ShutdownTime = 5 * time.Second
	// The bench measures the platform, not the limits that protect it
	// from one noisy client (which the bench would be).
	cfg.Limits.PerIP, cfg.Limits.PerSubject = 0, 0
	secret, err := auth.RandomSecret()
	if err != nil {
		return nil, err
	}
	cfg.Keys = auth.Keys{Secret: []byte(secret), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	if tune != nil {
		tune(&cfg)
	}
	// Short gateway names (gw1, gw2, ...) in X-Served-By, for the
	// distribution tables and charts.
	cfg.GatewayIDs = nil
	for i := range max(cfg.Gateways, len(strings.Split(cfg.GatewayAddrs, ","))) {
		cfg.GatewayIDs = append(cfg.GatewayIDs, fmt.Sprintf("gw%d", i+1))
	}
	for k, v := range map[string]string{"cache": string(cfg.Cache.Mode), "gateways": fmt.Sprint(len(strings.Split(cfg.GatewayAddrs, ","))),
		"workers": fmt.Sprint(cfg.Workers), "worker_concurrency": fmt.Sprint(cfg.Concurrency), "policy": cfg.Policy, "rate_limits": "off"} {
		if _, ok := config[k]; !ok {
			config[k] = v
		}
	}
	if cfg.Gateways > 0 {
		config["gateways"] = fmt.Sprint(cfg.Gateways)
	}
	p, err := platform.Start(e.ctx, cfg, e.opts.Log)
	if err != nil {
		return nil, fmt.Errorf("bench: start platform %v: %w", config, err)
	}
	tok, _, err := cfg.Keys.Issue("bench", auth.AllScopes, time.Hour, time.Now())
	if err != nil {
		return nil, errors.Join(err, p.Stop())
	}
	return &target{url: p.BalancerURL, admin: p.AdminURL, token: tok, p: p, config: config}, nil
}

// stop stops an embedded platform; a running one is left alone.
func (t *target) stop() error {
	if t.p == nil {
		return nil
	}
	return t.p.Stop()
}

// get builds a GET of path with the target's token.
func (t *target) get(path string) vegeta.Target {
	return vegeta.Target{Method: http.MethodGet, URL: t.url + path,
		Header: http.Header{"Authorization": {"Bearer " + t.token}}}
}

// fixed sends the same request every time.
func fixed(tg vegeta.Target) vegeta.Targeter {
	return func(out *vegeta.Target) error {
		*out = tg
		return nil
	}
}

// itemCount is how many items dbsvc seeds (ids 1..itemCount).
const itemCount = 1000

// zipfItems reads items by a Zipf law over the seeded ids (s = 1.1: a few
// hot items and a long tail, as real catalogues are read), from a fixed
// seed so two runs read the same sequence.
func (t *target) zipfItems() vegeta.Targeter {
	var mu sync.Mutex
	z := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), 1.1, 1, itemCount-1)
	base := t.get("/items/")
	return func(out *vegeta.Target) error {
		mu.Lock()
		id := z.Uint64() + 1
		mu.Unlock()
		*out = base
		out.URL = base.URL + strconv.FormatUint(id, 10)
		return nil
	}
}

// Prometheus counters a run reads before and after: what it cost the
// database, and what the balancer did about failures.
const (
	dbQueriesMetric       = "scalelab_db_queries_total"
	balancerRetriesMetric = "scalelab_balancer_retries_total"
	balancerErrorsMetric  = "scalelab_balancer_backend_errors_total"
	balancerEjectsMetric  = "scalelab_balancer_ejections_total"
)

// counters reads the target's counters: dbsvc's (only when the bench
// started the platform: a running one's dbsvc address is not known) and
// the balancer's. A counter it cannot read is missing from the map.
func (t *target) counters(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	if t.admin != "" {
		out = scrape(ctx, t.admin+"/-/metrics", balancerRetriesMetric, balancerErrorsMetric, balancerEjectsMetric)
	}
	if t.p != nil {
		for k, v := range scrape(ctx, t.p.DBURL+"/metrics", dbQueriesMetric) {
			out[k] = v
		}
	}
	return out
}

// scrape reads a Prometheus text page and sums each named counter over its
// labels. A failed read gives an empty map: the figures that need it are
// left out of the report, the run is not.
func scrape(ctx context.Context, url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return out
	}
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		if !slices.Contains(names, name) {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			out[name] += v
		}
	}
	return out
}

// measure runs l against t and adds the result, with t's config and what
// the run cost the database and made the balancer do, to the report.
func (e *env) measure(t *target, l Load, config map[string]string) Result {
	if l.Duration == 0 {
		l.Duration = e.opts.Duration
	}
	if l.Connections == 0 {
		l.Connections = e.opts.Connections
	}
	before := t.counters(e.ctx)
	r := l.run(e.ctx, e.opts.Progress)
	r.Config = map[string]string{}
	for k, v := range t.config {
		r.Config[k] = v
	}
	for k, v := range config {
		r.Config[k] = v
	}
	after := t.counters(e.ctx)
	diff := func(name string) (float64, bool) {
		b, ok1 := before[name]
		a, ok2 := after[name]
		return a - b, ok1 && ok2
	}
	if d, ok := diff(dbQueriesMetric); ok && r.Requests > 0 {
		r.metric("db_queries_per_request", d/float64(r.Requests))
	}
	for name, metric := range map[string]string{balancerRetriesMetric: "balancer_retries",
		balancerErrorsMetric: "balancer_gateway_errors", balancerEjectsMetric: "balancer_ejections"} {
		if d, ok := diff(name); ok && d > 0 {
			r.metric(metric, d)
		}
	}
	e.report.Results = append(e.report.Results, r)
	return r
}

// metric sets one of r's own figures, rounded to 4 decimals.
func (r *Result) metric(name string, v float64) {
	if r.Metrics == nil {
		r.Metrics = map[string]float64{}
	}
	r.Metrics[name] = float64(int64(v*10000+0.5)) / 10000
}

// hostname is the machine's name for the report, or "unknown".
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}
