package cli

import (
	"runtime"
	"testing"

	"github.com/scalelab/scalelab/balancer"
)

// TestBalancerReservesLoopProcs: the balancer command runs a loop per core
// and keeps as many Ps again for its goroutines (HTTPS, HTTP/2, upgrades),
// unless GOMAXPROCS is set or the goroutine engine serves everything. Not
// parallel: it changes the process's GOMAXPROCS, and puts it back.
func TestBalancerReservesLoopProcs(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	runtime.SetDefaultGOMAXPROCS()
	cores := runtime.GOMAXPROCS(0)

	cfg := balancer.DefaultConfig()
	reserveLoopProcs(func(string) string { return "" }, &cfg)
	if got := runtime.GOMAXPROCS(0); got != 2*cores {
		t.Errorf("GOMAXPROCS = %d, want %d (twice the cores)", got, 2*cores)
	}
	if cfg.EventLoops != cores {
		t.Errorf("EventLoops = %d, want %d (a loop per core)", cfg.EventLoops, cores)
	}

	runtime.GOMAXPROCS(cores)
	for name, tc := range map[string]struct {
		env    string
		engine string
	}{
		"GOMAXPROCS set":   {"3", balancer.EngineLoop},
		"goroutine engine": {"", balancer.EngineGoroutine},
	} {
		cfg := balancer.DefaultConfig()
		cfg.Engine = tc.engine
		reserveLoopProcs(func(k string) string {
			if k == "GOMAXPROCS" {
				return tc.env
			}
			return ""
		}, &cfg)
		if got := runtime.GOMAXPROCS(0); got != cores || cfg.EventLoops != 0 {
			t.Errorf("%s: GOMAXPROCS = %d, EventLoops = %d; want %d and 0 (left alone)", name, got, cfg.EventLoops, cores)
		}
	}
}
