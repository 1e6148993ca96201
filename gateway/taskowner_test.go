package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// requestIDField matches the request id of an error body, the one part of
// it that differs from request to request.
var requestIDField = regexp.MustCompile(`"request_id":"[^"]*"`)

// notFoundShape is a 404's body with the task id and request id taken out,
// so the answers for two ids can be compared.
func notFoundShape(t *testing.T, r result, id string) string {
	t.Helper()
	if r.status != http.StatusNotFound || errorCode(t, r) != "not_found" {
		t.Fatalf("got %d %s, want 404 not_found", r.status, r.body)
	}
	b := strings.ReplaceAll(string(r.body), id, "<id>")
	return requestIDField.ReplaceAllString(b, `"request_id":"<rid>"`)
}

// TestTaskOwnership attacks another user's task from outside: bob, with
// tasks:read and tasks:write but not tasks:admin, knows the id of alice's
// task and tries every route that reads or changes one task. Each answers
// exactly what a missing id answers, and alice's task is left as it was;
// a tasks:admin token sees and cancels it.
func TestTaskOwnership(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc) // no worker: tasks stay queued
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	admin := tokenFor(t, "ops", auth.ScopeTasksRead, auth.ScopeTasksWrite, auth.ScopeTasksAdmin)

	id := taskID(t, send(t, "POST", base+"/longtask", alice, `{"task":"sleep","duration_ms":5}`, nil))
	missing := task.NewID()
	attacks := []struct {
		name, method, path string
	}{
		{"GET", "GET", "/tasks/%s"},
		{"GET ?wait=", "GET", "/tasks/%s?wait=2s"},
		{"DELETE", "DELETE", "/tasks/%s"},
	}
	for _, a := range attacks {
		start := time.Now()
		theirs := send(t, a.method, base+strings.Replace(a.path, "%s", id, 1), bob, "", nil)
		elapsed := time.Since(start)
		none := send(t, a.method, base+strings.Replace(a.path, "%s", missing, 1), bob, "", nil)
		if got, want := notFoundShape(t, theirs, id), notFoundShape(t, none, missing); got != want {
			t.Errorf("%s of another's task = %s, want the same as a missing id: %s", a.name, got, want)
		}
		// A missing id answers ?wait= at once; another's task must too,
		// not after the wait.
		if elapsed > time.Second {
			t.Errorf("%s of another's task took %v, want an answer without waiting", a.name, elapsed)
		}
	}

	var rec task.Record
	r := get(t, base+"/tasks/"+id, alice)
	if err := json.Unmarshal(r.body, &rec); err != nil || r.status != http.StatusOK {
		t.Fatalf("owner's GET /tasks/%s = %d %s, want 200", id, r.status, r.body)
	}
	if rec.State != task.Queued || rec.Owner != "alice" {
		t.Errorf("after bob's attempts: state %q, owner %q; want queued (not cancelled), alice", rec.State, rec.Owner)
	}

	if r := get(t, base+"/tasks/"+id, admin); r.status != http.StatusOK {
		t.Errorf("tasks:admin GET of alice's task = %d %s, want 200", r.status, r.body)
	}
	if r := send(t, "DELETE", base+"/tasks/"+id, admin, "", nil); r.status != http.StatusOK {
		t.Errorf("tasks:admin DELETE of alice's task = %d %s, want 200", r.status, r.body)
	}
	if got := taskState(t, base, alice, id); got != "cancelled" {
		t.Errorf("after the admin's cancel: state %q, want cancelled", got)
	}

	// A record written before owners existed has none: only tasks:admin
	// sees it.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	old := &task.Record{ID: "4Vq2yT0nWbXc8mLp1RsZkA", Type: "noop", State: task.Queued, CreatedAt: now, UpdatedAt: now}
	if _, err := task.NewStore(kv).Create(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{alice, bob} {
		if r := get(t, base+"/tasks/"+old.ID, who); r.status != http.StatusNotFound {
			t.Errorf("GET of an ownerless record without tasks:admin = %d %s, want 404", r.status, r.body)
		}
	}
	if r := get(t, base+"/tasks/"+old.ID, admin); r.status != http.StatusOK {
		t.Errorf("tasks:admin GET of an ownerless record = %d %s, want 200", r.status, r.body)
	}
}

// TestIdempotentReplayOfAnotherSubject: bob replays alice's submission
// with her Idempotency-Key and body, with ?wait=, as if to read her task
// through the replay. He gets a new task of his own, never hers.
func TestIdempotentReplayOfAnotherSubject(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	key := map[string]string{"Idempotency-Key": "invoice-7"}
	body := `{"task":"noop"}`

	hers := taskID(t, send(t, "POST", base+"/longtask", alice, body, key))
	r := send(t, "POST", base+"/longtask?wait=100ms", bob, body, key)
	if got := taskID(t, r); got == hers || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("bob's replay of alice's key = task %s (Idempotent-Replayed %q), want a new task, not %s", got, r.header.Get("Idempotent-Replayed"), hers)
	}
}

// TestTaskIDsUnguessable: consecutive submissions get ids that share no
// long prefix (nuid's shared their first 20 of 22 characters) and carry
// 16 random bytes each.
func TestTaskIDsUnguessable(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	tok := tokenFor(t, "alice", auth.ScopeTasksWrite)
	seen := map[string]bool{}
	longest, prev := 0, ""
	for range 100 {
		id := taskID(t, send(t, "POST", base+"/longtask", tok, `{"task":"noop"}`, nil))
		if seen[id] {
			t.Fatalf("id %s given twice", id)
		}
		seen[id] = true
		b, err := hex.DecodeString(id)
		if err != nil || len(b) < 16 {
			t.Fatalf("id %q: want at least 16 bytes in hex, got %d bytes (%v)", id, len(b), err)
		}
		if !task.ValidID(id) {
			t.Fatalf("id %q is not a valid task id", id)
		}
		n := 0
		for n < len(id) && n < len(prev) && id[n] == prev[n] {
			n++
		}
		longest, prev = max(longest, n), id
	}
	// Two random hex ids share 7 leading digits with odds of 1 in 16^7;
	// over 99 pairs, about 1 in 2.7 million.
	if longest >= 7 {
		t.Errorf("consecutive ids share a prefix of %d characters, want under 7", longest)
	}
}

// TestIdempotentIDKeyed: an Idempotency-Key's task id is an HMAC under the
// gateways' secret: the same subject and key give another id under another
// secret, and never the plain hash of subject and key that anybody could
// compute.
func TestIdempotentIDKeyed(t *testing.T) {
	t.Parallel()
	other := testKeys
	other.Secret = []byte("another secret, 32 bytes or more!")
	key := map[string]string{"Idempotency-Key": "order-1"}
	var ids []string
	for _, keys := range []auth.Keys{testKeys, other} {
		ns := testutil.StartNATS(t)
		base := startGateway(t, testutil.Connect(t, ns), func(c *Config) { c.JWT = keys })
		tok, _, err := keys.Issue("alice", []string{auth.ScopeTasksWrite}, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, taskID(t, send(t, "POST", base+"/longtask", tok, `{"task":"noop"}`, key)))
	}
	if ids[0] == ids[1] {
		t.Errorf("the same subject and key gave id %s under two secrets, want two ids", ids[0])
	}
	plain := sha256.Sum256([]byte("alice\x00order-1"))
	for _, id := range ids {
		if b, _ := hex.DecodeString(id); len(b) < 16 || bytes.HasPrefix(plain[:], b) {
			t.Errorf("id %s: want 16 bytes that are not the plain hash of subject and key", id)
		}
	}
}
