package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sdk "github.com/scalelab/scalelab/client"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// tasksCLI runs `scalelab tasks sub --url <p's balancer> args...` with
// token and returns what it printed and its error.
func tasksCLI(t *testing.T, p *upRun, token, sub string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	full := append([]string{"tasks", sub, "--url", p.base}, args...)
	err := run(t.Context(), full, env(map[string]string{"SCALELAB_TOKEN": token}), &stdout, &stderr)
	if errors.Is(err, ErrUsage) {
		t.Fatalf("scalelab %v = %v, a usage error\nstderr: %s", full, err, stderr.String())
	}
	return stdout.String(), err
}

// mustTasksCLI is tasksCLI that fails the test on an error.
func mustTasksCLI(t *testing.T, p *upRun, token, sub string, args ...string) string {
	t.Helper()
	out, err := tasksCLI(t, p, token, sub, args...)
	if err != nil {
		t.Fatalf("scalelab tasks %s %v = %v", sub, args, err)
	}
	return out
}

// wantAPIError fails unless err is the API's refusal with status and code,
// and its text (what main prints) says the code.
func wantAPIError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var e *sdk.Error
	if !errors.As(err, &e) || e.Status != status || e.Code != code || !strings.Contains(err.Error(), code) {
		t.Errorf("%s = %v, want the API's %d %s", what, err, status, code)
	}
}

// loginToken adds user to p's database and returns a token of theirs from
// POST /auth/token (the default scopes: tasks:read tasks:write, not
// tasks:admin).
func loginToken(t *testing.T, p *upRun, user string) string {
	t.Helper()
	if err := runStdin(t.Context(), "correct horse battery\n", []string{"users", "add", user, "--nats", p.nats, "--bcrypt-cost", cheapBcrypt}, env(maps.Clone(p.admin)), io.Discard, io.Discard); err != nil {
		t.Fatalf("users add %s = %v", user, err)
	}
	r := p.do(t, "POST", "/auth/token", "", []byte(`{"username":"`+user+`","password":"correct horse battery"}`))
	tok, _ := decodeJSON[map[string]any](t, r)["token"].(string)
	if r.status != http.StatusOK || tok == "" {
		t.Fatalf("POST /auth/token for %s = %d %s", user, r.status, r.body)
	}
	return tok
}

// putRecord writes rec into p's tasks bucket as the operator, as a worker
// would have left it: the listing follows the bucket, whoever writes it.
func putRecord(t *testing.T, p *upRun, rec *task.Record) {
	t.Helper()
	nc, err := nats.Connect(p.nats, nats.UserInfo(p.admin["SCALELAB_NATS_USER"], p.admin["SCALELAB_NATS_PASSWORD"]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(t.Context(), task.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.NewStore(kv).Create(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
}

// rowIDs are the task ids of a `tasks ls` table, in order.
var rowID = regexp.MustCompile(`(?m)^([0-9a-f]{32})\s`)

func rowIDs(out string) []string {
	var ids []string
	for _, m := range rowID.FindAllStringSubmatch(out, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

// TestUpTasksCLI: `scalelab tasks ls|get|cancel|retry` through the
// balancer of a real `up`: alice's list with its filters, pages and
// totals; bob sees none of it; the admin token sees it all; cancel and
// retry; and the API's refusals (a type that does not exist, a bad
// cursor, a retry of a running task) come back as errors with the API's
// code, exit 1.
func TestUpTasksCLI(t *testing.T) {
	p := startUp(t, t.TempDir())
	alice, bob := loginToken(t, p, "alice"), loginToken(t, p, "bob")
	submit := func(body string) string {
		r := p.do(t, "POST", "/longtask", "Bearer "+alice, []byte(body))
		if r.status != http.StatusAccepted {
			t.Fatalf("alice's POST /longtask %s = %d %s", body, r.status, r.body)
		}
		return decodeJSON[map[string]string](t, r)["task_id"]
	}
	noop1, noop2 := submit(`{"task":"noop"}`), submit(`{"task":"noop"}`)
	long := submit(`{"task":"sleep","duration_ms":60000}`)
	// A failed task, as a worker leaves one whose attempts ran out with
	// an error: no built-in type fails on purpose.
	now := time.Now().UTC()
	failed := &task.Record{
		ID: task.NewID(), Type: "noop", Queue: task.DefaultQueue, State: task.Failed, Attempts: 3, MaxAttempts: 3,
		Error: "boom: " + strings.Repeat("x", 100) + "\nat the second line", Owner: "alice",
		Payload: json.RawMessage(`{"task":"noop"}`), CreatedAt: now, UpdatedAt: now, StartedAt: &now, FinishedAt: &now,
	}
	putRecord(t, p, failed)

	// The listing follows the bucket a little behind: poll.
	var out string
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		if out, err = tasksCLI(t, p, alice, "ls"); err != nil {
			return err
		}
		if len(rowIDs(out)) != 4 || !strings.Contains(out, "succeeded 2,") || !strings.Contains(out, "failed 1,") {
			return fmt.Errorf("tasks ls printed\n%s", out)
		}
		return nil
	})
	t.Logf("alice's tasks ls:\n%s", out)
	for _, want := range []string{"ID", "TYPE", "QUEUE", "STATE", "ATTEMPTS", "PROGRESS", "AGE", "ERROR", "4 tasks shown", "all 4", "3/3"} {
		if !strings.Contains(out, want) {
			t.Errorf("tasks ls printed\n%s\nwant %q in it", out, want)
		}
	}
	if ids := rowIDs(out); ids[0] != failed.ID {
		t.Errorf("tasks ls ids = %v, want the newest (%s) first", ids, failed.ID)
	}
	if strings.Contains(out, "second line") || !strings.Contains(out, "boom: xxx") || !strings.Contains(out, "…") {
		t.Errorf("tasks ls printed\n%s\nwant the error's first line, cut", out)
	}
	if strings.Contains(out, "next page") {
		t.Errorf("tasks ls of one page printed a next page:\n%s", out)
	}

	// Filters.
	if ids := rowIDs(mustTasksCLI(t, p, alice, "ls", "--state", "failed")); len(ids) != 1 || ids[0] != failed.ID {
		t.Errorf("tasks ls --state failed = %v, want [%s]", ids, failed.ID)
	}
	var page sdk.Page
	if err := json.Unmarshal([]byte(mustTasksCLI(t, p, alice, "ls", "--type", "sleep", "--json")), &page); err != nil {
		t.Fatalf("tasks ls --json: %v", err)
	}
	if len(page.Tasks) != 1 || page.Tasks[0].ID != long || page.Totals["all"] != 1 {
		t.Errorf("tasks ls --type sleep --json = %+v, want the sleep task alone", page)
	}
	if ids := rowIDs(mustTasksCLI(t, p, alice, "ls", "--queue", task.DefaultQueue)); len(ids) != 4 {
		t.Errorf("tasks ls --queue default = %v, want 4 tasks", ids)
	}

	// Pages: 2 and 2, through the cursor; --all follows it.
	first := mustTasksCLI(t, p, alice, "ls", "--limit", "2")
	m := regexp.MustCompile(`next page: --cursor (\S+)`).FindStringSubmatch(first)
	if len(rowIDs(first)) != 2 || m == nil {
		t.Fatalf("tasks ls --limit 2 printed\n%s\nwant 2 tasks and a cursor", first)
	}
	second := mustTasksCLI(t, p, alice, "ls", "--limit", "2", "--cursor", m[1])
	if got := append(rowIDs(first), rowIDs(second)...); len(got) != 4 || strings.Contains(second, "next page") || got[0] == got[2] {
		t.Errorf("the two pages = %v, second\n%s\nwant 4 tasks, no third page", got, second)
	}
	all := mustTasksCLI(t, p, alice, "ls", "--all", "--limit", "1")
	if len(rowIDs(all)) != 4 || strings.Contains(all, "next page") {
		t.Errorf("tasks ls --all --limit 1 printed\n%s\nwant every task, no cursor", all)
	}

	// Bob sees none of alice's tasks; the dev token (tasks:admin) all.
	if out := mustTasksCLI(t, p, bob, "ls"); len(rowIDs(out)) != 0 || !strings.Contains(out, "all 0") {
		t.Errorf("bob's tasks ls printed\n%s\nwant no task", out)
	}
	_, err := tasksCLI(t, p, bob, "get", noop1)
	wantAPIError(t, "bob's tasks get of alice's task", err, 404, "not_found")
	_, err = tasksCLI(t, p, bob, "ls", "--owner", "alice")
	wantAPIError(t, "bob's tasks ls --owner alice", err, 403, "forbidden")
	if ids := rowIDs(mustTasksCLI(t, p, p.token, "ls", "--owner", "alice")); len(ids) != 4 {
		t.Errorf("admin's tasks ls --owner alice = %v, want 4 tasks", ids)
	}

	// get prints the record.
	var rec sdk.Task
	if err := json.Unmarshal([]byte(mustTasksCLI(t, p, alice, "get", noop2)), &rec); err != nil || rec.ID != noop2 || rec.State != sdk.Succeeded {
		t.Errorf("tasks get = %+v, %v; want %s succeeded", rec, err, noop2)
	}

	// A task not finished cannot be retried; cancel it, then retry it.
	_, err = tasksCLI(t, p, alice, "retry", long)
	wantAPIError(t, "tasks retry of a task not finished", err, 409, "conflict")
	if err != nil && !strings.HasPrefix(err.Error(), "tasks retry "+long+": conflict: ") || !strings.HasSuffix(fmt.Sprint(err), "(HTTP 409)") {
		t.Errorf("tasks retry of a task not finished printed %q, want what, the code, the message and the status", err)
	}
	if out := mustTasksCLI(t, p, alice, "cancel", long); out != "task "+long+" cancelled\n" {
		t.Errorf("tasks cancel printed %q", out)
	}
	_, err = tasksCLI(t, p, alice, "cancel", long)
	wantAPIError(t, "a second tasks cancel", err, 409, "conflict")
	if out := mustTasksCLI(t, p, alice, "retry", long); out != "task "+long+" queued again (generation 1)\n" {
		t.Errorf("tasks retry printed %q", out)
	}
	mustTasksCLI(t, p, alice, "cancel", long) // no need to sleep a minute
	// The failed task, retried, runs again and succeeds.
	mustTasksCLI(t, p, alice, "retry", failed.ID)
	testutil.Eventually(t, 30*time.Second, func() error {
		if ids := rowIDs(mustTasksCLI(t, p, alice, "ls", "--state", "succeeded")); len(ids) != 3 {
			return fmt.Errorf("succeeded tasks: %v", ids)
		}
		return nil
	})

	// The API's refusals.
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"a type that does not exist", []string{"--type", "nosuchtype"}},
		{"a queue that does not exist", []string{"--queue", "nosuchqueue"}},
		{"a bad cursor", []string{"--cursor", "not-a-cursor"}},
		{"a limit over 200", []string{"--limit", "500"}},
	} {
		_, err := tasksCLI(t, p, alice, "ls", tc.args...)
		wantAPIError(t, "tasks ls with "+tc.name, err, 400, "invalid")
	}
	_, err = tasksCLI(t, p, alice, "get", task.NewID())
	wantAPIError(t, "tasks get of no task", err, 404, "not_found")
	_, err = tasksCLI(t, p, "not.a.token", "ls")
	wantAPIError(t, "tasks ls with a bad token", err, 401, "unauthorized")
	p.stop(t)
}

// TestTasksAPIUsage: what `scalelab tasks ls|get|cancel|retry` refuse
// before any request (exit 2).
func TestTasksAPIUsage(t *testing.T) {
	t.Parallel()
	tok := env(map[string]string{"SCALELAB_TOKEN": "t", "SCALELAB_URL": "http://127.0.0.1:1"})
	id := task.NewID()
	for _, tc := range []struct {
		name   string
		args   []string
		getenv func(string) string
	}{
		{"no token", []string{"tasks", "ls"}, env(nil)},
		{"bad url", []string{"tasks", "ls", "--url", "localhost:8000"}, tok},
		{"bad state", []string{"tasks", "ls", "--state", "done"}, tok},
		{"negative limit", []string{"tasks", "ls", "--limit", "-1"}, tok},
		{"ls with arguments", []string{"tasks", "ls", "x"}, tok},
		{"get without id", []string{"tasks", "get"}, tok},
		{"get with two ids", []string{"tasks", "get", id, id}, tok},
		{"cancel of a bad id", []string{"tasks", "cancel", "a.b"}, tok},
		{"retry with an unknown flag", []string{"tasks", "retry", id, "--state", "failed"}, tok},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), tc.args, tc.getenv, &stdout, &stderr); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: %v = %v, want a usage error", tc.name, tc.args, err)
		}
	}
	// Flags after the id are flags; nothing listens at the URL: an
	// error, not a usage error.
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"tasks", "get", id, "--timeout", "2s"}, tok, io.Discard, &stderr)
	if err == nil || errors.Is(err, ErrUsage) {
		t.Errorf("tasks get with no server = %v, want an error that is not a usage error", err)
	}
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"tasks", "ls", "-h"}, env(nil), &stdout, &stderr); err != nil || !strings.Contains(stderr.String(), "scalelab tasks retry") {
		t.Errorf("tasks ls -h = %v, %q", err, stderr.String())
	}
}
