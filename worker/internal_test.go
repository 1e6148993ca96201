package worker

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		base    time.Duration
		attempt int
		want    time.Duration // before jitter
	}{
		{name: "first retry", base: 10 * time.Millisecond, attempt: 1, want: 10 * time.Millisecond},
		{name: "doubles", base: 10 * time.Millisecond, attempt: 2, want: 20 * time.Millisecond},
		{name: "doubles again", base: 10 * time.Millisecond, attempt: 4, want: 80 * time.Millisecond},
		{name: "capped at five minutes", base: time.Second, attempt: 12, want: 5 * time.Minute},
		{name: "shift capped", base: 10 * time.Millisecond, attempt: 1000, want: 5 * time.Minute},
		{name: "zero base", base: 0, attempt: 3, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &runner{cfg: Config{RetryDelay: tt.base}}
			lo, hi := tt.want-tt.want/10, tt.want+tt.want/10
			for range 200 {
				if got := r.backoff(tt.attempt); got < lo || got > hi {
					t.Fatalf("backoff(%d) with RetryDelay %v = %v, want %v ±10%% [%v, %v]", tt.attempt, tt.base, got, tt.want, lo, hi)
				}
			}
		})
	}
}

// TestStoreFullDelay: a task handed back because the store is full
// waits 1 s, doubling, never more than 30 s, whatever its deliveries.
func TestStoreFullDelay(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		delivered int
		want      time.Duration
	}{{0, time.Second}, {1, time.Second}, {2, 2 * time.Second}, {5, 16 * time.Second}, {6, 30 * time.Second}, {1000, 30 * time.Second}} {
		if got := storeFullDelay(tt.delivered); got != tt.want {
			t.Errorf("storeFullDelay(%d) = %v, want %v", tt.delivered, got, tt.want)
		}
	}
}

// TestBackoffLongRetryDelay: Validate accepts any RetryDelay ≥ 0 and any
// MaxAttempts ≥ 1, so a long delay with many attempts must still give a
// sane (capped) delay.
func TestBackoffLongRetryDelay(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.ID, cfg.RetryDelay, cfg.MaxAttempts = "w1", 3*time.Hour, 30
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	r := &runner{cfg: cfg}
	for attempt := 1; attempt < cfg.MaxAttempts; attempt++ {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("backoff(%d) with RetryDelay %v panicked: %v", attempt, cfg.RetryDelay, p)
				}
			}()
			if got, hi := r.backoff(attempt), 5*time.Minute+30*time.Second; got <= 0 || got > hi {
				t.Errorf("backoff(%d) with RetryDelay %v = %v, want in (0, %v]", attempt, cfg.RetryDelay, got, hi)
			}
		}()
	}
}

func TestTaskProgressClamps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want int
	}{
		{in: -5, want: 0},
		{in: 0, want: 0},
		{in: 42, want: 42},
		{in: 100, want: 100},
		{in: 250, want: 100},
	}
	for _, tt := range tests {
		var got []int
		tk := &Task{progress: func(p int, _ string) { got = append(got, p) }}
		tk.Progress(tt.in, "msg")
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("Progress(%d) recorded %v, want [%d]", tt.in, got, tt.want)
		}
	}
	(&Task{}).Progress(50, "no recorder: must not panic")
}

func TestEmptyBackoff(t *testing.T) {
	t.Parallel()
	var q queueSource
	var got []time.Duration
	for range 7 {
		got = append(got, q.emptyBackoff())
	}
	want := []time.Duration{5, 10, 20, 40, 50, 50, 50}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("empty answers in a row → %v, want %v ms", got, want)
		}
	}
	q.emptyStreak.Store(-1 << 31) // wrapped: no negative shift
	if d := q.emptyBackoff(); d != emptyFor {
		t.Errorf("after a wrapped streak: %v, want %v", d, emptyFor)
	}
}

func TestQueueOrder(t *testing.T) {
	t.Parallel()
	a, b, c := &queueSource{name: "a", weight: 6}, &queueSource{name: "b", weight: 3}, &queueSource{name: "c", weight: 1}
	now := time.Now().UnixNano()
	b.emptyUntil.Store(now + int64(time.Hour)) // found empty: left out
	strict := queueSet{queues: []*queueSource{a, b, c}, strict: true}
	if got := strict.order(now, nil); len(got) != 2 || got[0] != a || got[1] != c {
		t.Errorf("strict order = %v, want a, c", names(got))
	}
	weighted := queueSet{queues: []*queueSource{a, b, c}}
	first := map[string]int{}
	for range 7000 {
		got := weighted.order(now, nil)
		if len(got) != 2 {
			t.Fatalf("weighted order = %v, want a and c", names(got))
		}
		first[got[0].name]++
	}
	// a first 6/7 of the time: 6,000 ± 3 %.
	if first["a"] < 5820 || first["a"] > 6180 {
		t.Errorf("a came first %d times in 7,000, want about 6,000 (weights 6:1)", first["a"])
	}
}

func names(qs []*queueSource) []string {
	out := make([]string, len(qs))
	for i, q := range qs {
		out[i] = q.name
	}
	return out
}
