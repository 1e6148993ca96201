package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/crypto/bcrypt"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// putUser stores a user with a bcrypt hash of password at the cheapest
// cost dbsvc accepts.
func putUser(t *testing.T, db *dbsvc.Client, name, password string, scopes ...string) {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), dbsvc.MinBcryptCost)
	if err != nil {
		t.Fatalf("GenerateFromPassword() = %v", err)
	}
	if _, err := db.PutUser(t.Context(), "", dbsvc.UserPut{Name: name, PasswordHash: string(h), Scopes: scopes}); err != nil {
		t.Fatalf("PutUser(%s) = %v", name, err)
	}
}

// login posts credentials to /auth/token.
func login(t *testing.T, base, username, password string) result {
	t.Helper()
	body, err := json.Marshal(map[string]string{"username": username, "password": password})
	if err != nil {
		t.Fatal(err)
	}
	return send(t, http.MethodPost, base+"/auth/token", "", string(body), map[string]string{"Content-Type": "application/json"})
}

// issued reads a 200 answer of /auth/token.
func issued(t *testing.T, r result) (string, time.Time) {
	t.Helper()
	var body struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || r.status != http.StatusOK || body.Token == "" {
		t.Fatalf("POST /auth/token = %d %s, want 200 with a token", r.status, r.body)
	}
	return body.Token, body.ExpiresAt
}

// errorMessage returns the message of a JSON error body.
func errorMessage(t *testing.T, r result) string {
	t.Helper()
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	return e.Error.Message
}

// TestAuthTokenLogin: a user stored in dbsvc logs in, and the token it
// gets opens exactly the routes of its scopes. Every failed login gets
// the same 401.
func TestAuthTokenLogin(t *testing.T) {
	t.Parallel()
	st := startStack(t, 2000)
	db := dbsvc.NewClient(testutil.Connect(t, st.ns))
	const ttl = 10 * time.Minute
	// Unknown users are compared against a hash at the cheapest cost, not
	// the real dummyHash (TestAuthDummyHash checks its cost): this test
	// checks the answers, and at cost 12 each of its three unknown-user
	// compares takes some 4 s under -race with the gateway's one slot, so
	// on a loaded machine one outlasted the client's 10 s timeout and the
	// next login found the slot still taken (flaky).
	cheap, err := bcrypt.GenerateFromPassword([]byte("thrown away"), dbsvc.MinBcryptCost)
	if err != nil {
		t.Fatal(err)
	}
	base := startGateway(t, testutil.Connect(t, st.ns), func(c *Config) { c.TokenTTL, c.dummyHash = ttl, string(cheap) })
	putUser(t, db, "alice", "correct horse battery", auth.ScopeItemsRead)

	start := time.Now()
	r := login(t, base, "alice", "correct horse battery")
	tok, exp := issued(t, r)
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if exp.Before(start.Add(ttl).Add(-2*time.Second)) || exp.After(time.Now().Add(ttl)) {
		t.Errorf("expires_at = %v, want about now + %v", exp, ttl)
	}
	claims, err := auth.NewVerifier(testKeys).Verify(tok)
	if err != nil {
		t.Fatalf("Verify(issued token) = %v", err)
	}
	if claims.Subject != "alice" || claims.Scope != auth.ScopeItemsRead || !claims.ExpiresAt.Time.Equal(exp) {
		t.Errorf("claims = sub %q scope %q exp %v, want alice, %q, %v", claims.Subject, claims.Scope, claims.ExpiresAt, auth.ScopeItemsRead, exp)
	}

	// The token works where its scope allows, and only there.
	if r := get(t, base+"/items/1", tok); r.status != http.StatusOK {
		t.Errorf("GET /items/1 with alice's token = %d %s, want 200", r.status, r.body)
	}
	outside := []struct{ method, path, body string }{
		{http.MethodGet, "/data", ""},
		{http.MethodPut, "/items/1", `{"name":"x","price_cents":1,"stock":1}`},
		{http.MethodGet, "/tasks/abc", ""},
	}
	for _, o := range outside {
		if r := send(t, o.method, base+o.path, tok, o.body, nil); r.status != http.StatusForbidden || errorCode(t, r) != "forbidden" {
			t.Errorf("%s %s with alice's items:read token = %d %s, want 403 forbidden", o.method, o.path, r.status, r.body)
		}
	}

	// Scopes are read at every login: after an update the next token
	// carries the new ones.
	putUser(t, db, "alice", "correct horse battery", auth.ScopeDataRead, auth.ScopeTasksRead)
	tok2, _ := issued(t, login(t, base, "alice", "correct horse battery"))
	if r := get(t, base+"/data", tok2); r.status != http.StatusOK {
		t.Errorf("GET /data with the updated token = %d %.80s, want 200", r.status, r.body)
	}
	if r := get(t, base+"/items/1", tok2); r.status != http.StatusForbidden {
		t.Errorf("GET /items/1 with the updated token = %d, want 403", r.status)
	}

	// A 72-byte password, bcrypt's limit: with anything appended bcrypt
	// would still match, so the gateway refuses it.
	long := strings.Repeat("p", 72)
	putUser(t, db, "bob", long, auth.ScopeItemsRead)
	issued(t, login(t, base, "bob", long))

	refused := []struct {
		name, username, password string
	}{
		{"wrong password", "alice", "correct horse battery!"},
		{"password of another user", "alice", long},
		{"unknown user", "mallory", "correct horse battery"},
		{"user name of another case", "Alice", "correct horse battery"},
		{"name dbsvc would refuse", "al ice", "correct horse battery"},
		{"password past bcrypt's limit", "bob", long + "extra"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			r := login(t, base, tt.username, tt.password)
			if r.status != http.StatusUnauthorized || errorCode(t, r) != "unauthorized" {
				t.Fatalf("POST /auth/token = %d %s, want 401 unauthorized", r.status, r.body)
			}
			if got := errorMessage(t, r); got != "invalid username or password" {
				t.Errorf("message = %q, want %q (the same for every failure)", got, "invalid username or password")
			}
		})
	}

	bad := []struct {
		name, body string
		status     int
	}{
		{"unknown field", `{"username":"alice","password":"correct horse battery","scope":"items:write"}`, 400},
		{"not JSON", `username=alice&password=x`, 400},
		{"empty", ``, 400},
		{"empty object", `{}`, 400},
		{"no password", `{"username":"alice"}`, 400},
		{"empty username", `{"username":"","password":"correct horse battery"}`, 400},
		{"password as number", `{"username":"alice","password":123}`, 400},
		{"trailing data", `{"username":"alice","password":"correct horse battery"} {}`, 400},
		{"array", `[{"username":"alice","password":"correct horse battery"}]`, 400},
		{"oversize", `{"username":"alice","password":"` + strings.Repeat("x", 70000) + `"}`, 413},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, http.MethodPost, base+"/auth/token", "", tt.body, nil)
			if r.status != tt.status {
				t.Errorf("POST /auth/token %.40q = %d %s, want %d", tt.body, r.status, r.body, tt.status)
			}
			errorCode(t, r) // a JSON error body
		})
	}
	if r := get(t, base+"/auth/token", ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /auth/token = %d, want 405", r.status)
	}
}

// TestAuthTokenDatabaseDown: without dbsvc a login answers 503 JSON at
// once, not 401: the client should retry, not doubt its password.
func TestAuthTokenDatabaseDown(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	start := time.Now()
	r := login(t, base, "alice", "correct horse battery")
	if r.status != http.StatusServiceUnavailable || errorCode(t, r) != "unavailable" {
		t.Errorf("POST /auth/token without dbsvc = %d %s, want 503 unavailable", r.status, r.body)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("POST /auth/token without dbsvc took %v, want < 1s", d)
	}
}

// TestAuthTokenBcryptSlotsFull: when every bcrypt slot stays busy, a login
// is answered 503 with Retry-After instead of queueing; once a slot is
// free it is answered normally.
func TestAuthTokenBcryptSlotsFull(t *testing.T) {
	t.Parallel()
	slots := &bcryptSlots{slots: make(chan struct{}, 1), waiting: make(chan struct{}, 1), wait: 20 * time.Millisecond}
	e := echo.New()
	e.HTTPErrorHandler = errorHandler(testutil.QuietLog())
	// A name dbsvc would refuse never reaches the store, so none is needed.
	e.POST("/auth/token", issueToken(nil, testKeys, time.Hour, dummyHash, slots, newLoginThrottle(DefaultLoginLimits()), testutil.QuietLog()))
	post := func() *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/auth/token",
			strings.NewReader(`{"username":"not a user","password":"correct horse battery"}`))
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}

	slots.slots <- struct{}{} // the only slot, busy
	rec := post()
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" ||
		!strings.Contains(rec.Body.String(), `"code":"unavailable"`) {
		t.Errorf("POST /auth/token with every slot busy = %d %s (Retry-After %q), want 503 unavailable with Retry-After",
			rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	slots.release()
	if rec := post(); rec.Code != http.StatusUnauthorized {
		t.Errorf("POST /auth/token with a free slot = %d %s, want 401", rec.Code, rec.Body)
	}
	if n := len(slots.slots); n != 0 {
		t.Errorf("slots in use after the logins = %d, want 0", n)
	}
}

// TestAuthDummyHash: the hash compared for unknown users is a valid hash
// of the cost `scalelab users add` uses, so unknown users cost as much
// time as real ones.
func TestAuthDummyHash(t *testing.T) {
	t.Parallel()
	cost, err := bcrypt.Cost([]byte(dummyHash))
	if err != nil || cost != dbsvc.DefaultBcryptCost {
		t.Errorf("bcrypt.Cost(dummyHash) = %d, %v, want %d", cost, err, dbsvc.DefaultBcryptCost)
	}
	if err := dbsvc.ValidatePasswordHash(dummyHash); err != nil {
		t.Errorf("ValidatePasswordHash(dummyHash) = %v", err)
	}
}

// TestTokenTTLValidate: --token-ttl must be positive and at most a day.
func TestTokenTTLValidate(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{0, -time.Second, 25 * time.Hour} {
		t.Run(fmt.Sprint(ttl), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ID, cfg.JWT, cfg.TokenTTL = "gw", testKeys, ttl
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--token-ttl") {
				t.Errorf("Validate() with TokenTTL %v = %v, want an error naming --token-ttl", ttl, err)
			}
		})
	}
	cfg := DefaultConfig()
	cfg.ID, cfg.JWT = "gw", testKeys
	if err := cfg.Validate(); err != nil || cfg.TokenTTL != time.Hour {
		t.Errorf("default TokenTTL %v: Validate() = %v, want 1h and nil", cfg.TokenTTL, err)
	}
}
