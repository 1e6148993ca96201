package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/auth/authtest"
)

// errorCode returns the code of a house error body, or "" if body is not
// one.
func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// drainRequest is POST /-/backends/drain?url=<gw> at base, with the
// Authorization header auth when it is not "".
func drainRequest(t *testing.T, base, gw, authz string) *http.Request {
	t.Helper()
	req := newRequest(t, http.MethodPost, base+"/-/backends/drain?url="+url.QueryEscape(gw), nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return req
}

// assertNotDrained fails t unless gw is still healthy on the balancer at
// base.
func assertNotDrained(t *testing.T, c *http.Client, base, gw string) {
	t.Helper()
	if b, ok := balancerStatus(t, c, base).backendOf(gw); !ok || b.State != stateHealthy {
		t.Errorf("gateway %s is %q after a refused drain, want healthy", gw, b.State)
	}
}

// TestPublicPortServesNoOpsRoutes attacks the public port as anyone who
// can reach it would: the drain routes, the state, the metrics and the
// dashboard answer 404 there and drain nothing; only the probes answer.
func TestPublicPortServesNoOpsRoutes(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	cfg := testConfig(gw.URL)
	cfg.Dashboard = newStreamDashboard()
	base := startBalancer(t, cfg)
	c := newClient(t)
	tok := "Bearer " + adminToken(t, auth.AllScopes...)

	for _, action := range []string{"drain", "undrain"} {
		for _, authz := range []string{"", tok} {
			req := newRequest(t, http.MethodPost, base+"/-/backends/"+action+"?url="+url.QueryEscape(gw.URL), nil)
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			res, body := do(t, c, req)
			if res.StatusCode != http.StatusNotFound || errorCode(body) != "not_found" {
				t.Errorf("POST /-/backends/%s on the public port (token: %t) = %d %s, want 404 not_found",
					action, authz != "", res.StatusCode, body)
			}
		}
	}
	assertNotDrained(t, c, base, gw.URL)
	for _, p := range []string{"/-/balancer", "/-/metrics", "/-/dashboard", "/-/dashboard/state", "/-/dashboard/events"} {
		res, body := get(t, c, base+p)
		if res.StatusCode != http.StatusNotFound || errorCode(body) != "not_found" {
			t.Errorf("GET %s on the public port = %d %s, want 404 not_found", p, res.StatusCode, body)
		}
	}
	for _, p := range []string{"/-/healthz", "/-/readyz"} {
		if res, body := get(t, c, base+p); res.StatusCode != http.StatusOK {
			t.Errorf("GET %s on the public port = %d %s, want 200", p, res.StatusCode, body)
		}
	}
}

// TestAdminListenerRefusesStrangers attacks the admin listener's drain
// route without a token, with tokens that do not verify, with a token
// without the admin scope, from another site and under a foreign Host:
// each is refused and drains nothing; a valid admin token drains.
func TestAdminListenerRefusesStrangers(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	base := startBalancer(t, testConfig(gw.URL))
	admin := adminOf(t, base)
	adminHost := strings.TrimPrefix(admin, "http://")
	_, port, _ := net.SplitHostPort(adminHost)
	c := newClient(t)
	good := "Bearer " + adminToken(t, auth.ScopeAdmin)
	now := time.Now()

	type attack struct {
		name       string
		authz      string
		edit       func(*http.Request)
		wantStatus int
		wantCode   string
	}
	attacks := []attack{
		{name: "no token", wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "not a bearer token", authz: "Basic YWRtaW46YWRtaW4=", wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "token without the admin scope", authz: "Bearer " + adminToken(t, auth.ScopeDataRead, auth.ScopeTasksAdmin),
			wantStatus: http.StatusForbidden, wantCode: "forbidden"},
		{name: "expired admin token", authz: "Bearer " + authtest.Sign(t, jwt.SigningMethodHS256, func() auth.Claims {
			c := authtest.Claims(now)
			c.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-2 * auth.Leeway))
			return c
		}(), []byte(authtest.Secret), nil), wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "cross-site Origin, valid token", authz: good, edit: func(r *http.Request) {
			r.Header.Set("Origin", "http://evil.example")
		}, wantStatus: http.StatusForbidden, wantCode: "forbidden"},
		{name: "Origin of another port, valid token", authz: good, edit: func(r *http.Request) {
			r.Header.Set("Origin", "http://127.0.0.1:8000")
		}, wantStatus: http.StatusForbidden, wantCode: "forbidden"},
		{name: "Sec-Fetch-Site cross-site, valid token", authz: good, edit: func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "cross-site")
		}, wantStatus: http.StatusForbidden, wantCode: "forbidden"},
		{name: "Sec-Fetch-Site same-site, valid token", authz: good, edit: func(r *http.Request) {
			r.Header.Set("Sec-Fetch-Site", "same-site")
		}, wantStatus: http.StatusForbidden, wantCode: "forbidden"},
		{name: "foreign Host (DNS rebinding), valid token", authz: good, edit: func(r *http.Request) {
			r.Host = "evil.example:" + port
		}, wantStatus: http.StatusMisdirectedRequest, wantCode: "forbidden"},
	}
	// Every token the gateways refuse (alg none, algorithm confusion,
	// wrong key, issuer, audience...), each with the admin scope:
	// authtest's table. The balancer's keys here are HS256 only, which
	// refuses the cases meant for a verifier with a JWKS too.
	for _, bad := range authtest.New(t).Bad(t, now) {
		attacks = append(attacks, attack{name: "bad token: " + bad.Name, authz: bad.Header,
			wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"})
	}
	// The group returns once its parallel subtests are done.
	t.Run("attacks", func(t *testing.T) {
		for _, a := range attacks {
			t.Run(a.name, func(t *testing.T) {
				t.Parallel()
				req := drainRequest(t, admin, gw.URL, a.authz)
				if a.edit != nil {
					a.edit(req)
				}
				res, body := do(t, c, req)
				if res.StatusCode != a.wantStatus || errorCode(body) != a.wantCode {
					t.Errorf("drain = %d %s, want %d with code %s", res.StatusCode, body, a.wantStatus, a.wantCode)
				}
			})
		}
	})
	assertNotDrained(t, c, base, gw.URL)

	t.Run("admin token drains", func(t *testing.T) {
		for _, h := range []string{adminHost, "localhost:" + port, "LOCALHOST:" + port} {
			req := drainRequest(t, admin, gw.URL, good)
			req.Host = h
			req.Header.Set("Origin", "http://"+h)
			req.Header.Set("Sec-Fetch-Site", "same-origin")
			res, body := do(t, c, req)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("drain with an admin token, Host %s, same origin = %d %s, want 200", h, res.StatusCode, body)
			}
		}
		if b, _ := balancerStatus(t, c, base).backendOf(gw.URL); b.State != stateDraining {
			t.Errorf("gateway is %s after an admin drain, want draining", b.State)
		}
	})
}

// TestAdminListenerRefusesForeignHostReads: a page that rebinds its DNS
// name to 127.0.0.1 reaches the admin listener under that name; every
// read is refused then, and served under the listener's own names.
func TestAdminListenerRefusesForeignHostReads(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	cfg := testConfig(gw.URL)
	cfg.Dashboard = newStreamDashboard()
	base := startBalancer(t, cfg)
	admin := adminOf(t, base)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(admin, "http://"))
	c := newClient(t)
	for _, p := range []string{"/-/balancer", "/-/metrics", "/-/dashboard/state", "/-/healthz", "/-/nope"} {
		for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port, "127.0.0.1:1"} {
			req := newRequest(t, http.MethodGet, admin+p, nil)
			req.Host = host
			res, body := do(t, c, req)
			if res.StatusCode != http.StatusMisdirectedRequest || errorCode(body) != "forbidden" {
				t.Errorf("GET %s with Host %s = %d %s, want 421 forbidden", p, host, res.StatusCode, body)
			}
		}
		for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "[::1]:" + port} {
			req := newRequest(t, http.MethodGet, admin+p, nil)
			req.Host = host
			res, body := do(t, c, req)
			want := http.StatusOK
			if p == "/-/nope" {
				want = http.StatusNotFound
			}
			if res.StatusCode != want {
				t.Errorf("GET %s with Host %s = %d %s, want %d", p, host, res.StatusCode, body, want)
			}
		}
	}
}

// TestAdminWithoutKeys: a balancer started without JWT keys refuses the
// state-changing routes, whatever the request carries; it never leaves
// them open.
func TestAdminWithoutKeys(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "gw0")
	cfg := testConfig(gw.URL)
	cfg.JWT = auth.Keys{}
	base := startBalancer(t, cfg)
	c := newClient(t)
	for _, authz := range []string{"", "Bearer " + adminToken(t, auth.ScopeAdmin)} {
		res, body := do(t, c, drainRequest(t, adminOf(t, base), gw.URL, authz))
		if res.StatusCode != http.StatusForbidden || errorCode(body) != "forbidden" {
			t.Errorf("drain without keys (token: %t) = %d %s, want 403 forbidden", authz != "", res.StatusCode, body)
		}
	}
	assertNotDrained(t, c, base, gw.URL)
}

// TestAdminAddrBusy: the admin listener is bound at start, so a busy
// port fails Run at once with its address.
func TestAdminAddrBusy(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig("http://127.0.0.1:1")
	cfg.AdminAddr = busy.Addr().String()
	cfg.Addr = "127.0.0.1:0"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = Run(ctx, cfg, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run() with a busy --admin-addr = %v, want a listen error naming %s", err, busy.Addr())
	}
}

func TestHostsOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, addr, configured string
		extra                  []string
		want                   []string
	}{
		{"loopback", "127.0.0.1:8001", "127.0.0.1:8001", nil, []string{"localhost:8001", "127.0.0.1:8001", "[::1]:8001"}},
		{"wildcard", "[::]:8001", ":8001", nil, []string{"localhost:8001", "127.0.0.1:8001", "[::1]:8001"}},
		{"named", "10.0.0.5:9001", "Ops.Internal:9001", nil, []string{"localhost:9001", "127.0.0.1:9001", "[::1]:9001", "10.0.0.5:9001", "ops.internal:9001"}},
		{"published on another port", "[::]:8001", ":8001", []string{"127.0.0.1:18001", "LOCALHOST:18001"},
			[]string{"localhost:8001", "127.0.0.1:8001", "[::1]:8001", "127.0.0.1:18001", "localhost:18001"}},
		{"port 80", "127.0.0.1:80", "127.0.0.1:80", nil, []string{"localhost:80", "127.0.0.1:80", "[::1]:80", "localhost", "127.0.0.1", "[::1]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, err := net.ResolveTCPAddr("tcp", tt.addr)
			if err != nil {
				t.Fatal(err)
			}
			got := hostsOf(addr, tt.configured, tt.extra)
			if len(got) != len(tt.want) {
				t.Errorf("hostsOf(%s, %s) = %v, want %v", tt.addr, tt.configured, got, tt.want)
			}
			for _, h := range tt.want {
				if !got[h] {
					t.Errorf("hostsOf(%s, %s) lacks %s: %v", tt.addr, tt.configured, h, got)
				}
			}
		})
	}
}
