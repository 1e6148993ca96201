package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// wantInvalid checks that r is a 400 with the house JSON error body, code
// invalid, whose message starts with want (it names the field).
func wantInvalid(t *testing.T, what string, r result, want string) {
	t.Helper()
	if r.status != http.StatusBadRequest || errorCode(t, r) != "invalid" {
		t.Fatalf("%s = %d %s, want 400 invalid", what, r.status, r.body)
	}
	if got := errorMessage(t, r); !strings.HasPrefix(got, want) {
		t.Errorf("%s message = %q, want it to start with %q", what, got, want)
	}
}

// TestSubmitStrictBodies: POST /longtask reads its body with the one
// strict reader. A duplicate key, a key of another case, data after the
// body or a number out of range is a 400 that names the field, and no
// task is recorded or queued.
func TestSubmitStrictBodies(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	tok := token(t, auth.ScopeTasksRead, auth.ScopeTasksWrite)
	tests := []struct {
		name, body, want string
	}{
		{"duplicate task", `{"task":"noop","task":"sleep"}`, `duplicate key "task"`},
		{"duplicate key deep in the payload", `{"task":"report","note":{"a":1,"a":2}}`, `duplicate key "note.a"`},
		{"wrong-case task", `{"Task":"noop"}`, `unknown field "Task" (keys are case-sensitive: the field is "task")`},
		{"wrong-case key beside the right one", `{"task":"noop","TASK":"sleep"}`, `unknown field "TASK"`},
		{"wrong-case duration", `{"task":"sleep","Duration_ms":5}`, `payload: unknown field "Duration_ms" (keys are case-sensitive: the field is "duration_ms")`},
		{"trailing data", `{"task":"noop"} {"task":"sleep"}`, "body must hold one JSON value and nothing after it"},
		{"trailing garbage", `{"task":"noop"} x`, "body is not valid JSON: invalid character 'x' at start of value (at byte 17)"},
		{"out of range", `{"task":"sleep","duration_ms":9223372036854775808}`, "payload: /duration_ms: must be <= 600000"},
		{"not an integer", `{"task":"sleep","duration_ms":1.5}`, "payload: /duration_ms: must be an integer, not a number"},
		{"not an object", `[1]`, "body must be an object, not an array"},
		{"task not a string", `{"task":["noop"]}`, `field "task" must be a string, not an array`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, http.MethodPost, base+"/longtask", tok, tt.body, map[string]string{"Idempotency-Key": "strict-" + strings.ReplaceAll(tt.name, " ", "-")})
			wantInvalid(t, "POST /longtask "+tt.body, r, tt.want)
		})
	}

	// Nothing was written: no record in the bucket, no message queued.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.ListKeys(t.Context()); err != nil {
		t.Fatal(err)
	} else {
		for k := range keys.Keys() {
			t.Errorf("task record %s stored by a refused submission", k)
		}
	}
	s, err := js.Stream(t.Context(), task.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(t.Context()); err != nil || info.State.Msgs != 0 {
		t.Errorf("TASKS holds %d messages (%v) after refused submissions, want 0", info.State.Msgs, err)
	}
}

// TestSubmitStoresCanonicalPayload: the record keeps the payload in
// canonical form (no whitespace, members sorted, shortest string
// escapes), not the client's bytes; a repeat with the same key that reads
// the same (another order, other spacing) is the same task, not a 409.
func TestSubmitStoresCanonicalPayload(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	tok := token(t, auth.ScopeTasksRead, auth.ScopeTasksWrite)
	key := map[string]string{"Idempotency-Key": "canonical-1"}

	id := taskID(t, send(t, http.MethodPost, base+"/longtask", tok, ` { "task" : "report", "note" : {"b":"\u00e9", "a":[1, 2]} }`, key))
	var rec struct {
		Payload json.RawMessage `json:"payload"`
	}
	if r := get(t, base+"/tasks/"+id, tok); json.Unmarshal(r.body, &rec) != nil || r.status != http.StatusOK {
		t.Fatalf("GET /tasks/%s = %d %s", id, r.status, r.body)
	}
	if want := `{"note":{"a":[1,2],"b":"é"},"task":"report"}`; string(rec.Payload) != want {
		t.Errorf("record payload = %s, want %s", rec.Payload, want)
	}
	again := send(t, http.MethodPost, base+"/longtask", tok, `{"note":{"a":[1,2],"b":"é"},"task":"report"}`, key)
	if got := taskID(t, again); got != id || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("repeat in another order = task %s (Idempotent-Replayed %q), want %s replayed", got, again.header.Get("Idempotent-Replayed"), id)
	}
}

// TestAuthTokenStrictBodies: POST /auth/token reads its body with the one
// strict reader; each refusal is a 400 naming the field.
func TestAuthTokenStrictBodies(t *testing.T) {
	t.Parallel()
	// No dbsvc: a body is read, and refused, before any lookup.
	base := startGateway(t, testutil.Connect(t, testutil.StartNATS(t)))
	tests := []struct {
		name, body, want string
	}{
		{"duplicate username", `{"username":"mallory","username":"alice","password":"correct horse battery"}`, `duplicate key "username"`},
		{"wrong-case key", `{"Username":"alice","password":"correct horse battery"}`, `unknown field "Username" (keys are case-sensitive: the field is "username")`},
		{"unknown field", `{"username":"alice","password":"x","scope":"items:write"}`, `unknown field "scope"`},
		{"trailing data", `{"username":"alice","password":"x"} {}`, "body must hold one JSON value and nothing after it"},
		{"number for a string", `{"username":"alice","password":1e400}`, `field "password" must be a string, not a number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := send(t, http.MethodPost, base+"/auth/token", "", tt.body, nil)
			wantInvalid(t, "POST /auth/token "+tt.body, r, tt.want)
		})
	}
}
