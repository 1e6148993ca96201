package balancer

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// adminPost sends POST /-/backends/<action>?url=<backend> to the admin
// listener of the balancer at base, with a token of scope admin, and
// decodes the answer when it is 200.
func adminPost(t *testing.T, c *http.Client, base, action, backend string) (int, BackendStatus, string) {
	t.Helper()
	req := newRequest(t, http.MethodPost, adminOf(t, base)+"/-/backends/"+action+"?url="+url.QueryEscape(backend), nil)
	req.Header.Set("Authorization", "Bearer "+adminToken(t, auth.ScopeAdmin))
	res, body := do(t, c, req)
	var s BackendStatus
	if res.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &s); err != nil {
			t.Fatalf("decode %s answer %q: %v", action, body, err)
		}
	}
	return res.StatusCode, s, string(body)
}

// TestDrain drains a gateway that has a request in flight: the request
// finishes, the gateway gets no new requests, and undrain brings it back.
func TestDrain(t *testing.T) {
	t.Parallel()
	started, release := make(chan struct{}), make(chan struct{})
	drained := &switchable{name: "gw0"}
	gw0 := startKillable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			<-release
			_, _ = io.WriteString(w, "slow done")
			return
		}
		drained.ServeHTTP(w, r)
	}))
	gw1 := echoBackend(t, "gw1")
	base := startBalancer(t, testConfig(gw0.url(), gw1.URL))
	c := newClient(t)

	// Round robin from a fresh balancer: the first request goes to gw0.
	type result struct {
		status int
		body   string
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		res, err := c.Do(newRequest(t, http.MethodGet, base+"/slow", nil))
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		slow <- result{status: res.StatusCode, body: string(body), err: err}
	}()
	<-started

	status, s, body := adminPost(t, c, base, "drain", gw0.url())
	if status != http.StatusOK || s.State != stateDraining || s.InFlight != 1 {
		t.Fatalf("drain = %d %s, want 200 with state draining and 1 in flight", status, body)
	}
	for i, name := range servedBy(t, c, base, 10) {
		if name != "gw1" {
			t.Fatalf("request %d served by %q while gw0 drains, want gw1", i, name)
		}
	}
	if n := drained.hits.Load(); n != 0 {
		t.Errorf("draining gateway got %d new requests, want 0", n)
	}

	close(release)
	if r := <-slow; r.err != nil || r.status != http.StatusOK || r.body != "slow done" {
		t.Errorf("in-flight request = %d %q, %v; want 200 \"slow done\", nil", r.status, r.body, r.err)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if b, _ := balancerStatus(t, c, base).backendOf(gw0.url()); b.InFlight != 0 || b.State != stateDraining {
			return fmt.Errorf("gw0 is %s with %d in flight, want draining and idle", b.State, b.InFlight)
		}
		return nil
	})

	if status, s, body := adminPost(t, c, base, "undrain", gw0.url()); status != http.StatusOK || s.State != stateHealthy {
		t.Fatalf("undrain = %d %s, want 200 with state healthy", status, body)
	}
	got := strings.Join(servedBy(t, c, base, 4), " ")
	if !strings.Contains(got, "gw0") || !strings.Contains(got, "gw1") {
		t.Errorf("after undrain X-Served-By = %q, want both gateways", got)
	}
}

func TestDrainErrors(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	base := startBalancer(t, testConfig(gw.URL))
	c := newClient(t)
	tests := []struct {
		name       string
		method     string
		target     string
		wantStatus int
		wantCode   string
	}{
		{"no url", http.MethodPost, "/-/backends/drain", http.StatusBadRequest, "invalid"},
		{"not a URL", http.MethodPost, "/-/backends/drain?url=foo", http.StatusBadRequest, "invalid"},
		{"unknown gateway", http.MethodPost, "/-/backends/undrain?url=" + url.QueryEscape("http://127.0.0.1:1"),
			http.StatusNotFound, "not_found"},
		{"GET is no admin route", http.MethodGet, "/-/backends/drain?url=" + url.QueryEscape(gw.URL),
			http.StatusNotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, tt.method, adminOf(t, base)+tt.target, nil)
			req.Header.Set("Authorization", "Bearer "+adminToken(t, auth.ScopeAdmin))
			res, body := do(t, c, req)
			var got struct {
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			_ = json.Unmarshal(body, &got)
			if res.StatusCode != tt.wantStatus || got.Error.Code != tt.wantCode {
				t.Errorf("%s %s = %d %s, want %d with code %s", tt.method, tt.target, res.StatusCode, body,
					tt.wantStatus, tt.wantCode)
			}
		})
	}
	// The URL is matched in its normal form: a trailing-slash-free URL as
	// listed.
	if status, s, body := adminPost(t, c, base, "drain", gw.URL); status != http.StatusOK || s.URL != gw.URL {
		t.Errorf("drain %s = %d %s, want 200 for it", gw.URL, status, body)
	}
}

func TestAdminOff(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	cfg := testConfig(gw.URL)
	cfg.Admin = false
	base := startBalancer(t, cfg)
	c := newClient(t)
	if status, _, body := adminPost(t, c, base, "drain", gw.URL); status != http.StatusNotFound {
		t.Errorf("drain with --admin=false = %d %s, want 404", status, body)
	}
	if s := balancerStatus(t, c, base); s.Backends[0].State != stateHealthy {
		t.Errorf("gateway is %s after a refused drain, want healthy", s.Backends[0].State)
	}
}
