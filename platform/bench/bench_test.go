package bench

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/platform"
)

// shortOptions are the options of `scalelab bench --short`, shorter still.
func shortOptions(t *testing.T) Options {
	// 1,000 rows and 8 connections: an uncached /data still costs a query
	// per request, but the queue of them stays well under dbsvc's 5 s query
	// timeout under the race detector on a busy 2-core machine.
	return Options{Out: t.TempDir(), Duration: 800 * time.Millisecond, Connections: 8, SeedRows: 1000, Log: testutil.QuietLog()}
}

// runScenario runs a scenario in short mode and checks what every report
// must have: no run lost requests to errors unless allowed, the files, the
// charts as PNG, a JSON that reads back, and a compare with itself of 1.00×.
func runScenario(t *testing.T, name string, opts Options) *Report {
	t.Helper()
	r, err := Run(t.Context(), name, opts)
	if err != nil {
		t.Fatalf("Run(%s) = %v", name, err)
	}
	md, err := os.ReadFile(filepath.Join(opts.Out, "report.md"))
	if err != nil || !bytes.Contains(md, []byte("## Findings")) || !bytes.Contains(md, []byte("## Configuration")) {
		t.Fatalf("report.md = %v, %q...: want findings and configuration", err, md[:min(len(md), 200)])
	}
	if len(r.Charts) == 0 {
		t.Errorf("%s wrote no chart", name)
	}
	for _, c := range r.Charts {
		b, err := os.ReadFile(filepath.Join(opts.Out, c.File))
		if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("chart %s: %v, not a PNG", c.File, err)
		}
		if !bytes.Contains(md, []byte("("+c.File+")")) {
			t.Errorf("report.md does not show chart %s", c.File)
		}
	}
	back, err := ReadReport(filepath.Join(opts.Out, "report.json"))
	if err != nil || len(back.Results) != len(r.Results) {
		t.Fatalf("ReadReport = %v with %d results, want %d", err, len(back.Results), len(r.Results))
	}
	var cmp bytes.Buffer
	if err := Compare(&cmp, r, back); err != nil || !strings.Contains(cmp.String(), "1.00×") {
		t.Errorf("Compare(report, itself) = %v:\n%s\nwant ratios of 1.00×", err, cmp.String())
	}
	for _, x := range r.Results {
		if x.Requests == 0 || x.Throughput <= 0 {
			t.Errorf("%s: %d requests at %.1f/s, want some", x.Name, x.Requests, x.Throughput)
		}
	}
	return r
}

func result(t *testing.T, r *Report, name string) Result {
	t.Helper()
	x, ok := r.result(name)
	if !ok {
		t.Fatalf("no run %q in the %s report", name, r.Scenario)
	}
	return x
}

func noErrors(t *testing.T, r *Report) {
	t.Helper()
	for _, x := range r.Results {
		if x.Errors != 0 {
			t.Errorf("%s: %d errors (%v), want none", x.Name, x.Errors, x.ErrorSamples)
		}
	}
}

// evenShares checks round robin's distribution: each of n gateways within
// 5 % of its fair share.
func evenShares(t *testing.T, x Result, n int) {
	t.Helper()
	s := x.Share()
	if len(s) != n {
		t.Errorf("%s: answered by %d gateways (%v), want %d", x.Name, len(s), x.Gateways, n)
	}
	for g, share := range s {
		if math.Abs(share-1/float64(n)) > 0.05/float64(n) {
			t.Errorf("%s: %s has %.1f%% of the requests, want %.1f%% ± 5%%", x.Name, g, 100*share, 100/float64(n))
		}
	}
}

func TestScenarioCache(t *testing.T) {
	r := runScenario(t, "cache", shortOptions(t))
	noErrors(t, r)
	off, hot := result(t, r, "cache=off GET /data"), result(t, r, "cache=kv+local GET /data")
	if hitRatio(off) != 0 || off.Metrics["db_queries_per_request"] < 0.99 {
		t.Errorf("cache off /data: hit ratio %v, %v db queries per request; want 0 and 1", hitRatio(off), off.Metrics["db_queries_per_request"])
	}
	if hitRatio(hot) <= 0.9 || hot.Metrics["db_queries_per_request"] > 0.01 {
		t.Errorf("cache kv+local on a hot key: hit ratio %v, %v db queries per request; want > 0.9 and ~0", hitRatio(hot), hot.Metrics["db_queries_per_request"])
	}
	if hot.Throughput < 5*off.Throughput {
		t.Errorf("/data: %.0f req/s cached vs %.0f uncached, want the cache at least 5× faster", hot.Throughput, off.Throughput)
	}
	if items := result(t, r, "cache=kv+local GET /items/{zipf}"); hitRatio(items) < 0.5 {
		t.Errorf("cache kv+local /items (Zipf): hit ratio %v, want most reads from the cache", hitRatio(items))
	}
}

// hitRatio is x's hit ratio, or -1 when no answer said.
func hitRatio(x Result) float64 {
	if x.HitRatio == nil {
		return -1
	}
	return *x.HitRatio
}

func TestScenarioScale(t *testing.T) {
	r := runScenario(t, "scale", shortOptions(t))
	noErrors(t, r)
	for _, n := range []int{1, 2, 4} {
		for _, path := range []string{"GET /items/{zipf}", "GET /process"} {
			evenShares(t, result(t, r, fmt.Sprintf("%d gateway(s) %s", n, path)), n)
		}
	}
}

func TestScenarioAsync(t *testing.T) {
	r := runScenario(t, "async", shortOptions(t))
	noErrors(t, r)
	submit, wait := result(t, r, "async-submit POST /longtask"), result(t, r, "sync-wait POST /longtask?wait=20s")
	if wait.Codes["200"] != wait.Requests {
		t.Errorf("sync-wait: codes %v, want every task's result (200)", wait.Codes)
	}
	if wait.Latency.P50 < asyncTaskMillis || submit.Latency.P50 >= wait.Latency.P50 {
		t.Errorf("p50 latency: async submit %.1f ms, sync wait %.1f ms; want the wait ≥ the %d ms task and the submit shorter",
			submit.Latency.P50, wait.Latency.P50, asyncTaskMillis)
	}
	one, four := result(t, r, "1 worker(s) drain"), result(t, r, "4 worker(s) drain")
	if int(one.Metrics["tasks"]) != int(one.OK) || int(four.Metrics["tasks"]) != int(four.OK) {
		t.Errorf("drain: %d and %d tasks succeeded, want all %v", one.OK, four.OK, one.Metrics["tasks"])
	}
	if four.Throughput < 1.5*one.Throughput {
		t.Errorf("drain: %.0f tasks/s with 4 workers vs %.0f with 1, want at least 1.5× (the tasks sleep, they do not compute)",
			four.Throughput, one.Throughput)
	}
}

func TestScenarioBalance(t *testing.T) {
	r := runScenario(t, "balance", shortOptions(t))
	noErrors(t, r)
	evenShares(t, result(t, r, "policy=round_robin gw1 slow"), 3)
	if lc := result(t, r, "policy=least_connections gw1 slow"); lc.Share()["gw1"] > 0.2 {
		t.Errorf("least connections sends the slow gw1 %.1f%% of the requests, want under 20%%", 100*lc.Share()["gw1"])
	}
	for _, how := range []string{"stopped", "killed"} {
		lost := result(t, r, "round_robin gw3 "+how+" under load")
		for i, s := range lost.Timeline[len(lost.Timeline)*2/3:] {
			if s.Gateways["gw3"] != 0 {
				t.Errorf("gw3 answered %d requests in the last third of the run (slice %d) after it was %s", s.Gateways["gw3"], i, how)
			}
		}
		if lost.Gateways["gw3"] == 0 {
			t.Errorf("gw3 answered nothing before it was %s: %v", how, lost.Gateways)
		}
		if lost.Metrics["balancer_ejections"] < 1 {
			t.Errorf("gw3 %s: the balancer's metrics show no ejection (%v)", how, lost.Metrics)
		}
	}
}

// TestRunningPlatform: with URL, a scenario measures the platform as it
// runs, one variant, and starts nothing.
func TestRunningPlatform(t *testing.T) {
	cfg := platform.DefaultConfig()
	cfg.DataDir, cfg.SeedRows, cfg.NATSPort, cfg.NATSHTTPPort = t.TempDir(), 2000, -1, 0
	cfg.BalancerAddr, cfg.DBAddr, cfg.CacheAddr, cfg.GatewayAddrs = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Keys = auth.Keys{Secret: []byte(strings.Repeat("k", 32)), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	cfg.Limits.PerIP, cfg.Limits.PerSubject = 0, 0 // as the README says to start it for a bench
	p, err := platform.Start(t.Context(), cfg, testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	tok, _, err := cfg.Keys.Issue("bench", auth.AllScopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	opts := shortOptions(t)
	opts.URL, opts.AdminURL, opts.Token = p.BalancerURL, p.AdminURL, tok
	r := runScenario(t, "cache", opts)
	noErrors(t, r)
	if len(r.Results) != 2 || r.Results[0].Name != "cache=as running GET /data" {
		t.Errorf("against a running platform: runs %v, want the two reads of the platform as it runs", names(r))
	}
}

func names(r *Report) []string {
	var out []string
	for _, x := range r.Results {
		out = append(out, x.Name)
	}
	return out
}

func TestOptionsValidate(t *testing.T) {
	good := Options{Out: "x", Duration: time.Second, Connections: 8}
	if err := good.Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	for _, tt := range []struct {
		edit func(*Options)
		want string
	}{
		{func(o *Options) { o.URL, o.Token = "http://example.com:8000", "t" }, "only sent to this machine"},
		{func(o *Options) { o.URL, o.Token = "http://10.0.0.1", "t" }, "only sent to this machine"},
		{func(o *Options) { o.URL = "http://127.0.0.1:8000" }, "token"},
		{func(o *Options) { o.URL, o.Token = "ftp://127.0.0.1", "t" }, "not an http"},
		{func(o *Options) { o.Duration = time.Hour }, "--duration"},
		{func(o *Options) { o.Connections = 0 }, "--connections"},
		{func(o *Options) { o.Out = "" }, "--out"},
	} {
		o := good
		tt.edit(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %q", o, err, tt.want)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"} {
		o := good
		o.URL, o.Token = ok, "t"
		if err := o.Validate(); err != nil {
			t.Errorf("Validate(--url %s) = %v, want nil", ok, err)
		}
	}
	if _, err := Run(t.Context(), "nope", good); err == nil || !strings.Contains(err.Error(), "cache, scale, async, balance") {
		t.Errorf("Run(nope) = %v, want the list of scenarios", err)
	}
}
