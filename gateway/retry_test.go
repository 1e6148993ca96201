package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// retryEnv is a gateway and a worker with three task types of the test's:
// flaky fails for good (worker.Permanent) the first time each task runs,
// doomed fails every attempt (one each: it ends dead) until fixed, and
// slow runs until released or cancelled.
type retryEnv struct {
	base    string
	js      jetstream.JetStream
	fixed   atomic.Bool
	release chan struct{}
	running chan string
}

func startRetryEnv(t *testing.T) *retryEnv {
	t.Helper()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	e := &retryEnv{base: startGateway(t, nc), release: make(chan struct{}), running: make(chan string, 8)}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e.js = js

	var mu sync.Mutex
	ran := map[string]bool{}
	cfg := worker.DefaultConfig()
	cfg.ID, cfg.ReportDuration, cfg.AckWait, cfg.RetryDelay = "w-retry", 50*time.Millisecond, 2*time.Second, 10*time.Millisecond
	cfg.AttemptsByType = map[string]int{"doomed": 1}
	cfg.Handlers = map[string]worker.Handler{
		"flaky": func(_ context.Context, tk *worker.Task) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			if !ran[tk.ID] {
				ran[tk.ID] = true
				return nil, worker.Permanent(errors.New("flaky the first time"))
			}
			return "ok", nil
		},
		"doomed": func(context.Context, *worker.Task) (any, error) {
			if e.fixed.Load() {
				return "ok", nil
			}
			return nil, errors.New("disk on fire")
		},
		"slow": func(ctx context.Context, tk *worker.Task) (any, error) {
			e.running <- tk.ID
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-e.release:
				return "done", nil
			}
		},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	wnc := testutil.Connect(t, ns)
	testutil.Start(t, func(ctx context.Context) error { return worker.Run(ctx, cfg, wnc, testutil.QuietLog()) })
	return e
}

// submit posts a task of typ as tok, once the gateway's catalog knows the
// type (the worker registers it as it starts).
func (e *retryEnv) submit(t *testing.T, tok, typ string) string {
	t.Helper()
	var id string
	testutil.Eventually(t, 10*time.Second, func() error {
		r := send(t, "POST", e.base+"/longtask", tok, `{"task":"`+typ+`"}`, nil)
		if r.status == http.StatusBadRequest {
			return errors.New(string(r.body)) // not in the catalog yet
		}
		id = taskID(t, r)
		return nil
	})
	return id
}

// waitState waits for task id to be in state want.
func (e *retryEnv) waitState(t *testing.T, tok, id string, want task.State) task.Record {
	t.Helper()
	var rec task.Record
	testutil.Eventually(t, 20*time.Second, func() error {
		rec = getRecord(t, e.base, tok, id)
		if rec.State != want {
			return &stateError{id: id, state: rec.State}
		}
		return nil
	})
	return rec
}

// deadIDs lists the ids in the dead-letter queue.
func (e *retryEnv) deadIDs(t *testing.T) []string {
	t.Helper()
	dead, err := task.ListDead(t.Context(), e.js)
	if err != nil {
		t.Fatalf("ListDead() = %v", err)
	}
	var ids []string
	for _, d := range dead {
		ids = append(ids, d.ID)
	}
	return ids
}

// wantError checks r's status and JSON error code, and that its message
// says want.
func wantError(t *testing.T, what string, r result, status int, code, want string) {
	t.Helper()
	if r.status != status || errorCode(t, r) != code || !strings.Contains(string(r.body), want) {
		t.Errorf("%s = %d %s, want %d %s saying %q", what, r.status, r.body, status, code, want)
	}
}

func decodeRecord(t *testing.T, r result) task.Record {
	t.Helper()
	var rec task.Record
	if err := json.Unmarshal(r.body, &rec); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return rec
}

// TestRetryTask: POST /tasks/{id}/retry queues a failed, cancelled or dead
// task again with a fresh budget of attempts, and it runs again; a dead
// task's dead letter goes away. A queued, running or succeeded task is a
// 409, another owner's task a 404, a bad id a 400.
func TestRetryTask(t *testing.T) {
	t.Parallel()
	e := startRetryEnv(t)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	admin := tokenFor(t, "ops", auth.AllScopes...)
	retry := func(tok, id string) result {
		return send(t, "POST", e.base+"/tasks/"+id+"/retry", tok, "", nil)
	}

	t.Run("failed", func(t *testing.T) {
		id := e.submit(t, alice, "flaky")
		failed := e.waitState(t, alice, id, task.Failed)
		wantError(t, "bob's retry of alice's task", retry(bob, id), 404, "not_found", id)
		r := retry(alice, id)
		if r.status != http.StatusAccepted {
			t.Fatalf("retry = %d %s, want 202", r.status, r.body)
		}
		if rec := decodeRecord(t, r); rec.State != task.Queued || rec.Attempts != 0 || rec.FinishedAt != nil ||
			rec.StartedAt != nil || rec.Error != "retried after: "+failed.Error || rec.Owner != "alice" {
			t.Errorf("retried record = state %s, attempts %d, finished %v, started %v, error %q, owner %q; want queued, 0, nil, nil, %q, alice",
				rec.State, rec.Attempts, rec.FinishedAt, rec.StartedAt, rec.Error, "retried after: "+failed.Error, rec.Owner)
		}
		if rec := e.waitState(t, alice, id, task.Succeeded); rec.Attempts != 1 {
			t.Errorf("attempts after the retry = %d, want 1 (a fresh budget)", rec.Attempts)
		}
		wantError(t, "retry of a succeeded task", retry(alice, id), 409, "conflict", "succeeded")
	})

	t.Run("running, then cancelled", func(t *testing.T) {
		id := e.submit(t, alice, "slow")
		select {
		case <-e.running:
		case <-time.After(20 * time.Second):
			t.Fatal("slow task never ran")
		}
		e.waitState(t, alice, id, task.Running)
		wantError(t, "retry of a running task", retry(alice, id), 409, "conflict", "running")
		wantError(t, "purge of a running task", send(t, "DELETE", e.base+"/tasks/"+id+"?purge=true", admin, "", nil), 409, "conflict", "running")
		if r := send(t, "DELETE", e.base+"/tasks/"+id, alice, "", nil); r.status != http.StatusOK {
			t.Fatalf("cancel = %d %s", r.status, r.body)
		}
		e.waitState(t, alice, id, task.Cancelled)
		close(e.release)
		if r := retry(alice, id); r.status != http.StatusAccepted {
			t.Fatalf("retry of a cancelled task = %d %s, want 202", r.status, r.body)
		}
		e.waitState(t, alice, id, task.Succeeded)
	})

	t.Run("dead", func(t *testing.T) {
		id := e.submit(t, alice, "doomed")
		e.waitState(t, alice, id, task.Dead)
		if ids := e.deadIDs(t); len(ids) != 1 || ids[0] != id {
			t.Fatalf("dead letters = %v, want [%s]", ids, id)
		}
		wantError(t, "bob's retry", retry(bob, id), 404, "not_found", id)
		e.fixed.Store(true)
		defer e.fixed.Store(false)
		if r := retry(alice, id); r.status != http.StatusAccepted {
			t.Fatalf("retry of a dead task = %d %s, want 202", r.status, r.body)
		}
		if ids := e.deadIDs(t); len(ids) != 0 {
			t.Errorf("dead letters after the retry = %v, want none", ids)
		}
		e.waitState(t, alice, id, task.Succeeded)
	})

	t.Run("bad input", func(t *testing.T) {
		wantError(t, "a bad id", retry(alice, "a.b"), 400, "invalid", "task id")
		wantError(t, "an unknown id", retry(alice, "nosuchtask"), 404, "not_found", "nosuchtask")
		wantError(t, "without tasks:write", retry(tokenFor(t, "alice", auth.ScopeTasksRead), "nosuchtask"), 403, "forbidden", "tasks:write")
		// A type on a queue no worker serves: its task stays queued.
		reg, err := task.OpenRegistry(t.Context(), e.js)
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.PutQueue(t.Context(), "parked"); err != nil {
			t.Fatal(err)
		}
		if err := reg.PutType(t.Context(), task.TypeDef{Name: "idle", Queue: "parked"}); err != nil {
			t.Fatal(err)
		}
		id := e.submit(t, alice, "idle")
		wantError(t, "retry of a queued task", retry(alice, id), 409, "conflict", "queued")
		wantError(t, "purge of a queued task", send(t, "DELETE", e.base+"/tasks/"+id+"?purge=true", admin, "", nil), 409, "conflict", "queued")
	})
}

// TestRetryDeadByTypeAndPurge: POST /tasks/dlq/retry?type= (tasks:admin)
// queues every dead task of the type again; DELETE /tasks/{id}?purge=true
// (tasks:admin) deletes a finished task's record, a dead one's dead letter
// with it.
func TestRetryDeadByTypeAndPurge(t *testing.T) {
	t.Parallel()
	e := startRetryEnv(t)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	admin := tokenFor(t, "ops", auth.AllScopes...)
	bulk := func(tok, typ string) result {
		return send(t, "POST", e.base+"/tasks/dlq/retry?type="+typ, tok, "", nil)
	}
	purge := func(tok, id string) result {
		return send(t, "DELETE", e.base+"/tasks/"+id+"?purge=true", tok, "", nil)
	}

	a1, a2, b1, gone := e.submit(t, alice, "doomed"), e.submit(t, alice, "doomed"), e.submit(t, bob, "doomed"), e.submit(t, alice, "doomed")
	for _, id := range []string{a1, a2, b1, gone} {
		e.waitState(t, admin, id, task.Dead)
	}
	if ids := e.deadIDs(t); len(ids) != 4 {
		t.Fatalf("dead letters = %v, want 4", ids)
	}

	t.Run("purge", func(t *testing.T) {
		wantError(t, "purge without tasks:admin", purge(alice, gone), 403, "forbidden", "tasks:admin")
		wantError(t, "purge=maybe", send(t, "DELETE", e.base+"/tasks/"+gone+"?purge=maybe", admin, "", nil), 400, "invalid", "purge")
		wantError(t, "purge of a bad id", purge(admin, "a.b"), 400, "invalid", "task id")
		wantError(t, "purge of an unknown id", purge(admin, "nosuchtask"), 404, "not_found", "nosuchtask")
		r := purge(admin, gone)
		var body struct {
			ID     string `json:"id"`
			Purged bool   `json:"purged"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &body) != nil || body.ID != gone || !body.Purged {
			t.Fatalf("purge of a dead task = %d %s, want 200 {id, purged: true}", r.status, r.body)
		}
		wantError(t, "GET of a purged task", get(t, e.base+"/tasks/"+gone, admin), 404, "not_found", gone)
		wantError(t, "purge again", purge(admin, gone), 404, "not_found", gone)
		for _, id := range e.deadIDs(t) {
			if id == gone {
				t.Errorf("the purged task's dead letter is still in %s", task.DLQStream)
			}
		}
	})

	t.Run("bulk retry", func(t *testing.T) {
		wantError(t, "bulk retry without tasks:admin", bulk(alice, "doomed"), 403, "forbidden", "tasks:admin")
		wantError(t, "bulk retry of a bad type", bulk(admin, "a.b"), 400, "invalid", "type")
		wantError(t, "bulk retry without a type", bulk(admin, ""), 400, "invalid", "type")
		wantError(t, "bulk retry of an unknown type", bulk(admin, "nosuchtype"), 400, "invalid", "nosuchtype")
		// Alice's a2 is retried first, and succeeds: the bulk retry finds
		// its dead letter gone.
		e.fixed.Store(true)
		if r := send(t, "POST", e.base+"/tasks/"+a2+"/retry", alice, "", nil); r.status != http.StatusAccepted {
			t.Fatalf("retry of %s = %d %s", a2, r.status, r.body)
		}
		r := bulk(admin, "doomed")
		var body struct {
			Retried int                 `json:"retried"`
			Failed  []task.RetryFailure `json:"failed"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &body) != nil || body.Retried != 2 || len(body.Failed) != 0 {
			t.Fatalf("bulk retry = %d %s, want 200 with 2 retried, none failed", r.status, r.body)
		}
		for _, id := range []string{a1, a2, b1} {
			if rec := e.waitState(t, admin, id, task.Succeeded); rec.Attempts != 1 {
				t.Errorf("task %s: %d attempts after the retry, want 1", id, rec.Attempts)
			}
		}
		if ids := e.deadIDs(t); len(ids) != 0 {
			t.Errorf("dead letters after the bulk retry = %v, want none", ids)
		}
		r = bulk(admin, "doomed")
		if r.status != http.StatusOK || json.Unmarshal(r.body, &body) != nil || body.Retried != 0 || body.Failed == nil {
			t.Errorf("bulk retry of an empty queue = %d %s, want 200, 0 retried, failed []", r.status, r.body)
		}
	})

	t.Run("purge of a succeeded task", func(t *testing.T) {
		if r := purge(admin, a1); r.status != http.StatusOK {
			t.Fatalf("purge = %d %s, want 200", r.status, r.body)
		}
		wantError(t, "GET of a purged task", get(t, e.base+"/tasks/"+a1, alice), 404, "not_found", a1)
		// Without ?purge=true, DELETE is still a cancel: of a finished
		// task, a 409.
		wantError(t, "cancel of a succeeded task", send(t, "DELETE", e.base+"/tasks/"+b1, bob, "", nil), 409, "conflict", "succeeded")
	})
}
