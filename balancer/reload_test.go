package balancer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// writeConfig writes a configuration file.
func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// postReload sends POST /-/reload to the balancer at base with token.
func postReload(t *testing.T, base, token string) (int, []byte) {
	t.Helper()
	req := newRequest(t, http.MethodPost, adminOf(t, base)+"/-/reload", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, body := do(t, newClient(t), req)
	return resp.StatusCode, body
}

// TestReload: a reload (POST /-/reload or the Reload channel) puts the
// file's backends, weights, policy and limits in force without a
// restart; a request in flight across it finishes; a bad file is refused
// with the reason and the settings in force stay.
func TestReload(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		w.Header().Set("X-Served-By", "slow")
	}))
	t.Cleanup(slow.Close)
	a, b := echoBackend(t, "a"), echoBackend(t, "b")
	file := filepath.Join(t.TempDir(), "balancer.json")
	writeConfig(t, file, fmt.Sprintf(`{"backends":[%q],"max_inflight":100}`, slow.URL))
	cfg := testConfig("http://127.0.0.1:1") // replaced by the file
	cfg.ConfigFile = file
	hup := make(chan struct{})
	cfg.Reload = hup
	base := startBalancer(t, cfg)
	c := newClient(t)
	admin := adminToken(t, "admin")

	if s := balancerStatus(t, c, base); len(s.Backends) != 1 || s.Backends[0].URL != slow.URL || s.Policy != PolicyRoundRobin {
		t.Fatalf("status at start = %+v, want the file's one backend", s)
	}
	inflight := make(chan int, 1)
	go func() {
		r, err := c.Get(base + "/slow")
		if err != nil {
			inflight <- 0
			return
		}
		r.Body.Close()
		inflight <- r.StatusCode
	}()
	testutil.Eventually(t, 5*time.Second, func() error {
		if s := balancerStatus(t, c, base); s.Backends[0].InFlight != 1 {
			return errors.New("the slow request is not in flight yet")
		}
		return nil
	})

	writeConfig(t, file, fmt.Sprintf(`{"backends":[%q,%q],"weights":[3,1],"policy":"weighted_round_robin","max_retries":1}`, a.URL, b.URL))
	if status, body := postReload(t, base, admin); status != http.StatusOK || !strings.Contains(string(body), `"weighted_round_robin"`) {
		t.Fatalf("POST /-/reload = %d %s", status, body)
	}
	s := balancerStatus(t, c, base)
	if s.Policy != PolicyWeightedRoundRobin || len(s.Backends) != 2 || s.Backends[0].Weight != 3 || s.Backends[1].Weight != 1 {
		t.Errorf("status after the reload = %+v, want a 3:1 weighted pair", s)
	}
	seen := map[string]int{}
	for range 8 {
		r, _ := get(t, c, base+"/x")
		seen[r.Header.Get("X-Served-By")]++
	}
	if seen["a"] != 6 || seen["b"] != 2 {
		t.Errorf("8 requests after the reload went %v, want a 6, b 2", seen)
	}
	close(release)
	if got := <-inflight; got != http.StatusOK {
		t.Errorf("the request in flight across the reload got %d, want 200", got)
	}

	// Refused: the reason, and nothing changes.
	for _, bad := range []struct{ body, want string }{
		{`{"backends":["ftp://x"]}`, "ftp://x"},
		{`{"policy":"random"}`, "random"},
		{`{"backends":[`, "--config"},
		{`{"bakends":["http://a"]}`, "bakends"},
		{`{"weights":[1]}`, "weights"},
	} {
		writeConfig(t, file, bad.body)
		if status, body := postReload(t, base, admin); status != http.StatusBadRequest || !strings.Contains(string(body), bad.want) {
			t.Errorf("reload of %s = %d %s, want 400 naming %q", bad.body, status, body, bad.want)
		}
	}
	if s := balancerStatus(t, c, base); s.Policy != PolicyWeightedRoundRobin || len(s.Backends) != 2 {
		t.Errorf("status after refused reloads = %+v, want the last good one", s)
	}
	if status, _ := postReload(t, base, ""); status != http.StatusUnauthorized {
		t.Errorf("POST /-/reload without a token = %d, want 401", status)
	}

	// The Reload channel (SIGHUP in the balancer command) does the same.
	writeConfig(t, file, fmt.Sprintf(`{"backends":[%q],"policy":"least_connections"}`, b.URL))
	hup <- struct{}{}
	testutil.Eventually(t, 5*time.Second, func() error {
		if s := balancerStatus(t, c, base); s.Policy != PolicyLeastConnections || len(s.Backends) != 1 || s.Backends[0].URL != b.URL {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})
}

// TestReloadWithoutFile: a balancer started without --config has nothing
// to reload, and says so.
func TestReloadWithoutFile(t *testing.T) {
	base := startBalancer(t, testConfig(echoBackend(t, "a").URL))
	status, body := postReload(t, base, adminToken(t, "admin"))
	var e struct {
		Error struct{ Code, Message string }
	}
	if status != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Error.Message, "--config") {
		t.Errorf("POST /-/reload without --config = %d %s", status, body)
	}
}
