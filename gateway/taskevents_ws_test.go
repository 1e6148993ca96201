package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
)

// wsMessage is one message of a task event WebSocket.
type wsMessage struct {
	Event string          `json:"event"`
	ID    uint64          `json:"id"`
	Data  json.RawMessage `json:"data"`
}

func dialEvents(t *testing.T, url, token string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, strings.Replace(url, "http", "ws", 1),
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if c != nil {
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

func readMessage(t *testing.T, c *websocket.Conn) (wsMessage, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	var m wsMessage
	if err == nil {
		if typ != websocket.MessageText || json.Unmarshal(b, &m) != nil {
			t.Fatalf("message %q (type %v) is not a JSON event", b, typ)
		}
	}
	return m, err
}

// TestTaskEventsWebSocket: the task event routes answer a WebSocket
// upgrade with the same events, one JSON message each, and close normally
// after "end"; who may see what is as for the event stream.
func TestTaskEventsWebSocket(t *testing.T) {
	t.Parallel()
	e := startRetryEnv(t)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)

	all, _, err := dialEvents(t, e.base+"/tasks/events", alice)
	if err != nil {
		t.Fatalf("dial /tasks/events: %v", err)
	}
	id := e.submit(t, alice, "slow")
	c, _, err := dialEvents(t, e.base+"/tasks/"+id+"/events", alice)
	if err != nil {
		t.Fatalf("dial /tasks/%s/events: %v", id, err)
	}
	var states []task.State
	ran := false
	for {
		m, err := readMessage(t, c)
		if err != nil {
			t.Fatalf("after states %v: %v", states, err)
		}
		if m.Event == "end" {
			break
		}
		var rec task.Record
		if m.Event != "task" || m.ID == 0 || json.Unmarshal(m.Data, &rec) != nil || rec.ID != id {
			t.Fatalf("message %+v, want the task's record with an id", m)
		}
		if len(states) == 0 || states[len(states)-1] != rec.State {
			states = append(states, rec.State)
		}
		if rec.State == task.Running && !ran {
			ran = true
			<-e.running
			close(e.release)
		}
	}
	if !ran || states[len(states)-1] != task.Succeeded {
		t.Errorf("states = %v, want running … succeeded, then end", states)
	}
	if _, err := readMessage(t, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after end: %v, want a normal closure", err)
	}
	// The list stream saw the task too.
	m, err := readMessage(t, all)
	if err != nil || !strings.Contains(string(m.Data), id) {
		t.Errorf("first message on /tasks/events = %+v, %v; want a change of %s", m, err, id)
	}

	// Refusals come before the upgrade, as plain HTTP errors.
	if _, resp, err := dialEvents(t, e.base+"/tasks/"+id+"/events", bob); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("bob's WebSocket on alice's task: %v, %v; want 404", err, resp)
	}
	if _, resp, err := dialEvents(t, e.base+"/tasks/"+id+"/events", "nope"); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("WebSocket with a bad token: %v, %v; want 401", err, resp)
	}
}
