package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// TestSoakShort runs a short soak at a low rate: the report must have its
// samples and verdicts, no request may fail with a 5xx, and every task
// must finish. Flatness itself is not asserted: 20 s under the race
// detector on a shared machine is noise (TestSoakVerdicts tests the rule).
func TestSoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a 20 s soak")
	}
	opts := SoakOptions{Out: t.TempDir(), Duration: 20 * time.Second, Sample: 2 * time.Second, Rate: 40,
		WarmUp: DefaultSoakWarmUp, Drain: 30 * time.Second, Connections: 16, SeedRows: 1000, Log: testutil.QuietLog()}
	r, err := RunSoak(t.Context(), opts)
	if err != nil {
		t.Fatalf("RunSoak = %v", err)
	}
	s := r.Soak
	if len(s.Samples) != 10 {
		t.Errorf("%d samples, want 10 (at 2, 4, ..., 20 s)", len(s.Samples))
	}
	var requests int64
	for i, x := range s.Samples {
		if x.RSSBytes == 0 || x.HeapInuseBytes == 0 || x.Goroutines == 0 || x.OpenFDs == 0 || x.JetStreamBytes == 0 {
			t.Errorf("sample %d = %+v: want every resource read", i, x)
		}
		for code, n := range x.Codes {
			if strings.HasPrefix(code, "5") {
				t.Errorf("sample %d: %d answers %s", i, n, code)
			}
		}
		requests += x.Requests
	}
	if requests < 400 {
		t.Errorf("%d requests in the samples, want about 800 (40/s for 20 s)", requests)
	}
	if last := s.Samples[len(s.Samples)-1]; last.TasksFinished == 0 {
		t.Errorf("last sample: %d tasks finished by the workers' count, want some", last.TasksFinished)
	}
	if len(s.Verdicts) != len(soakMetrics) {
		t.Errorf("%d verdicts, want one per metric (%d)", len(s.Verdicts), len(soakMetrics))
	}
	if s.WarmUpSeconds < 3 || s.WarmUpSeconds > 5 {
		t.Errorf("warm-up ends at %.1f s, want 20%% of 20 s", s.WarmUpSeconds)
	}
	tk := s.Tasks
	if tk.Accepted < 50 || tk.Lost != 0 || tk.Final["succeeded"] != tk.Accepted {
		t.Errorf("tasks = %+v: want about 160 accepted, every one succeeded, none lost", tk)
	}
	md, err := os.ReadFile(filepath.Join(opts.Out, "report.md"))
	if err != nil || !bytes.Contains(md, []byte("## Soak")) || !bytes.Contains(md, []byte("| rss_bytes |")) {
		t.Fatalf("report.md = %v, %s: want the samples and verdicts", err, md)
	}
	back, err := ReadReport(filepath.Join(opts.Out, "report.json"))
	if err != nil || back.Soak == nil || len(back.Soak.Samples) != len(s.Samples) {
		t.Fatalf("ReadReport = %v: want the soak with its samples", err)
	}
	if len(r.Charts) != 1 {
		t.Errorf("charts = %v, want the resources chart", r.Charts)
	}
}

// TestSoakVerdicts checks the flatness rule on made-up series.
func TestSoakVerdicts(t *testing.T) {
	series := func(values ...float64) []SoakSample {
		var out []SoakSample
		for i, v := range values {
			n := uint64(v)
			out = append(out, SoakSample{Seconds: float64(60 * i), RSSBytes: n, HeapInuseBytes: n, Goroutines: 100,
				OpenFDs: 20, JetStreamBytes: n})
		}
		return out
	}
	tests := []struct {
		name    string
		samples []SoakSample
		warmUp  float64
		notFlat []string
		base    float64 // of rss_bytes
		growth  float64
	}{
		{"flat", series(100, 105, 98, 102, 104, 101, 103, 99, 100, 108, 107), 0.2, nil, 98, 107.0/98 - 1},
		{"growing", series(100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200), 0.2,
			[]string{"rss_bytes", "heap_inuse_bytes", "jetstream_store_bytes"}, 120, 200.0/120 - 1},
		// A steep warm-up (caches filling) then a plateau is flat: growth
		// counts from the end of warm-up, not from the start.
		{"after warm-up", series(10, 50, 100, 101, 102, 100, 103, 104, 102, 105, 106), 0.2, nil, 100, 0.06},
		// Without warm-up the same series counts from the first sample.
		{"no warm-up", series(10, 50, 100, 101, 102, 100, 103, 104, 102, 105, 106), 0, []string{"rss_bytes", "heap_inuse_bytes",
			"jetstream_store_bytes"}, 10, 9.6},
		// Two samples: the base is the first, whatever the warm-up.
		{"two samples", series(100, 111), 0.2, []string{"rss_bytes", "heap_inuse_bytes", "jetstream_store_bytes"}, 100, 0.11},
		// From nothing, a rise counts as 100 %.
		{"from zero", series(0, 0, 0, 0, 0, 5), 0.2, []string{"rss_bytes", "heap_inuse_bytes", "jetstream_store_bytes"}, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			vs, notFlat, _ := soakVerdicts(tc.samples, tc.warmUp)
			if !slices.Equal(notFlat, tc.notFlat) {
				t.Errorf("not flat = %v, want %v", notFlat, tc.notFlat)
			}
			if len(vs) != len(soakMetrics) {
				t.Fatalf("%d verdicts, want %d", len(vs), len(soakMetrics))
			}
			rss := vs[0]
			if rss.Metric != "rss_bytes" || rss.Base != tc.base || rss.Growth < tc.growth-0.001 || rss.Growth > tc.growth+0.001 {
				t.Errorf("rss verdict = %+v, want base %g, growth %.4f", rss, tc.base, tc.growth)
			}
			for _, v := range vs {
				if v.Metric == "goroutines" && (!v.Flat || v.Growth != 0) {
					t.Errorf("goroutines (constant) = %+v, want flat", v)
				}
			}
		})
	}
	if vs, notFlat, _ := soakVerdicts(series(100), 0.2); vs != nil || notFlat != nil {
		t.Errorf("one sample gave verdicts %v", vs)
	}
}
