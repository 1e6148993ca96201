package platform

import (
	"encoding/json"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestRolesConnectInProcess: every role of `up` reaches the embedded NATS
// server through an in-process pipe, not a TCP socket (the server sees no
// client port). Operators still connect over TCP (TestUpOperators).
func TestRolesConnectInProcess(t *testing.T) {
	p, err := Start(t.Context(), testConfig(t), testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	if p.NATSMonitorURL == "" {
		t.Fatal("NATSMonitorURL is empty with NATSHTTPPort -1")
	}

	res, err := http.Get(p.NATSMonitorURL + "/connz?limit=1024")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var connz struct {
		Conns []struct {
			Name string `json:"name"`
			Port int    `json:"port"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(res.Body).Decode(&connz); err != nil {
		t.Fatalf("GET /connz: %v", err)
	}
	var roles []string
	for _, c := range connz.Conns {
		if !strings.HasPrefix(c.Name, "scalelab-") {
			continue
		}
		roles = append(roles, c.Name)
		if c.Port != 0 {
			t.Errorf("connection %s comes from TCP port %d, want an in-process pipe", c.Name, c.Port)
		}
	}
	slices.Sort(roles)
	for _, want := range []string{"scalelab-up", "scalelab-gateway", "scalelab-worker", "scalelab-dbsvc", "scalelab-cachesvc"} {
		if !slices.ContainsFunc(roles, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("no connection named %s* among %v", want, roles)
		}
	}
}

// testConfig is a platform on ports the kernel picks and a temporary data
// directory: one gateway, the default workers, 100 seeded rows, a test
// signing key.
func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.SeedRows, cfg.NATSPort, cfg.NATSHTTPPort = t.TempDir(), 100, -1, -1
	cfg.BalancerAddr, cfg.DBAddr, cfg.CacheAddr, cfg.GatewayAddrs = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.Keys = auth.Keys{Secret: []byte(strings.Repeat("k", 32)), Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	return cfg
}

// TestBalancerLeavesPsToTheOtherRoles: the platform's balancer runs fewer
// event loops than there are Ps (with more than one), so that a loop waiting
// in epoll_wait can never hold the last P the gateways and the NATS server
// need; with a loop per P, up's front door answered in 4-7 ms at the median
// against 0.4 ms for a standalone balancer (bench/frontdoor.sh).
func TestBalancerLeavesPsToTheOtherRoles(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	_, balCfg, err := cfg.roles(nil, nil, []net.Listener{ln}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	if balCfg.EventLoops < 1 || procs > 1 && balCfg.EventLoops >= procs {
		t.Errorf("EventLoops = %d with GOMAXPROCS %d, want at least 1 and fewer than GOMAXPROCS", balCfg.EventLoops, procs)
	}
}

// TestGatewaysGetBcryptSlots: every gateway gets Config.BcryptSlots, the
// slots ReserveLoopProcs took from the cores, not its default from the
// doubled GOMAXPROCS.
func TestGatewaysGetBcryptSlots(t *testing.T) {
	var lns []net.Listener
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns = append(lns, ln)
	}
	cfg := testConfig(t)
	cfg.BcryptSlots = 3
	var got []int
	for _, c := range cfg.gatewayConfigs(lns) {
		got = append(got, c.BcryptSlots)
	}
	if !slices.Equal(got, []int{3, 3}) {
		t.Errorf("gateways' BcryptSlots = %v, want [3 3]", got)
	}
}

// TestReserveLoopProcs: `up` doubles GOMAXPROCS, so its loops get a P per
// core and the other roles as many again, and its gateways get a bcrypt
// slot per two cores, not per two of the doubled Ps; again in the same
// process, it doubles the default, not its own result; with GOMAXPROCS
// set it changes nothing.
func TestReserveLoopProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })
	runtime.SetDefaultGOMAXPROCS()
	before := runtime.GOMAXPROCS(0)

	if slots := ReserveLoopProcs(func(k string) string { return map[string]string{"GOMAXPROCS": "3"}[k] }); slots != 0 {
		t.Errorf("with GOMAXPROCS set: ReserveLoopProcs() = %d bcrypt slots, want 0 (the gateways' default)", slots)
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("with GOMAXPROCS set: GOMAXPROCS = %d, want it left at %d", got, before)
	}
	want := max(1, before/2)
	for i := range 2 {
		if slots := ReserveLoopProcs(func(string) string { return "" }); slots != want {
			t.Errorf("ReserveLoopProcs() #%d = %d bcrypt slots, want %d", i+1, slots, want)
		}
		if got := runtime.GOMAXPROCS(0); got != 2*before {
			t.Fatalf("GOMAXPROCS after ReserveLoopProcs() #%d = %d, want %d", i+1, got, 2*before)
		}
	}
	if got := EventLoops(); got != before {
		t.Errorf("EventLoops() = %d after ReserveLoopProcs, want one per core (%d)", got, before)
	}
}
