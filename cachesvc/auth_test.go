package cachesvc

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/auth/authtest"
)

// protected are the routes that need a token, and the scope each needs.
var protected = []struct {
	method, path, body string
	scope              string
}{
	{"POST", "/cache/k", `{"value":"forged"}`, auth.ScopeCacheWrite},
	{"DELETE", "/cache/k", "", auth.ScopeCacheWrite},
	{"DELETE", "/cache", "", auth.ScopeCacheWrite},
	{"GET", "/cache/k", "", auth.ScopeCacheRead},
}

// TestAuthRefusals attacks the cache API as a stranger: without a token,
// with each of package auth's bad tokens (expired, alg:none, wrong key,
// …) and with a valid token that lacks the route's scope. Writes, deletes
// and the flush answer 401 or 403 and change nothing; reads of a value
// answer 401 or 403 and reveal nothing. Stats and ops stay open.
func TestAuthRefusals(t *testing.T) {
	t.Parallel()
	f := authtest.New(t)
	cfg := testConfig()
	cfg.JWT = f.Keys
	in := startCache(t, startNATS(t), cfg)
	in.auth = "Bearer " + sign(t, f.Keys, auth.ScopeCacheRead, auth.ScopeCacheWrite)
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":"original"}`), http.StatusOK, &map[string]string{})

	// unchanged checks, with a good token, that k still holds its value
	// and that nothing was flushed.
	unchanged := func(t *testing.T, what string) {
		t.Helper()
		var v value
		in.doJSON(t, "GET", "/cache/k", nil, http.StatusOK, &v)
		if string(v.Value) != `"original"` {
			t.Fatalf("after %s: GET /cache/k = %s, want \"original\" (unchanged)", what, v.Value)
		}
	}
	refused := func(t *testing.T, authz string, wantStatus int, wantCode apperr.Code) {
		t.Helper()
		for _, p := range protected {
			var body []byte
			if p.body != "" {
				body = []byte(p.body)
			}
			status, h, b := in.doAuth(t, authz, p.method, p.path, body)
			what := p.method + " " + p.path
			if status >= 500 {
				t.Fatalf("%s with %.40q = %d %s, never a 5xx", what, authz, status, b)
			}
			wantError(t, what, status, b, wantStatus, wantCode)
			if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s: WWW-Authenticate = %q, want a Bearer challenge", what, h.Get("WWW-Authenticate"))
			}
			if strings.Contains(string(b), "original") {
				t.Errorf("%s refused, but its body %s reveals the value", what, b)
			}
			if tok, _ := auth.FromHeader(authz); len(tok) > 16 && strings.Contains(string(b), tok) {
				t.Errorf("%s: body %.200s echoes the token", what, b)
			}
			unchanged(t, what)
		}
	}

	t.Run("anonymous", func(t *testing.T) { refused(t, "", http.StatusUnauthorized, apperr.Unauthorized) })
	// One after the other, as in the gateway's TestAuthBadTokens: the
	// tokens are made for now.
	for _, tc := range f.Bad(t, time.Now()) {
		if tc.HSOnly {
			continue // made for a verifier without the JWKS
		}
		t.Run(tc.Name, func(t *testing.T) { refused(t, tc.Header, http.StatusUnauthorized, apperr.Unauthorized) })
	}
	t.Run("without the scope", func(t *testing.T) {
		for _, p := range protected {
			// Every scope but the route's own.
			var others []string
			for _, s := range auth.AllScopes {
				if s != p.scope {
					others = append(others, s)
				}
			}
			var body []byte
			if p.body != "" {
				body = []byte(p.body)
			}
			status, _, b := in.doAuth(t, "Bearer "+sign(t, f.Keys, others...), p.method, p.path, body)
			wantError(t, p.method+" "+p.path+" without "+p.scope, status, b, http.StatusForbidden, apperr.Forbidden)
			unchanged(t, p.method+" "+p.path+" without "+p.scope)
		}
	})

	// What stays open: the statistics and the ops routes.
	for _, path := range []string{"/cache", "/healthz", "/readyz", "/metrics"} {
		if status, _, b := in.doAuth(t, "", "GET", path, nil); status != http.StatusOK {
			t.Errorf("GET %s without a token = %d %s, want 200", path, status, b)
		}
	}

	// With the scope, each works, the lab's bare "Authorization: <jwt>"
	// too.
	in.auth = strings.TrimPrefix(in.auth, "Bearer ")
	in.doJSON(t, "POST", "/cache/k", []byte(`{"value":"changed"}`), http.StatusOK, &map[string]string{})
	var v value
	in.doJSON(t, "GET", "/cache/k", nil, http.StatusOK, &v)
	if string(v.Value) != `"changed"` {
		t.Errorf("GET /cache/k after an authorized POST = %s, want \"changed\"", v.Value)
	}
	in.doJSON(t, "DELETE", "/cache/k", nil, http.StatusOK, &map[string]string{})
	var fl flushed
	in.doJSON(t, "DELETE", "/cache", nil, http.StatusOK, &fl)
}

// TestRunWithoutKeysRefusesEverything: a caller that skips Validate and
// runs cachesvc without a secret gets an API that refuses every token,
// not one that lets writes through.
func TestRunWithoutKeysRefusesEverything(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.JWT = auth.Keys{Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience}
	in := startCache(t, startNATS(t), cfg)
	status, _, b := in.do(t, "POST", "/cache/k", []byte(`{"value":"forged"}`))
	wantError(t, "POST /cache/k on a cachesvc without keys", status, b, http.StatusUnauthorized, apperr.Unauthorized)
}

// sign returns an HS256 token of keys for subject tester with scopes.
func sign(t *testing.T, keys auth.Keys, scopes ...string) string {
	t.Helper()
	tok, _, err := keys.Issue("tester", scopes, time.Hour, time.Now())
	if err != nil {
		t.Fatalf("Issue() = %v", err)
	}
	return tok
}
