package gateway

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/auth/authtest"
	"github.com/scalelab/scalelab/internal/testutil"
)

// authGateways starts two gateways on one NATS server, one that verifies
// HS256 and the fixture's JWKS and one that verifies HS256 only, and
// returns their base URLs. No other service runs: authentication answers
// before any service is called.
func authGateways(t *testing.T, f *authtest.Fixture) (full, hsOnly string) {
	t.Helper()
	nc := testutil.Connect(t, testutil.StartNATS(t))
	full = startGateway(t, nc, func(c *Config) { c.ID, c.JWT = "gw-jwks", f.Keys })
	hsOnly = startGateway(t, nc, func(c *Config) { c.ID, c.JWT = "gw-hs", f.HSOnly })
	return full, hsOnly
}

// TestAuthBadTokens sends package auth's table of bad tokens to a real
// gateway: each is a 401 with the JSON error body and a WWW-Authenticate
// challenge, never a 5xx, and the message never echoes the token.
func TestAuthBadTokens(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	full, hsOnly := authGateways(t, f)
	cases := f.Bad(t, time.Now())
	if len(cases) < 20 {
		t.Fatalf("Bad() has %d cases, want at least 20", len(cases))
	}
	// One after the other, not in parallel: the tokens are made for now,
	// and parallel subtests can wait for a free slot for longer than a
	// token's time window (a not-yet-valid one would become valid).
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			base := full
			if tc.HSOnly {
				base = hsOnly
			}
			for _, path := range []string{"/data", "/tasks/abc"} {
				r := send(t, "GET", base+path, "", "", map[string]string{"Authorization": tc.Header})
				if r.status >= 500 {
					t.Fatalf("GET %s with %.60q… = %d %s, want 401 and never a 5xx", path, tc.Header, r.status, r.body)
				}
				if r.status != 401 || errorCode(t, r) != "unauthorized" {
					t.Errorf("GET %s with %.60q… = %d %s, want 401 unauthorized", path, tc.Header, r.status, r.body)
				}
				if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
					t.Errorf("GET %s: Content-Type = %q, want application/json", path, ct)
				}
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
					t.Errorf("GET %s: WWW-Authenticate = %q, want a Bearer challenge", path, r.header.Get("WWW-Authenticate"))
				}
				if tok, _ := auth.FromHeader(tc.Header); len(tok) > 16 && strings.Contains(string(r.body), tok) {
					t.Errorf("GET %s: body %.200s… echoes the token", path, r.body)
				}
			}
		})
	}
}

// TestAuthGoodTokens: HS256, EdDSA and RS256 tokens (both rotated Ed25519
// kids) get past authentication: /tasks/abc answers 404, an unknown task.
func TestAuthGoodTokens(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	full, hsOnly := authGateways(t, f)
	// One after the other, as in TestAuthBadTokens: "expired within
	// leeway" is good for only 20 s after now.
	for _, tc := range f.Good(t, time.Now()) {
		t.Run(tc.Name, func(t *testing.T) {
			base := full
			if tc.HSOnly {
				base = hsOnly
			}
			r := send(t, "GET", base+"/tasks/abc", "", "", map[string]string{"Authorization": tc.Header})
			if r.status != 404 || errorCode(t, r) != "not_found" {
				t.Errorf("GET /tasks/abc with %.60q… = %d %s, want 404 not_found", tc.Header, r.status, r.body)
			}
		})
	}
}

// pyjwtScript prints an HS256 token made by PyJWT from the environment.
const pyjwtScript = `import jwt, os, time
now = int(time.time())
claims = {"sub": "py", "iss": os.environ["ISS"], "aud": os.environ["AUD"], "iat": now,
          "exp": now + int(os.environ["TTL"]), "scope": os.environ["SCOPE"]}
tok = jwt.encode(claims, os.environ["KEY"], algorithm="HS256")
print(tok.decode() if isinstance(tok, bytes) else tok)
`

// findPyJWT returns a python3 that can import jwt: the one on PATH, or
// Debian's, which is where python3-jwt installs (a pyenv python3 on PATH
// does not see it).
func findPyJWT(t *testing.T) (string, error) {
	t.Helper()
	var tried []string
	for _, name := range []string{"python3", "/usr/bin/python3"} {
		py, err := exec.LookPath(name)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		out, err := exec.CommandContext(t.Context(), py, "-c", "import jwt").CombinedOutput()
		if err == nil {
			return py, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v: %s", py, err, strings.TrimSpace(string(out))))
	}
	return "", errors.New(strings.Join(tried, "; "))
}

// pyjwt mints a token with PyJWT.
func pyjwt(t *testing.T, py, key, scope string, ttl time.Duration) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), py, "-c", pyjwtScript)
	cmd.Env = append(os.Environ(), "KEY="+key, "SCOPE="+scope, "TTL="+fmt.Sprint(int(ttl.Seconds())),
		"ISS="+auth.DefaultIssuer, "AUD="+auth.DefaultAudience)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("PyJWT: %v\n%s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// TestPyJWTToken: a token minted by another library, PyJWT (Debian's
// python3-jwt, which .ci/run installs), with the right key is accepted and
// its scope honoured; with another key or expired it is refused.
func TestPyJWTToken(t *testing.T) {
	t.Parallel()
	py, err := findPyJWT(t)
	if err != nil {
		t.Skipf("PyJWT is not importable (apt-get install python3-jwt; .ci/run does): %v", err)
	}
	nc := testutil.Connect(t, testutil.StartNATS(t))
	base := startGateway(t, nc)
	secret := string(testKeys.Secret)
	tests := []struct {
		name, key, scope string
		ttl              time.Duration
		want             int
		wantCode         string
	}{
		{"right key", secret, "tasks:read", time.Hour, 404, "not_found"},
		{"right key, bare header", secret, "tasks:read data:read", time.Hour, 404, "not_found"},
		{"right key, scope missing", secret, "data:read", time.Hour, 403, "forbidden"},
		{"other key", strings.Repeat("k", 32), "tasks:read", time.Hour, 401, "unauthorized"},
		{"expired", secret, "tasks:read", -time.Hour, 401, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := pyjwt(t, py, tt.key, tt.scope, tt.ttl)
			header := "Bearer " + tok
			if strings.Contains(tt.name, "bare") {
				header = tok
			}
			r := send(t, "GET", base+"/tasks/abc", "", "", map[string]string{"Authorization": header})
			if r.status != tt.want || errorCode(t, r) != tt.wantCode {
				t.Errorf("GET /tasks/abc with a PyJWT token = %d %s, want %d %s", r.status, r.body, tt.want, tt.wantCode)
			}
		})
	}
}
