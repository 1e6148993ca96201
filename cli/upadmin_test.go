package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestUpAdminListener attacks the balancer of `up` as a stranger would:
// the public port has no drain route, and the admin listener the banner
// names refuses a drain without a token, with a token lacking the admin
// scope and under a foreign Host; the token the banner prints drains and
// undrains, and the reads and the dashboard answer on loopback.
func TestUpAdminListener(t *testing.T) {
	t.Parallel()
	p := startUp(t, t.TempDir())
	// The gateways, as GET /-/balancer names them.
	var state struct {
		Backends []struct {
			URL   string `json:"url"`
			State string `json:"state"`
		} `json:"backends"`
	}
	send := func(method, base, path, authz, host string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		if host != "" {
			req.Host = host
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("%s %s: read body: %v", method, path, err)
		}
		return res.StatusCode, body
	}
	status, body := send(http.MethodGet, p.adminURL, "/-/balancer", "", "")
	if status != http.StatusOK {
		t.Fatalf("GET %s/-/balancer = %d %s, want 200", p.adminURL, status, body)
	}
	if err := json.Unmarshal(body, &state); err != nil || len(state.Backends) == 0 {
		t.Fatalf("decode /-/balancer %s: %v", body, err)
	}
	gw := state.Backends[0].URL
	drain := "/-/backends/drain?url=" + url.QueryEscape(gw)
	bearer := "Bearer " + p.token

	for _, tc := range []struct {
		name, base, authz, host string
		want                    int
	}{
		{"public port, token", p.base, bearer, "", http.StatusNotFound},
		{"admin, no token", p.adminURL, "", "", http.StatusUnauthorized},
		{"admin, garbage token", p.adminURL, "Bearer not.a.token", "", http.StatusUnauthorized},
		{"admin, foreign Host", p.adminURL, bearer, "evil.example:" + p.adminURL[strings.LastIndexByte(p.adminURL, ':')+1:], http.StatusMisdirectedRequest},
	} {
		if status, body := send(http.MethodPost, tc.base, drain, tc.authz, tc.host); status != tc.want {
			t.Errorf("%s: POST drain = %d %s, want %d", tc.name, status, body, tc.want)
		}
	}
	if status, body := send(http.MethodGet, p.adminURL, "/-/balancer", "", ""); status != http.StatusOK || strings.Contains(string(body), "draining") {
		t.Fatalf("after refused drains GET /-/balancer = %d %s, want 200 with nothing draining", status, body)
	}

	if status, body := send(http.MethodPost, p.adminURL, drain, bearer, ""); status != http.StatusOK || !strings.Contains(string(body), `"state":"draining"`) {
		t.Errorf("drain with the printed token = %d %s, want 200 draining", status, body)
	}
	if status, body := send(http.MethodPost, p.adminURL, "/-/backends/undrain?url="+url.QueryEscape(gw), bearer, ""); status != http.StatusOK {
		t.Errorf("undrain with the printed token = %d %s, want 200", status, body)
	}
	for _, path := range []string{"/-/metrics", "/-/dashboard/state"} {
		if status, body := send(http.MethodGet, p.adminURL, path, "", ""); status != http.StatusOK {
			t.Errorf("GET %s on the admin listener = %d %s, want 200", path, status, body)
		}
		if status, body := send(http.MethodGet, p.base, path, "", ""); status != http.StatusNotFound {
			t.Errorf("GET %s on the public port = %d %s, want 404", path, status, body)
		}
	}
	if !strings.Contains(p.stdout.String(), p.adminURL+"/-/dashboard") {
		t.Errorf("the banner does not link the dashboard %s/-/dashboard:\n%s", p.adminURL, p.stdout)
	}
	if !strings.Contains(p.stdout.String(), p.base+"/console/") {
		t.Errorf("the banner does not link the task console %s/console/:\n%s", p.base, p.stdout)
	}
}
