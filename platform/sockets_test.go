package platform

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// TestBalancerReachesGatewaysOverUnixSockets: in `up`, the balancer's
// connections to the gateways are Unix socket connections (the gateways
// accepted them on their sockets), while each gateway still answers on its
// TCP port.
func TestBalancerReachesGatewaysOverUnixSockets(t *testing.T) {
	cfg := testConfig(t)
	cfg.GatewayAddrs = "127.0.0.1:0,127.0.0.1:0"
	p, err := Start(t.Context(), cfg, testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })

	for i := range 4 {
		get(t, p.BalancerURL+"/healthz", fmt.Sprintf("request %d through the balancer", i+1))
	}
	for i, gw := range p.GatewayURLs {
		get(t, gw+"/healthz", "gateway over TCP")
		nets := map[string]int{}
		k := p.gwKill[i]
		k.mu.Lock()
		for c := range k.conns {
			nets[c.LocalAddr().Network()]++
		}
		k.mu.Unlock()
		if nets["unix"] == 0 {
			t.Errorf("gateway %s has open connections %v, want the balancer's on its Unix socket", gw, nets)
		}
	}
}

// get fails the test unless GET url answers 200.
func get(t *testing.T, url, what string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s: GET %s = %d, want 200", what, url, res.StatusCode)
	}
}

// TestMergedListener: one Accept serves both listeners; a Unix peer shows
// as loopback; Close closes both.
func TestMergedListener(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("@scalelab-test-%d", time.Now().UnixNano())
	unix, err := net.Listen("unix", name)
	if err != nil {
		tcp.Close()
		t.Skipf("no abstract Unix sockets here: %v", err)
	}
	m := newMergedListener(tcp, unix)
	t.Cleanup(func() { m.Close() })
	if m.Addr() != tcp.Addr() {
		t.Errorf("Addr = %v, want the TCP listener's %v", m.Addr(), tcp.Addr())
	}

	for _, network := range []string{"tcp", "unix"} {
		addr := tcp.Addr().String()
		if network == "unix" {
			addr = name
		}
		client, err := net.Dial(network, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := m.Accept()
		if err != nil {
			t.Fatalf("Accept after a %s dial: %v", network, err)
		}
		defer server.Close()
		if got := server.LocalAddr().Network(); got != network {
			t.Errorf("accepted a %s connection after a %s dial", got, network)
		}
		ra, ok := server.RemoteAddr().(*net.TCPAddr)
		if !ok || !ra.IP.IsLoopback() {
			t.Errorf("%s peer's RemoteAddr = %v, want a loopback address", network, server.RemoteAddr())
		}
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close = %v, want the first's nil", err)
	}
	if _, err := m.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	for _, d := range [][2]string{{"tcp", tcp.Addr().String()}, {"unix", name}} {
		if c, err := net.DialTimeout(d[0], d[1], time.Second); err == nil {
			c.Close()
			t.Errorf("%s listener still accepts after Close", d[0])
		}
	}
}
