package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// submitted is the 202 of POST /longtask.
type submitted struct {
	TaskID string `json:"task_id"`
}

// submitOK posts body as tok and wants a 202; it returns the task id and
// the answer.
func submitOK(t *testing.T, base, tok, body string, header map[string]string) (string, result) {
	t.Helper()
	r := send(t, http.MethodPost, base+"/longtask", tok, body, header)
	var s submitted
	if r.status != http.StatusAccepted || json.Unmarshal(r.body, &s) != nil || s.TaskID == "" {
		t.Fatalf("POST /longtask %s = %d %s, want 202 with a task id", body, r.status, r.body)
	}
	return s.TaskID, r
}

// getRecord reads task id's record as tok.
func getRecord(t *testing.T, base, tok, id string) task.Record {
	t.Helper()
	r := get(t, base+"/tasks/"+id, tok)
	var rec task.Record
	if r.status != http.StatusOK || json.Unmarshal(r.body, &rec) != nil {
		t.Fatalf("GET /tasks/%s = %d %s, want 200 with the record", id, r.status, r.body)
	}
	return rec
}

// TestTaskRegistry: POST /longtask accepts the types the registry holds
// (built-in or registered by a worker a moment ago), checks the queue and
// the payload against the type's schema, each refusal a 400 that says
// what is wrong; GET /task-types lists the types and queues with their live
// workers; unique types give a duplicate the first task's id.
func TestTaskRegistry(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	base := startGateway(t, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := task.OpenRegistry(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	tok := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	post := func(body string) result {
		return send(t, http.MethodPost, base+"/longtask", tok, body, nil)
	}

	t.Run("refusals", func(t *testing.T) {
		wantInvalid(t, "an unregistered type", post(`{"task":"thumbnail"}`), `unknown task type "thumbnail", want one of `)
		if msg := errorMessage(t, post(`{"task":"thumbnail"}`)); !strings.Contains(msg, "noop, report, sleep") {
			t.Errorf("an unregistered type's message %q does not list the built-ins", msg)
		}
		wantInvalid(t, "a payload out of its schema", post(`{"task":"sleep","duration_ms":600001}`), "payload: /duration_ms: must be <= 600000")
		wantInvalid(t, "a payload of the wrong JSON type", post(`{"task":"sleep","duration_ms":"5"}`), "payload: /duration_ms: must be an integer, not a string")
		wantInvalid(t, "an unknown queue", post(`{"task":"noop","queue":"urgent"}`), `unknown queue "urgent", want one of critical, default, low`)
		wantInvalid(t, "a queue that is no name", post(`{"task":"noop","queue":"a.b"}`), `"queue" must be 1-64 letters`)
		wantInvalid(t, "no type", post(`{"queue":"low"}`), `"task" is required`)
	})

	// A worker registers its type (as worker.Worker.Run does) and a queue
	// with it; no worker serving it is alive.
	if err := reg.PutType(t.Context(), task.TypeDef{
		Name: "thumbnail", Description: "makes a thumbnail", Queue: "images", MaxAttempts: 3, TimeoutMS: 2000,
		Schema: json.RawMessage(`{"type":"object","required":["url"],"properties":{"url":{"type":"string"},"width":{"type":"integer","maximum":4096}}}`),
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("registered type, accepted at once, queued without workers", func(t *testing.T) {
		id, _ := submitOK(t, base, tok, `{"task":"thumbnail","url":"https://example.com/a.png","width":64}`, nil)
		rec := getRecord(t, base, tok, id)
		if rec.State != task.Queued || rec.Queue != "images" || rec.MaxAttempts != 3 || rec.TimeoutMS != 2000 {
			t.Errorf("record = state %s, queue %q, max_attempts %d, timeout_ms %d; want queued, images, 3, 2000 (the type's)",
				rec.State, rec.Queue, rec.MaxAttempts, rec.TimeoutMS)
		}
		// The message is stored on the type's queue, for when a worker
		// serving it starts.
		s, err := js.Stream(t.Context(), task.Stream)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetLastMsgForSubject(t.Context(), task.Subject("images", "thumbnail")); err != nil {
			t.Errorf("no message on %s: %v", task.Subject("images", "thumbnail"), err)
		}
		// The body's queue wins over the type's.
		id, _ = submitOK(t, base, tok, `{"task":"thumbnail","url":"x","queue":"critical"}`, nil)
		if rec := getRecord(t, base, tok, id); rec.Queue != "critical" {
			t.Errorf("record queue = %q, want critical (the body's)", rec.Queue)
		}
		wantInvalid(t, "a registered type's payload out of its schema", post(`{"task":"thumbnail","url":"x","width":5000}`), "payload: /width: must be <= 4096")
		wantInvalid(t, "a registered type's payload without a required member", post(`{"task":"thumbnail"}`), "payload: missing property 'url'")
		wantInvalid(t, "a reserved member is not payload", post(`{"task":"thumbnail","queue":"low"}`), "payload: missing property 'url'")
	})

	t.Run("GET /task-types", func(t *testing.T) {
		if err := reg.Announce(t.Context(), task.WorkerInfo{ID: "w-1", Types: []string{"thumbnail", "noop"}, Queues: []string{"images", "default"}, Concurrency: 2}); err != nil {
			t.Fatal(err)
		}
		if err := reg.Announce(t.Context(), task.WorkerInfo{ID: "w-2", Types: []string{"noop"}, Queues: []string{"default"}, Concurrency: 1}); err != nil {
			t.Fatal(err)
		}
		var list struct {
			TaskTypes []struct {
				Name        string          `json:"name"`
				Description string          `json:"description"`
				Schema      json.RawMessage `json:"schema"`
				Queue       string          `json:"queue"`
				MaxAttempts int             `json:"max_attempts"`
				TimeoutMS   int64           `json:"timeout_ms"`
				UpdatedAt   time.Time       `json:"updated_at"`
				Workers     int             `json:"workers"`
				WorkerIDs   []string        `json:"worker_ids"`
			} `json:"task_types"`
			Queues []struct {
				Name    string `json:"name"`
				Workers int    `json:"workers"`
			} `json:"queues"`
		}
		r := get(t, base+"/task-types", tokenFor(t, "ops", auth.ScopeTasksRead, auth.ScopeTasksAdmin))
		if r.status != http.StatusOK || json.Unmarshal(r.body, &list) != nil {
			t.Fatalf("GET /task-types = %d %s, want 200 JSON", r.status, r.body)
		}
		got := map[string]string{}
		for _, d := range list.TaskTypes {
			got[d.Name] = fmt.Sprintf("queue=%s workers=%d %v", d.Queue, d.Workers, d.WorkerIDs)
			if d.UpdatedAt.IsZero() || len(d.Schema) == 0 {
				t.Errorf("type %s: updated_at %v, schema %s; want both", d.Name, d.UpdatedAt, d.Schema)
			}
			if d.Name == "thumbnail" && (d.Description != "makes a thumbnail" || d.MaxAttempts != 3 || d.TimeoutMS != 2000) {
				t.Errorf("thumbnail listed as %+v, want its registration", d)
			}
		}
		want := map[string]string{
			"noop":      "queue=default workers=2 [w-1 w-2]",
			"report":    "queue=default workers=0 []",
			"sleep":     "queue=default workers=0 []",
			"tally":     "queue=default workers=0 []",
			"thumbnail": "queue=images workers=1 [w-1]",
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("GET /task-types types = %v, want %v", got, want)
		}
		queues := map[string]int{}
		for _, q := range list.Queues {
			queues[q.Name] = q.Workers
		}
		if want := map[string]int{"critical": 0, "default": 2, "images": 1, "low": 0}; fmt.Sprint(queues) != fmt.Sprint(want) {
			t.Errorf("GET /task-types queues = %v, want %v", queues, want)
		}
		// Without tasks:admin, the workers are counted, not named: their
		// ids carry host names.
		r = get(t, base+"/task-types", tokenFor(t, "carol", auth.ScopeTasksRead))
		if r.status != http.StatusOK || bytes.Contains(r.body, []byte("worker_ids")) || !bytes.Contains(r.body, []byte(`"workers":2`)) {
			t.Errorf("GET /task-types with tasks:read only = %d %s, want the counts without worker_ids", r.status, r.body)
		}
		if r := get(t, base+"/task-types", tokenFor(t, "bob", auth.ScopeTasksWrite)); r.status != http.StatusForbidden {
			t.Errorf("GET /task-types without tasks:read = %d, want 403", r.status)
		}
	})

	t.Run("unique", func(t *testing.T) {
		// A window of millennia: the test never crosses one.
		if err := reg.PutType(t.Context(), task.TypeDef{Name: "mail", Unique: &task.Unique{Keys: []string{"to"}, WindowMS: 1 << 50}}); err != nil {
			t.Fatal(err)
		}
		first, r := submitOK(t, base, tok, `{"task":"mail","to":"a@example.com","subject":"hi"}`, nil)
		if r.header.Get(uniqueDuplicateHeader) != "" {
			t.Errorf("first unique submission has %s: %q", uniqueDuplicateHeader, r.header.Get(uniqueDuplicateHeader))
		}
		// The same key, another member that the type does not compare: the
		// first task, not a conflict.
		dup, r := submitOK(t, base, tok, `{"subject":"hello","to":"a@example.com","task":"mail"}`, nil)
		if dup != first || r.header.Get(uniqueDuplicateHeader) != "true" || r.header.Get(replayedHeader) != "" {
			t.Errorf("duplicate in the window = %s with %s %q, %s %q; want %s with %s: true only",
				dup, uniqueDuplicateHeader, r.header.Get(uniqueDuplicateHeader), replayedHeader, r.header.Get(replayedHeader), first, uniqueDuplicateHeader)
		}
		if other, _ := submitOK(t, base, tok, `{"task":"mail","to":"b@example.com"}`, nil); other == first {
			t.Error("another key got the first task's id")
		}
		// Per owner: bob's same payload is bob's own task.
		bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
		if theirs, r := submitOK(t, base, bob, `{"task":"mail","to":"a@example.com","subject":"hi"}`, nil); theirs == first || r.header.Get(uniqueDuplicateHeader) != "" {
			t.Errorf("another owner's same payload = %s (%s %q), want a new task", theirs, uniqueDuplicateHeader, r.header.Get(uniqueDuplicateHeader))
		}
		// An Idempotency-Key wins: the key's task, then its replay.
		keyed, _ := submitOK(t, base, tok, `{"task":"mail","to":"a@example.com"}`, map[string]string{idempotencyHeader: "mail-1"})
		again, r := submitOK(t, base, tok, `{"task":"mail","to":"a@example.com"}`, map[string]string{idempotencyHeader: "mail-1"})
		if keyed == first || again != keyed || r.header.Get(replayedHeader) != "true" {
			t.Errorf("with an Idempotency-Key: %s then %s (%s %q), want a task of its own, then the same replayed", keyed, again, replayedHeader, r.header.Get(replayedHeader))
		}
		// The duplicate did not queue the task twice: one message under its id.
		s, err := js.Stream(t.Context(), task.Stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(task.Subject(task.DefaultQueue, "mail")))
		if err != nil {
			t.Fatal(err)
		}
		if n := info.State.Subjects[task.Subject(task.DefaultQueue, "mail")]; n != 4 {
			t.Errorf("%d messages of type mail, want 4 (first, other key, bob's, keyed)", n)
		}
	})

	t.Run("invalid schema", func(t *testing.T) {
		// A worker in another language writes its definition itself;
		// PutType would let this through too (it checks JSON only).
		if err := reg.PutType(t.Context(), task.TypeDef{Name: "broken", Schema: json.RawMessage(`{"type":"nonsense"}`)}); err != nil {
			t.Fatal(err)
		}
		r := post(`{"task":"broken"}`)
		// Not the client's fault, nor a bug: the type is unavailable until
		// a worker registers a valid schema (resolveError).
		if r.status != http.StatusServiceUnavailable || errorCode(t, r) != "unavailable" || r.header.Get("Retry-After") != badSchemaRetryAfter ||
			!strings.Contains(errorMessage(t, r), `task type "broken" is registered with an invalid JSON Schema`) {
			t.Errorf("POST a type with an invalid schema = %d (Retry-After %q) %s, want 503 unavailable naming the type", r.status, r.header.Get("Retry-After"), r.body)
		}
		// The other types are unaffected, and the list still answers.
		submitOK(t, base, tok, `{"task":"noop"}`, nil)
		if r := get(t, base+"/task-types", tok); r.status != http.StatusOK || !slices.Contains(strings.Split(string(r.body), `"`), "broken") {
			t.Errorf("GET /task-types with a broken type = %d %s, want 200 listing it", r.status, r.body)
		}
	})
}
