package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestUpStrictBodies drives the one strict JSON reading through a real
// `scalelab up`: POST /longtask and POST /auth/token through the balancer,
// POST /cache/{key} at cachesvc. A duplicate key, a key of another case,
// data after the body, an unknown field or a number out of range is a 400
// whose JSON error names the field, and nothing is written: the
// Idempotency-Key of a refused submission is still free (a valid body
// with it is a new task, not a replay), and the cache key stays empty.
func TestUpStrictBodies(t *testing.T) {
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token

	wantInvalid := func(t *testing.T, what string, status int, body []byte, want string) {
		t.Helper()
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || status != http.StatusBadRequest || e.Error.Code != "invalid" {
			t.Fatalf("%s = %d %s, want 400 with a JSON error, code invalid", what, status, body)
		}
		if !strings.HasPrefix(e.Error.Message, want) {
			t.Errorf("%s message = %q, want it to start with %q", what, e.Error.Message, want)
		}
	}

	tasks := []struct {
		name, body, want string
	}{
		{"duplicate key", `{"task":"noop","task":"sleep"}`, `duplicate key "task"`},
		{"wrong-case key", `{"Task":"noop"}`, `unknown field "Task" (keys are case-sensitive: the field is "task")`},
		{"trailing data", `{"task":"noop"} {"task":"sleep"}`, "body must hold one JSON value and nothing after it"},
		{"out of range", `{"task":"sleep","duration_ms":9223372036854775808}`, "payload: /duration_ms: must be <= 600000"},
	}
	for _, tt := range tasks {
		t.Run("longtask "+tt.name, func(t *testing.T) {
			key := "strict-" + strings.ReplaceAll(tt.name, " ", "-")
			r := p.doHeader(t, "POST", "/longtask", bearer, []byte(tt.body), key)
			wantInvalid(t, "POST /longtask "+tt.body, r.status, r.body, tt.want)
			// Had the refused body been recorded under the key, this would
			// be a replay (or a 409 for another body).
			ok := p.doHeader(t, "POST", "/longtask", bearer, []byte(`{"task":"noop"}`), key)
			if ok.status != http.StatusAccepted || ok.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("POST /longtask with the refused body's key = %d %s (Idempotent-Replayed %q), want a new task (202)",
					ok.status, ok.body, ok.header.Get("Idempotent-Replayed"))
			}
		})
	}

	logins := []struct {
		name, body, want string
	}{
		{"duplicate key", `{"username":"mallory","username":"dev","password":"x"}`, `duplicate key "username"`},
		{"wrong-case key", `{"USERNAME":"dev","password":"x"}`, `unknown field "USERNAME"`},
		{"unknown field", `{"username":"dev","password":"x","scope":"tasks:admin"}`, `unknown field "scope"`},
	}
	for _, tt := range logins {
		t.Run("login "+tt.name, func(t *testing.T) {
			r := p.do(t, "POST", "/auth/token", "", []byte(tt.body))
			wantInvalid(t, "POST /auth/token "+tt.body, r.status, r.body, tt.want)
		})
	}

	values := []struct {
		name, body, want string
	}{
		{"duplicate key", `{"value":{"a":1,"a":2}}`, `duplicate key "value.a"`},
		{"wrong-case key", `{"VALUE":1}`, `unknown field "VALUE"`},
		{"unknown field", `{"value":1,"ttl":5}`, `unknown field "ttl"`},
		{"trailing data", `{"value":1} {"value":2}`, "body must hold one JSON value and nothing after it"},
	}
	for _, tt := range values {
		t.Run("cache "+tt.name, func(t *testing.T) {
			path := "/cache/strict-" + strings.ReplaceAll(tt.name, " ", "-")
			status, body := p.cacheCall(t, "POST", path, bearer, tt.body)
			wantInvalid(t, "POST "+path+" "+tt.body, status, body, tt.want)
			if status, body := p.cacheCall(t, "GET", path, bearer, ""); status != http.StatusOK || string(body) != `{"value":null}`+"\n" {
				t.Errorf("GET %s after a refused POST = %d %s, want {\"value\":null}", path, status, body)
			}
		})
	}
	p.stop(t)
}

// doHeader is do with an Idempotency-Key.
func (p *upRun) doHeader(t *testing.T, method, path, auth string, body []byte, idempotencyKey string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, p.base+path, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", idempotencyKey)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// cacheCall sends a request to cachesvc's own HTTP API.
func (p *upRun) cacheCall(t *testing.T, method, path, auth, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, p.cache+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("cachesvc %s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}
