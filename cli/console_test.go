package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/worker"
)

// workerPasswordLine is the banner's line for a worker of one's own, with
// the NATS worker user's password.
var workerPasswordLine = regexp.MustCompile(`SCALELAB_NATS_USER=worker SCALELAB_NATS_PASSWORD=(\S+)`)

// The task types the console test's own worker serves, on a queue of
// their own so that the role's workers never pull them.
const (
	consoleQueue = "console"
	// consoleFails fails the first run of each task for good (a failed
	// task, to retry from the page); a later run reports 50 % and waits
	// for the test to let it succeed, so the page can be seen running.
	consoleFails = "console-fails"
	// consoleDies fails every run, with one attempt: a dead task.
	consoleDies = "console-dies"
)

// consoleWorker runs the console test's task types as NATS user worker.
// Closing the returned channel lets the held runs of consoleFails succeed.
func consoleWorker(t *testing.T, p *upRun) chan struct{} {
	t.Helper()
	m := workerPasswordLine.FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no worker password in the banner:\n%s", p.stdout)
	}
	nc, err := nats.Connect(p.nats, nats.Name("console-test-worker"), nats.UserInfo("worker", m[1]),
		nats.CustomInboxPrefix("_INBOX.worker"))
	if err != nil {
		t.Fatalf("connect as worker: %v", err)
	}
	t.Cleanup(nc.Close)
	release := make(chan struct{})
	var mu sync.Mutex
	runs := map[string]int{}
	w := worker.New(nc, worker.Config{ID: "console-test", Concurrency: 4, Logger: testutil.QuietLog()})
	w.Handle(consoleFails, func(ctx context.Context, tk *worker.Task) (any, error) {
		mu.Lock()
		runs[tk.ID]++
		n := runs[tk.ID]
		mu.Unlock()
		if n == 1 {
			return nil, worker.Permanent(errors.New("disk quota exceeded on /var/reports (the console test fails every first run)"))
		}
		tk.Progress(50, "held by the test")
		select {
		case <-release:
			return map[string]any{"run": n, "rows": 1234}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}, worker.WithQueue(consoleQueue), worker.WithDescription("fails its first run; the console test's"))
	w.Handle(consoleDies, func(context.Context, *worker.Task) (any, error) {
		return nil, errors.New("upstream answered 503 (the console test kills this task)")
	}, worker.WithQueue(consoleQueue), worker.WithMaxAttempts(1), worker.WithDescription("always fails; the console test's"))
	testutil.Start(t, w.Run)
	return release
}

// consoleView is what the browser test reads off the console.
type consoleView struct {
	Login      bool              `json:"login"`
	App        bool              `json:"app"`
	Token      bool              `json:"token"`
	LoginError string            `json:"login_error"`
	Rows       map[string]string `json:"rows"` // task id -> state, as the list shows them
	ListError  string            `json:"list_error"`
	Live       string            `json:"live"`
	Older      bool              `json:"older"`  // the button is enabled
	Newest     bool              `json:"newest"` // the button is enabled
	Totals     map[string]string `json:"totals"`
	Queues     []string          `json:"queues"`
	QueuesOK   string            `json:"queues_ok"`
	QueueError string            `json:"queue_error"`
	Paused     map[string]string `json:"paused"`
	Task       struct {
		Visible  bool   `json:"visible"`
		ID       string `json:"id"`
		State    string `json:"state"`
		Errors   string `json:"errors"`
		Msg      string `json:"msg"`
		Error    string `json:"error"`
		Progress string `json:"progress"`
		Payload  string `json:"payload"`
		Result   string `json:"result"`
		Retry    bool   `json:"retry"`
		Live     string `json:"live"`
	} `json:"task"`
	DLQ struct {
		Visible bool              `json:"visible"`
		Rows    map[string]string `json:"rows"`
		Msg     string            `json:"msg"`
		Error   string            `json:"error"`
		Types   []string          `json:"types"`
	} `json:"dlq"`
	// Fetched are the paths the page asked for besides itself.
	Fetched []string `json:"fetched"`
}

// readConsole is the script that fills a consoleView.
const readConsole = `(() => {
  const $ = id => document.getElementById(id);
  const shown = id => { const e = $(id); return !!e && e.offsetParent !== null; };
  const text = id => ($(id) || {}).textContent || "";
  const rows = sel => Object.fromEntries([...document.querySelectorAll(sel)].map(r => [r.dataset.id, r.dataset.state]));
  const tv = $("task-view");
  return {
    login: shown("login"), app: shown("app"), token: sessionStorage.getItem("scalelab.console.token") !== null,
    login_error: text("login-error"),
    rows: rows("#task-rows tr"), list_error: text("list-error"), live: text("live"),
    older: !$("older").disabled, newest: !$("newest").disabled,
    totals: Object.fromEntries([...document.querySelectorAll("#totals .chip")].map(c => [c.dataset.state, c.querySelector("b").textContent])),
    queues: [...document.querySelectorAll("#queue-rows tr")].map(r => r.dataset.queue),
    queues_ok: $("queues").dataset.available || "", queue_error: text("queues-error"),
    paused: Object.fromEntries([...document.querySelectorAll("#queue-rows tr")].map(r => [r.dataset.queue, r.dataset.paused])),
    task: { visible: shown("task-view"), id: tv.dataset.id || "", state: tv.dataset.state || "", errors: text("t-errors"),
      msg: text("task-msg"), error: text("task-error"), progress: text("t-progress"), payload: text("t-payload"),
      result: text("t-result"), retry: !$("retry-btn").disabled, live: text("t-live") },
    dlq: { visible: shown("dlq-view"), rows: rows("#dlq-rows tr"), msg: text("dlq-msg"), error: text("dlq-error"),
      types: [...$("dlq-type").options].map(o => o.value) },
    fetched: performance.getEntriesByType("resource").map(e => new URL(e.name).pathname),
  };
})()`

// TestConsoleInBrowser drives the task console of a real `scalelab up`
// in headless Chromium, through the balancer: without a token it shows
// the login and asks the API for nothing; a user logs in with a password;
// a task submitted through the API appears and succeeds in the list, live;
// a failed task's page shows its error, and Retry queues it again (the
// page sees it running, then succeeded); the dead-letter view retries a
// dead task's type; logging out forgets everything. It keeps screenshots
// (console.png, the list; console-task.png, a task's page) in
// $SCALELAB_SCREENSHOT_DIR (else the test's temp dir).
func TestConsoleInBrowser(t *testing.T) {
	browser := requireBrowser(t)
	p := startUp(t, t.TempDir())
	const user, password = "ops", "correct horse battery"
	if err := runStdin(t.Context(), password+"\n", []string{"users", "add", user, "--scope", "tasks:read tasks:write tasks:admin",
		"--nats", p.nats, "--bcrypt-cost", cheapBcrypt}, env(maps.Clone(p.admin)), io.Discard, io.Discard); err != nil {
		t.Fatalf("users add %s = %v", user, err)
	}
	release := consoleWorker(t, p)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	// The user's own token, for the tasks the test submits through the API.
	r := p.do(t, "POST", "/auth/token", "", []byte(`{"username":"`+user+`","password":"`+password+`"}`))
	tok, _ := decodeJSON[map[string]any](t, r)["token"].(string)
	if r.status != http.StatusOK || tok == "" {
		t.Fatalf("POST /auth/token = %d %s", r.status, r.body)
	}
	bearer := "Bearer " + tok
	submit := func(body string) string {
		t.Helper()
		var id string
		// Until the gateways' catalogs have the test worker's types.
		testutil.Eventually(t, 20*time.Second, func() error {
			r := p.do(t, "POST", "/longtask", bearer, []byte(body))
			if r.status != http.StatusAccepted {
				return fmt.Errorf("POST /longtask %s = %d %s", body, r.status, r.body)
			}
			id, _ = decodeJSON[map[string]any](t, r)["task_id"].(string)
			return nil
		})
		return id
	}

	bctx := startBrowser(t, browser, 1360, 1000, 3*time.Minute)
	screenshot := func(name string) { saveScreenshot(t, bctx, name) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			screenshot("console-failure.png")
			t.Fatalf("%s: %v", what, err)
		}
	}
	read := func() consoleView {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[consoleView](readConsole))
		if err != nil {
			t.Fatalf("read the console: %v", err)
		}
		return v
	}
	// until reads the page until check passes, failing the test after within.
	until := func(within time.Duration, check func(v consoleView) error) consoleView {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			v := read()
			err := check(v)
			if err == nil {
				return v
			}
			if time.Now().After(deadline) {
				screenshot("console-failure.png")
				t.Fatalf("console: %v after %v\nview: %+v", err, within, v)
			}
			time.Sleep(100 * time.Millisecond) // poll interval: the page updates on events and every 2 s
		}
	}
	// Without a token: the login, and nothing else, not even a request.
	do("load the console", chromedp.Navigate(p.base+"/console"), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	v := read()
	if !v.Login || v.App || v.Token || len(v.Rows) != 0 || len(v.Queues) != 0 {
		t.Errorf("console without a token: login %v, app %v, token %v, rows %v, queues %v; want the login only",
			v.Login, v.App, v.Token, v.Rows, v.Queues)
	}
	for _, f := range v.Fetched {
		if f != "/console/app.js" && f != "/console/style.css" && f != "/favicon.ico" { // the browser's own
			t.Errorf("console without a token fetched %s, want only its own files", f)
		}
	}

	// A wrong password stays on the login, with the API's message.
	do("log in wrongly", chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), "not the password"), chromedp.Click(chromedp.CSS("#login-btn")))
	until(10*time.Second, func(v consoleView) error {
		if !v.Login || v.App || !strings.Contains(v.LoginError, "invalid username or password") {
			return fmt.Errorf("after a wrong password: login %v, app %v, error %q", v.Login, v.App, v.LoginError)
		}
		return nil
	})
	do("log in", chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#login-btn")), chromedp.WaitVisible(chromedp.CSS("#task-rows")))

	// Tasks of every state, through the API.
	done := submit(`{"task":"noop"}`)
	submit(`{"task":"report"}`)
	failed := submit(`{"task":"` + consoleFails + `","report":"q3"}`)
	failedToo := submit(`{"task":"` + consoleFails + `","report":"q4"}`)
	dead := submit(`{"task":"` + consoleDies + `"}`)
	submit(`{"task":"sleep","duration_ms":1000,"delay":"1h"}`) // queued for an hour
	cancelled := submit(`{"task":"sleep","duration_ms":60000}`)
	if r := p.do(t, "DELETE", "/tasks/"+cancelled, bearer, nil); r.status != http.StatusOK {
		t.Fatalf("DELETE /tasks/%s = %d %s", cancelled, r.status, r.body)
	}
	until(30*time.Second, func(v consoleView) error {
		for id, want := range map[string]string{done: "succeeded", failed: "failed", failedToo: "failed", dead: "dead", cancelled: "cancelled"} {
			if v.Rows[id] != want {
				return fmt.Errorf("task %s is %q in the list, want %s (list error %q)", id, v.Rows[id], want, v.ListError)
			}
		}
		if v.Totals["failed"] != "2" || v.Totals["dead"] != "1" {
			return fmt.Errorf("totals %v, want 2 failed and 1 dead", v.Totals)
		}
		if v.Live != "live" {
			return fmt.Errorf("list is %q, want live (GET /tasks/events)", v.Live)
		}
		return nil
	})
	// A state's chip filters the list by it.
	do("filter failed", chromedp.Click(chromedp.CSS(`#totals .chip[data-state="failed"]`)))
	until(10*time.Second, func(v consoleView) error {
		if len(v.Rows) != 2 || v.Rows[failed] != "failed" || v.Rows[failedToo] != "failed" {
			return fmt.Errorf("rows %v, want the two failed tasks only", v.Rows)
		}
		return nil
	})
	do("filter all", chromedp.Click(chromedp.CSS(`#totals .chip[data-state="all"]`)))
	until(10*time.Second, func(v consoleView) error {
		if v.Rows[done] != "succeeded" || v.Rows[failed] != "failed" {
			return fmt.Errorf("rows %v, want every task again", v.Rows)
		}
		return nil
	})
	// The queues, once the route answers (it may not exist on this build).
	if r := p.do(t, "GET", "/queues", bearer, nil); r.status == http.StatusOK {
		until(10*time.Second, func(v consoleView) error {
			if !containsAll(v.Queues, "default", consoleQueue) || v.QueuesOK != "true" {
				return fmt.Errorf("queues %v (available %q, error %q), want default and %s", v.Queues, v.QueuesOK, v.QueueError, consoleQueue)
			}
			return nil
		})
		// Pause and resume from the page.
		pauseBtn := `#queue-rows tr[data-queue="` + consoleQueue + `"] button`
		do("pause", chromedp.Click(chromedp.CSS(pauseBtn)))
		until(10*time.Second, func(v consoleView) error {
			if v.Paused[consoleQueue] != "true" {
				return fmt.Errorf("queue %s paused %q (error %q), want true", consoleQueue, v.Paused[consoleQueue], v.QueueError)
			}
			return nil
		})
		do("resume", chromedp.Click(chromedp.CSS(pauseBtn)))
		until(10*time.Second, func(v consoleView) error {
			if v.Paused[consoleQueue] != "false" {
				return fmt.Errorf("queue %s paused %q (error %q), want false", consoleQueue, v.Paused[consoleQueue], v.QueueError)
			}
			return nil
		})
	} else {
		t.Logf("GET /queues = %d: the queues panel is not checked", r.status)
	}

	// A failed task's page: its error, then Retry.
	do("open the failed task", chromedp.Click(chromedp.CSS(`#task-rows tr[data-id="`+failed+`"] a`)))
	until(10*time.Second, func(v consoleView) error {
		if !v.Task.Visible || v.Task.ID != failed || v.Task.State != "failed" || !v.Task.Retry {
			return fmt.Errorf("task page %+v, want %s failed with Retry enabled", v.Task, failed)
		}
		if !strings.Contains(v.Task.Errors, "disk quota exceeded") || !strings.Contains(v.Task.Errors, "attempt 1") {
			return fmt.Errorf("task errors %q, want the error of attempt 1", v.Task.Errors)
		}
		if !strings.Contains(v.Task.Payload, `"report": "q3"`) {
			return fmt.Errorf("payload %q, want the report q3", v.Task.Payload)
		}
		return nil
	})
	do("retry", chromedp.Click(chromedp.CSS("#retry-btn")))
	v = until(20*time.Second, func(v consoleView) error {
		if v.Task.State != "running" || !strings.HasPrefix(v.Task.Progress, "50 %") || v.Task.Live != "live" {
			return fmt.Errorf("task page %+v, want it running again at 50 %%, live (GET /tasks/{id}/events)", v.Task)
		}
		return nil
	})
	if !strings.Contains(v.Task.Msg, "Queued again") {
		t.Errorf("after Retry the page says %q, want Queued again", v.Task.Msg)
	}
	// The error history outlives the retry: attempt 1's failure is still
	// there while generation 1 runs.
	if !strings.Contains(v.Task.Errors, "attempt 1") || !strings.Contains(v.Task.Errors, "disk quota exceeded") {
		t.Errorf("task errors after the retry %q, want attempt 1's failure kept", v.Task.Errors)
	}
	screenshot("console-task.png")

	// Back to the list while it runs: every state at once, for the README.
	do("back to the list", chromedp.Click(chromedp.CSS("#back")), chromedp.WaitVisible(chromedp.CSS("#task-rows")))
	until(20*time.Second, func(v consoleView) error {
		if v.Rows[failed] != "running" || v.Rows[failedToo] != "failed" {
			return fmt.Errorf("retried task %q and other %q in the list, want running and failed", v.Rows[failed], v.Rows[failedToo])
		}
		return nil
	})
	screenshot("console.png")
	close(release)
	until(20*time.Second, func(v consoleView) error {
		if v.Rows[failed] != "succeeded" {
			return fmt.Errorf("retried task %q in the list, want succeeded", v.Rows[failed])
		}
		return nil
	})

	// The dead letters, and a retry of every dead task of their type.
	do("open the dead letters", chromedp.Click(chromedp.CSS("#nav-dlq")), chromedp.WaitVisible(chromedp.CSS("#dlq-rows")))
	until(10*time.Second, func(v consoleView) error {
		if v.DLQ.Rows[dead] != "dead" || len(v.DLQ.Rows) != 1 {
			return fmt.Errorf("dead letters %v (error %q), want %s only", v.DLQ.Rows, v.DLQ.Error, dead)
		}
		if !containsAll(v.DLQ.Types, consoleDies) {
			return fmt.Errorf("dead letters' types %v, want %s", v.DLQ.Types, consoleDies)
		}
		return nil
	})
	do("pick the dead type", chromedp.SetValue(chromedp.CSS("#dlq-type"), consoleDies))
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.getElementById("dlq-type").dispatchEvent(new Event("change"))`)); err != nil {
		t.Fatalf("pick the dead type: %v", err)
	}
	do("retry the dead type", chromedp.Click(chromedp.CSS("#dlq-retry")))
	until(10*time.Second, func(v consoleView) error {
		if !strings.Contains(v.DLQ.Msg, "Retried 1 dead task(s) of type "+consoleDies) {
			return fmt.Errorf("dead letters message %q (error %q), want 1 retried", v.DLQ.Msg, v.DLQ.Error)
		}
		return nil
	})

	// The search box opens a task by id.
	do("search", chromedp.Click(chromedp.CSS("#nav-tasks")), chromedp.SendKeys(chromedp.CSS("#search"), done), chromedp.Click(chromedp.CSS("#search-form button")))
	until(10*time.Second, func(v consoleView) error {
		if v.Task.ID != done || v.Task.State != "succeeded" || !strings.Contains(v.Task.Result, `"status": "done"`) {
			return fmt.Errorf("task page %+v, want %s succeeded with its result", v.Task, done)
		}
		return nil
	})

	// Cancel a running task from its page, then delete its record
	// (tasks:admin; a second click confirms).
	long := submit(`{"task":"sleep","duration_ms":60000}`)
	do("back to the list", chromedp.Click(chromedp.CSS("#back")), chromedp.WaitVisible(chromedp.CSS("#search")))
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`(document.getElementById("search").value = "", true)`)); err != nil {
		t.Fatalf("clear the search box: %v", err)
	}
	do("open the long task", chromedp.SendKeys(chromedp.CSS("#search"), long), chromedp.Click(chromedp.CSS("#search-form button")))
	until(20*time.Second, func(v consoleView) error {
		if v.Task.ID != long || v.Task.State != "running" {
			return fmt.Errorf("task page %+v, want %s running", v.Task, long)
		}
		return nil
	})
	do("cancel", chromedp.Click(chromedp.CSS("#cancel-btn")))
	until(10*time.Second, func(v consoleView) error {
		if v.Task.State != "cancelled" || !strings.Contains(v.Task.Msg, "Cancelled") {
			return fmt.Errorf("task page %+v, want it cancelled", v.Task)
		}
		return nil
	})
	do("delete, and confirm", chromedp.Click(chromedp.CSS("#delete-btn")), chromedp.Click(chromedp.CSS("#delete-btn")))
	until(10*time.Second, func(v consoleView) error {
		if !strings.Contains(v.Task.Msg, "Deleted") {
			return fmt.Errorf("task page %+v, want it deleted", v.Task)
		}
		return nil
	})
	if r := p.do(t, "GET", "/tasks/"+long, bearer, nil); r.status != http.StatusNotFound {
		t.Errorf("GET /tasks/%s after Delete = %d %s, want 404", long, r.status, r.body)
	}

	// Pages: 51 more noop tasks, the list filtered by type noop (52 of
	// them): a page of 50, then the oldest 2, then the newest again.
	for range 51 {
		if r := p.do(t, "POST", "/longtask", bearer, []byte(`{"task":"noop"}`)); r.status != http.StatusAccepted {
			t.Fatalf("POST /longtask = %d %s", r.status, r.body)
		}
	}
	do("filter noop", chromedp.Click(chromedp.CSS("#back")), chromedp.WaitVisible(chromedp.CSS("#f-type")),
		chromedp.SetValue(chromedp.CSS("#f-type"), "noop"))
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.getElementById("f-type").dispatchEvent(new Event("change"))`)); err != nil {
		t.Fatalf("filter noop: %v", err)
	}
	until(20*time.Second, func(v consoleView) error {
		if len(v.Rows) != 50 || !v.Older || v.Newest || v.Totals["all"] != "52" {
			return fmt.Errorf("%d rows, older %v, newest %v, totals %v; want the newest 50 noop tasks of 52", len(v.Rows), v.Older, v.Newest, v.Totals)
		}
		return nil
	})
	do("older", chromedp.Click(chromedp.CSS("#older")))
	until(10*time.Second, func(v consoleView) error {
		if len(v.Rows) != 2 || v.Rows[done] != "succeeded" || v.Older || !v.Newest {
			return fmt.Errorf("rows %v, older %v, newest %v; want the oldest 2 noop tasks, %s among them", v.Rows, v.Older, v.Newest, done)
		}
		return nil
	})
	do("newest", chromedp.Click(chromedp.CSS("#newest")))
	until(10*time.Second, func(v consoleView) error {
		if len(v.Rows) != 50 || v.Rows[done] != "" {
			return fmt.Errorf("%d rows (%s among them: %q); want the newest 50 again", len(v.Rows), done, v.Rows[done])
		}
		return nil
	})

	// Logging out forgets the token and what it showed.
	do("log out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	v = read()
	if !v.Login || v.App || v.Token || len(v.Rows) != 0 || len(v.Queues) != 0 || len(v.DLQ.Rows) != 0 {
		t.Errorf("after log out: login %v, app %v, token %v, rows %v, queues %v, dead letters %v; want the login only",
			v.Login, v.App, v.Token, v.Rows, v.Queues, v.DLQ.Rows)
	}

	// A pasted token the API refuses (401) leads back to the login.
	do("paste a bad token", chromedp.Click(chromedp.CSS("#token-box summary")),
		chromedp.SendKeys(chromedp.CSS("#token-input"), "not-a-token"), chromedp.Click(chromedp.CSS("#token-btn")))
	until(10*time.Second, func(v consoleView) error {
		if !v.Login || v.App || v.Token || !strings.Contains(v.LoginError, "refused the token") {
			return fmt.Errorf("after a bad token: login %v, app %v, token %v, error %q; want the login, saying why", v.Login, v.App, v.Token, v.LoginError)
		}
		return nil
	})
}

// containsAll reports whether list holds every one of want.
func containsAll(list []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, s := range list {
			found = found || s == w
		}
		if !found {
			return false
		}
	}
	return true
}
