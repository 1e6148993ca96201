package gateway

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

func TestLimiter(t *testing.T) {
	l := newLimiter(1, 2, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := l.allow("a", now); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, wait := l.allow("a", now)
	if ok || wait <= 0 || wait > time.Second {
		t.Errorf("request past the burst = %v, wait %v; want refused, wait in (0, 1s]", ok, wait)
	}
	if ok, _ := l.allow("b", now); !ok {
		t.Errorf("another key shares a's bucket")
	}
	if ok, _ := l.allow("a", now.Add(time.Second)); !ok {
		t.Errorf("a refused after a second's refill")
	}
	// Past the key bound, the least recently used bucket is forgotten.
	l.allow("c", now)
	if n := l.buckets.Len(); n != 2 {
		t.Errorf("buckets = %d, want the bound 2", n)
	}
	if newLimiter(0, 1, 1) != nil {
		t.Errorf("newLimiter(0, ...) is a limiter, want nil (no limit)")
	}
}

// TestRateLimits: past the per-IP or per-subject burst the gateway answers
// 429 JSON with Retry-After, before any service is called; ops routes are
// not limited.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns), func(c *Config) {
		c.Limits = RateLimits{PerIP: 0.5, BurstIP: 5, PerSubject: 0.5, BurstSubject: 3, Keys: 100}
	})
	alice := token(t, auth.ScopeTasksRead)
	// 3 requests of alice pass the limits (the task is unknown: 404), the
	// 4th is over her subject's burst.
	for i := range 3 {
		if r := get(t, base+"/tasks/abc", alice); r.status != http.StatusNotFound {
			t.Fatalf("request %d = %d %s, want 404", i+1, r.status, r.body)
		}
	}
	r := get(t, base+"/tasks/abc", alice)
	if r.status != http.StatusTooManyRequests || errorCode(t, r) != "rate_limited" {
		t.Fatalf("4th request of one subject = %d %s, want 429 rate_limited", r.status, r.body)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After = %q, want whole seconds >= 1", r.header.Get("Retry-After"))
	}
	// The IP's burst (5) is spent after one more request, whatever the
	// token, even a bad one.
	if r := get(t, base+"/tasks/abc", "not-a-token"); r.status != http.StatusUnauthorized {
		t.Fatalf("5th request from the IP = %d, want 401", r.status)
	}
	if r := get(t, base+"/tasks/abc", "not-a-token"); r.status != http.StatusTooManyRequests {
		t.Errorf("6th request from the IP = %d, want 429", r.status)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if r := get(t, base+path, ""); r.status != http.StatusOK {
			t.Errorf("GET %s over the limits = %d, want 200 (ops are not limited)", path, r.status)
		}
	}
}
