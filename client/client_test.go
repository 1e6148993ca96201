package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/client"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/task/tasktest"
)

// bus is newBus for a test: stopped at its end.
func bus(t *testing.T) *client.NATSClient {
	t.Helper()
	nc, stop := tasktest.NewBus()
	t.Cleanup(stop)
	return client.NewNATS(nc, "tester")
}

// wantError fails unless err is a *client.Error with status and code.
func wantError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) || e.Status != status || e.Code != code {
		t.Errorf("%s = %v, want a %d %s *client.Error", what, err, status, code)
	}
}

// TestSubmitRefusesBadPayloads: a payload that is not an object, one that
// uses a reserved member, and both times to run are refused before
// anything is sent.
func TestSubmitRefusesBadPayloads(t *testing.T) {
	c := client.New("http://127.0.0.1:1", "") // never reached
	for _, tc := range []struct {
		name    string
		payload any
		opts    []client.SubmitOption
		want    string
	}{
		{"not an object", []int{1, 2}, nil, "JSON object"},
		{"a reserved member", map[string]string{"queue": "low"}, nil, "reserved"},
		{"a delay and a time", nil, []client.SubmitOption{client.WithDelay(time.Minute), client.WithRunAt(time.Now())}, "not both"},
		{"not JSON", make(chan int), nil, "encode payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Submit(t.Context(), "noop", tc.payload, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Submit = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestHTTPErrors: the API's JSON error is a *client.Error with its status,
// code, message and request id; an answer without one (a proxy's page)
// gets the status's code.
func TestHTTPErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("Authorization = %q, want Bearer tok", r.Header.Get("Authorization"))
		}
		switch r.URL.Path {
		case "/tasks/abc":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no task abc","request_id":"r1"}}`))
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>bad gateway</html>"))
		}
	}))
	defer srv.Close()
	c := client.New(srv.URL+"/", "tok")
	_, err := c.Get(t.Context(), "abc")
	wantError(t, "Get", err, 404, "not_found")
	var e *client.Error
	if errors.As(err, &e) && (e.Message != "no task abc" || e.RequestID != "r1") {
		t.Errorf("error = %+v, want the body's message and request id", e)
	}
	_, err = c.Cancel(t.Context(), "xyz")
	wantError(t, "Cancel through a broken proxy", err, 502, "unavailable")
}

// TestNATSSubmit: a task submitted over NATS has the record and the
// message the gateway would make: queued, owned, on its type's queue
// (or the one asked for), in TASKS now or in TASKS_DELAYED for later.
func TestNATSSubmit(t *testing.T) {
	nc, stop := tasktest.NewBus()
	t.Cleanup(stop)
	c := client.NewNATS(nc, "tester")
	ctx := t.Context()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	now, err := c.Submit(ctx, "noop", map[string]any{"b": 1, "a": "x"})
	if err != nil {
		t.Fatal(err)
	}
	if now.State != client.Queued || now.Owner != "tester" || now.Queue != task.DefaultQueue || now.RunAt != nil {
		t.Errorf("task = %+v, want queued, owner tester, the default queue, no run_at", now)
	}
	if got := string(now.Payload); got != `{"a":"x","b":1,"task":"noop"}` {
		t.Errorf("payload = %s, want the canonical body", got)
	}
	tasks, err := js.Stream(ctx, task.Stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := tasks.GetLastMsgForSubject(ctx, task.Subject(task.DefaultQueue, "noop"))
	if err != nil {
		t.Fatalf("no message on %s: %v", task.Subject(task.DefaultQueue, "noop"), err)
	}
	if msg.Header.Get(task.HeaderTaskID) != now.ID {
		t.Errorf("message's %s = %q, want %s", task.HeaderTaskID, msg.Header.Get(task.HeaderTaskID), now.ID)
	}

	later, err := c.Submit(ctx, "noop", nil, client.WithDelay(time.Hour), client.WithQueue("low"))
	if err != nil {
		t.Fatal(err)
	}
	if later.Queue != "low" || later.RunAt == nil || time.Until(*later.RunAt) < 59*time.Minute {
		t.Errorf("delayed task = queue %q, run_at %v; want low, in an hour", later.Queue, later.RunAt)
	}
	delayed, err := js.Stream(ctx, task.DelayedStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := delayed.GetLastMsgForSubject(ctx, task.DelayedAtPrefix+later.ID); err != nil {
		t.Errorf("no schedule for the delayed task: %v", err)
	}

	_, err = c.Submit(ctx, "nosuchtype", nil)
	wantError(t, "Submit of an unregistered type", err, 400, "invalid")
	_, err = c.Submit(ctx, "noop", nil, client.WithQueue("nosuchqueue"))
	wantError(t, "Submit to an unregistered queue", err, 400, "invalid")
	_, err = c.Submit(ctx, "noop", nil, client.WithDelay(30*24*time.Hour))
	wantError(t, "Submit a month ahead", err, 400, "invalid")
}

// TestNATSIdempotencyKey: a repeat with the key returns the first task; the
// key with another payload is a 409.
func TestNATSIdempotencyKey(t *testing.T) {
	c := bus(t)
	ctx := t.Context()
	first, err := c.Submit(ctx, "noop", map[string]int{"n": 1}, client.WithIdempotencyKey("k1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Submit(ctx, "noop", map[string]int{"n": 1}, client.WithIdempotencyKey("k1"))
	if err != nil || again.ID != first.ID {
		t.Errorf("repeat = %v, %v; want the first task %s", again, err, first.ID)
	}
	_, err = c.Submit(ctx, "noop", map[string]int{"n": 2}, client.WithIdempotencyKey("k1"))
	wantError(t, "the key with another payload", err, 409, "conflict")
	_, err = c.Submit(ctx, "noop", nil, client.WithIdempotencyKey("bad\nkey"))
	wantError(t, "a key with a newline", err, 400, "invalid")
	if list, err := c.List(ctx, client.Filter{}); err != nil || len(list) != 1 {
		t.Errorf("List = %d tasks, %v; want 1", len(list), err)
	}
}

// TestNATSGetWaitCancelList: reading, waiting on, cancelling and listing
// tasks, with the HTTP API's errors.
func TestNATSGetWaitCancelList(t *testing.T) {
	c := bus(t)
	ctx := t.Context()
	var ids []string
	for _, typ := range []string{"noop", "sleep", "noop"} {
		tk, err := c.Submit(ctx, typ, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tk.ID)
	}
	_, err := c.Get(ctx, "nosuchtask")
	wantError(t, "Get of no task", err, 404, "not_found")
	_, err = c.Get(ctx, "../etc")
	wantError(t, "Get of a bad id", err, 400, "invalid")

	// No worker runs here: Wait gives up with the context, with the
	// record as it last read it. The deadline leaves room for a first
	// read under the race detector on a loaded machine (CI once took
	// longer than 50 ms).
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	last, err := c.Wait(wctx, ids[0])
	if !errors.Is(err, context.DeadlineExceeded) || last == nil || last.State != client.Queued {
		t.Errorf("Wait = %+v, %v; want the queued record and the deadline", last, err)
	}

	got, err := c.Cancel(ctx, ids[0])
	if err != nil || got.State != client.Cancelled || got.FinishedAt == nil {
		t.Fatalf("Cancel = %+v, %v; want cancelled", got, err)
	}
	if done, err := c.Wait(ctx, ids[0]); err != nil || done.State != client.Cancelled {
		t.Errorf("Wait of a cancelled task = %+v, %v", done, err)
	}
	_, err = c.Cancel(ctx, ids[0])
	wantError(t, "a second Cancel", err, 409, "conflict")

	for _, tc := range []struct {
		name string
		f    client.Filter
		want int
	}{
		{"all", client.Filter{}, 3},
		{"by type", client.Filter{Type: "noop"}, 2},
		{"by state", client.Filter{State: client.Cancelled}, 1},
		{"by queue", client.Filter{Queue: task.DefaultQueue}, 3},
		{"by owner", client.Filter{Owner: "someone else"}, 0},
		{"limited", client.Filter{Limit: 2}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, err := c.List(ctx, tc.f)
			if err != nil || len(list) != tc.want {
				t.Errorf("List(%+v) = %d tasks, %v; want %d", tc.f, len(list), err, tc.want)
			}
			for i := 1; i < len(list); i++ {
				if list[i].CreatedAt.After(list[i-1].CreatedAt) {
					t.Errorf("List is not newest first")
				}
			}
		})
	}
}

// TestHTTPListAndRetry: List sends the options as GET /tasks's query (none
// for zero fields) and decodes the page; Retry posts to
// /tasks/{id}/retry; both answer the API's refusals as *client.Error.
func TestHTTPListAndRetry(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/tasks" && r.URL.RawQuery == "":
			_, _ = w.Write([]byte(`{"tasks":[{"id":"a1","type":"noop","queue":"default","state":"failed","attempts":3,` +
				`"max_attempts":3,"progress":0,"error":"boom","owner":"alice","created_at":"2026-12-07T08:00:00Z",` +
				`"updated_at":"2026-12-07T08:00:01Z","generation":2}],"next_cursor":"c2",` +
				`"totals":{"queued":0,"running":0,"succeeded":4,"failed":1,"dead":0,"cancelled":0,"all":5}}`))
		case r.Method == http.MethodGet && r.URL.Path == "/tasks":
			q := r.URL.Query()
			want := map[string]string{"state": "dead", "type": "noop", "queue": "low", "owner": "bob", "limit": "7", "cursor": "c2"}
			for k, v := range want {
				if q.Get(k) != v {
					t.Errorf("GET /tasks ?%s = %q, want %q (query %s)", k, q.Get(k), v, r.URL.RawQuery)
				}
			}
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"code":"invalid","message":"bad cursor"}}`))
		case r.Method == http.MethodPost && r.URL.Path == "/tasks/a1/retry":
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"id":"a1","type":"noop","state":"queued","attempts":0,"generation":3,` +
				`"created_at":"2026-12-07T08:00:00Z","updated_at":"2026-12-07T08:05:00Z"}`))
		case r.Method == http.MethodPost && r.URL.Path == "/tasks/r1/retry":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"error":{"code":"conflict","message":"task r1 is running"}}`))
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL)
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c := client.New(srv.URL, "tok")
	ctx := t.Context()

	p, err := c.List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tasks) != 1 || p.Tasks[0].ID != "a1" || p.Tasks[0].State != client.Failed || p.Tasks[0].Generation != 2 ||
		p.Tasks[0].Error != "boom" || p.NextCursor != "c2" {
		t.Errorf("page = %+v (first %+v), want task a1 failed, generation 2, next cursor c2", p, p.Tasks[0])
	}
	if p.Totals[client.Succeeded] != 4 || p.Totals["all"] != 5 {
		t.Errorf("totals = %v, want succeeded 4, all 5", p.Totals)
	}
	_, err = c.List(ctx, client.ListOptions{State: client.Dead, Type: "noop", Queue: "low", Owner: "bob", Limit: 7, Cursor: "c2"})
	wantError(t, "List with a bad cursor", err, 400, "invalid")

	got, err := c.Retry(ctx, "a1")
	if err != nil || got.State != client.Queued || got.Generation != 3 {
		t.Errorf("Retry = %+v, %v; want queued, generation 3", got, err)
	}
	_, err = c.Retry(ctx, "r1")
	wantError(t, "Retry of a running task", err, 409, "conflict")
}
