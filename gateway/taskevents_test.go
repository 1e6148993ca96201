package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// sseEvent is one server-sent event as a client reads it.
type sseEvent struct {
	id, name string
	data     string
}

// sseStream is an open event stream.
type sseStream struct {
	res    *http.Response
	lines  *bufio.Scanner
	cancel context.CancelFunc
}

// openEvents opens an event stream as tok and checks it started (200,
// text/event-stream); it is closed when the test ends.
func openEvents(t *testing.T, url, tok string) *sseStream {
	t.Helper()
	s, r := tryEvents(t, url, tok)
	if s == nil {
		t.Fatalf("GET %s = %d %s, want an event stream", url, r.status, r.body)
	}
	return s
}

// tryEvents opens an event stream, or returns the error answer.
func tryEvents(t *testing.T, url, tok string) (*sseStream, result) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req) // no client timeout: the stream is long-lived
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		defer cancel()
		defer res.Body.Close()
		var buf strings.Builder
		_, _ = bufio.NewReader(res.Body).WriteTo(&buf)
		return nil, result{status: res.StatusCode, header: res.Header, body: []byte(buf.String())}
	}
	s := &sseStream{res: res, lines: bufio.NewScanner(res.Body), cancel: cancel}
	s.lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	t.Cleanup(s.close)
	return s, result{status: res.StatusCode}
}

func (s *sseStream) close() {
	s.cancel()
	s.res.Body.Close()
}

// next returns the next event (comments and the retry field skipped), or
// an error once the stream ends or within gives out.
func (s *sseStream) next(within time.Duration) (sseEvent, error) {
	timer := time.AfterFunc(within, s.cancel) // a stuck read ends with the request
	defer timer.Stop()
	var ev sseEvent
	for s.lines.Scan() {
		line := s.lines.Text()
		switch {
		case line == "":
			if ev.name != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.name = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data += line[6:]
		}
	}
	return ev, fmt.Errorf("%w (%v)", errNoEvent, s.lines.Err())
}

// TestTaskEventStream: GET /tasks/{id}/events sends the record, then every
// change (queued → running with its progress → succeeded), then "end",
// and closes. Another owner's task is a 404, a bad id a 400, a finished
// task the record and "end" at once.
func TestTaskEventStream(t *testing.T) {
	t.Parallel()
	e := startRetryEnv(t)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)

	id := e.submit(t, alice, "slow")
	s := openEvents(t, e.base+"/tasks/"+id+"/events", alice)
	var states []task.State
	ran := false
	for {
		ev, err := s.next(20 * time.Second)
		if err != nil {
			t.Fatalf("after states %v: %v", states, err)
		}
		if ev.name == "end" {
			break
		}
		if ev.name != "task" || ev.id == "" {
			t.Fatalf("event %+v, want a task event with an id", ev)
		}
		var rec task.Record
		if err := json.Unmarshal([]byte(ev.data), &rec); err != nil || rec.ID != id {
			t.Fatalf("event data %q is not the task's record: %v", ev.data, err)
		}
		if len(states) == 0 || states[len(states)-1] != rec.State {
			states = append(states, rec.State)
		}
		if rec.State == task.Running && !ran {
			ran = true
			<-e.running
			close(e.release) // let it finish: the stream must tell
		}
		if !ran && rec.State == task.Queued {
			continue
		}
	}
	if states[len(states)-1] != task.Succeeded || !ran {
		t.Errorf("states streamed = %v, want running … succeeded, then end", states)
	}
	if _, err := s.next(5 * time.Second); err == nil {
		t.Error("the stream went on after end")
	}

	// Finished: the record, then end.
	s = openEvents(t, e.base+"/tasks/"+id+"/events", alice)
	if ev, err := s.next(5 * time.Second); err != nil || !strings.Contains(ev.data, `"succeeded"`) {
		t.Errorf("first event of a finished task = %+v, %v", ev, err)
	}
	if ev, err := s.next(5 * time.Second); err != nil || ev.name != "end" {
		t.Errorf("second event of a finished task = %+v, %v; want end", ev, err)
	}

	_, r := tryEvents(t, e.base+"/tasks/"+id+"/events", bob)
	wantError(t, "bob's stream of alice's task", r, 404, "not_found", id)
	_, r = tryEvents(t, e.base+"/tasks/not-an-id/events", alice)
	wantError(t, "stream of a bad id", r, 400, "invalid", "task id")
}

// TestTasksEventStream: GET /tasks/events streams the changes of the
// caller's tasks and nobody else's; filters apply; at most
// maxStreamsPerSubject streams per token (429 past it), and a stream whose
// client went away frees its place.
func TestTasksEventStream(t *testing.T) {
	t.Parallel()
	e := startRetryEnv(t)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	testutil.Eventually(t, 10*time.Second, func() error { // the index is loaded
		if r := get(t, e.base+"/tasks", alice); r.status != http.StatusOK {
			return fmt.Errorf("GET /tasks = %d %s", r.status, r.body)
		}
		return nil
	})

	s := openEvents(t, e.base+"/tasks/events", alice)
	failedOnly := openEvents(t, e.base+"/tasks/events?state=failed", alice)
	bobs := e.submit(t, bob, "flaky")
	mine := e.submit(t, alice, "flaky")
	seen := map[task.State]bool{}
	for !seen[task.Failed] {
		ev, err := s.next(20 * time.Second)
		if err != nil {
			t.Fatalf("alice's stream after %v: %v", seen, err)
		}
		var sum taskSummary
		if err := json.Unmarshal([]byte(ev.data), &sum); err != nil || ev.name != "task" {
			t.Fatalf("event %+v: %v", ev, err)
		}
		if sum.ID == bobs || sum.Owner != "alice" {
			t.Fatalf("alice's stream told her of %+v", sum)
		}
		if sum.ID == mine {
			seen[sum.State] = true
		}
	}
	ev, err := failedOnly.next(10 * time.Second)
	if err != nil || !strings.Contains(ev.data, mine) || !strings.Contains(ev.data, `"state":"failed"`) {
		t.Errorf("state=failed stream's first event = %+v, %v; want alice's task, failed", ev, err)
	}

	_, r := tryEvents(t, e.base+"/tasks/events?state=nope", alice)
	wantError(t, "stream with a bad state", r, 400, "invalid", "state must be")
	_, r = tryEvents(t, e.base+"/tasks/events?owner=bob", alice)
	wantError(t, "stream of bob's tasks as alice", r, 403, "forbidden", "tasks:admin")

	// The limit: alice has 2 open; open up to it, then one more.
	var streams []*sseStream
	for range maxStreamsPerSubject - 2 {
		streams = append(streams, openEvents(t, e.base+"/tasks/events", alice))
	}
	_, r = tryEvents(t, e.base+"/tasks/events", alice)
	wantError(t, "one stream too many", r, 429, "rate_limited", "too many open event streams")
	if other := openEvents(t, e.base+"/tasks/events", bob); other == nil {
		t.Fatal("bob could not open a stream while alice is at her limit")
	}
	streams[0].close() // the client goes away: its place frees
	testutil.Eventually(t, 10*time.Second, func() error {
		s, r := tryEvents(t, e.base+"/tasks/events", alice)
		if s == nil {
			return fmt.Errorf("after a client left: %d %s", r.status, r.body)
		}
		return nil
	})
}

// TestSharedIndexAndShutdown: two gateways share one TaskIndex (as `up`'s
// do); a gateway that shuts down ends its event streams at once rather
// than wait out its shutdown timeout, and the other lists on from the
// same index.
func TestSharedIndexAndShutdown(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	nc := testutil.Connect(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Provision(t.Context(), js, task.DefaultProvisionConfig()); err != nil {
		t.Fatal(err)
	}
	idx, err := StartTaskIndex(t.Context(), testutil.Connect(t, ns), testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	shared := func(c *Config) { c.TaskIndex, c.ShutdownTimeout = idx, 20*time.Second }
	first, running := startGatewayRunning(t, nc, shared)
	second := startGateway(t, testutil.Connect(t, ns), shared)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	testutil.Eventually(t, 10*time.Second, func() error {
		if r := get(t, first+"/tasks", alice); r.status != http.StatusOK {
			return fmt.Errorf("GET /tasks = %d %s", r.status, r.body)
		}
		return nil
	})
	s := openEvents(t, first+"/tasks/events", alice)
	id := taskID(t, send(t, "POST", second+"/longtask", alice, `{"task":"noop"}`, nil))
	if ev, err := s.next(10 * time.Second); err != nil || !strings.Contains(ev.data, id) {
		t.Fatalf("first gateway's stream = %+v, %v; want the task submitted through the second", ev, err)
	}
	start := time.Now()
	if err := running.Stop(); err != nil {
		t.Fatalf("stop the first gateway: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the gateway took %v to stop with a stream open, want it to end its streams at once", took)
	}
	if _, err := s.next(5 * time.Second); err == nil {
		t.Error("the stream went on after its gateway stopped")
	}
	r, b := listTasks(t, second, alice, "")
	if r.status != http.StatusOK || len(b.Tasks) != 1 || b.Tasks[0].ID != id {
		t.Errorf("second gateway's listing = %d %s, want the task", r.status, r.body)
	}
}
