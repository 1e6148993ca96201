package bench

import (
	"reflect"
	"testing"
	"time"
)

// TestTally: answers counted in the order they end, not the order they
// began, land in the slice of their start; codes, errors, cache hits and
// gateways add up; percentiles come from every latency.
func TestTally(t *testing.T) {
	start := time.Now()
	tl := newTally("run", 2*time.Second, start) // 100 ms slices
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	tl.add(at(150), 10*time.Millisecond, 200, "", "local", "gw1")
	tl.add(at(20), 300*time.Millisecond, 200, "", "miss", "gw2") // began first, ended last
	tl.add(at(160), 5*time.Millisecond, 503, "503 Service Unavailable", "", "gw1")
	tl.add(at(170), 5*time.Millisecond, 0, "connection refused", "", "")
	r := tl.result()

	if r.Requests != 4 || r.OK != 2 || r.Errors != 2 {
		t.Errorf("requests/ok/errors = %d/%d/%d, want 4/2/2", r.Requests, r.OK, r.Errors)
	}
	if want := map[string]int64{"200": 2, "503": 1, "0": 1}; !reflect.DeepEqual(r.Codes, want) {
		t.Errorf("codes = %v, want %v", r.Codes, want)
	}
	if want := []string{"503 Service Unavailable", "connection refused"}; !reflect.DeepEqual(r.ErrorSamples, want) {
		t.Errorf("error samples = %v, want %v", r.ErrorSamples, want)
	}
	if r.HitRatio == nil || *r.HitRatio != 0.5 {
		t.Errorf("hit ratio = %v, want 0.5 (one local, one miss)", r.HitRatio)
	}
	if want := map[string]int64{"gw1": 2, "gw2": 1}; !reflect.DeepEqual(r.Gateways, want) {
		t.Errorf("gateways = %v, want %v", r.Gateways, want)
	}
	if len(r.Timeline) != 2 || r.Timeline[0].OK != 1 || r.Timeline[1].OK != 1 || r.Timeline[1].Errors != 2 {
		t.Errorf("timeline = %+v, want slice 0: 1 ok (the one that began at 20 ms), slice 1: 1 ok and 2 errors", r.Timeline)
	}
	if r.Latency.Max < 299 || r.Latency.Max > 301 || r.Latency.P50 > 10.1 {
		t.Errorf("latency = %+v, want max 300 ms and p50 at most 10 ms", r.Latency)
	}
	if r.Seconds < 0.31 || r.Seconds > 0.33 || r.Throughput < 6 || r.Throughput > 6.5 {
		t.Errorf("%.3f s, %.1f ok/s; want the run to span 0.32 s (start to the last answer) and 2 ok in it", r.Seconds, r.Throughput)
	}
}
