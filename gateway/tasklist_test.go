package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// listBody is GET /tasks's answer as a client reads it.
type listBody struct {
	Tasks []struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Queue     string          `json:"queue"`
		State     task.State      `json:"state"`
		Owner     string          `json:"owner"`
		Error     string          `json:"error"`
		CreatedAt time.Time       `json:"created_at"`
		Payload   json.RawMessage `json:"payload"`
	} `json:"tasks"`
	NextCursor string         `json:"next_cursor"`
	Totals     map[string]int `json:"totals"`
}

func listTasks(t *testing.T, base, tok, query string) (result, listBody) {
	t.Helper()
	r := get(t, base+"/tasks?"+query, tok)
	var b listBody
	if r.status == http.StatusOK {
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatalf("GET /tasks?%s: body %s: %v", query, r.body, err)
		}
	}
	return r, b
}

// TestListTasks: GET /tasks lists the caller's own tasks newest first, a
// page at a time through next_cursor, filtered by state, type and queue,
// with totals per state; tasks:admin lists everybody's (or one owner's
// with ?owner=). Bad filters, limits and cursors are 400s that say why,
// ?owner= without tasks:admin a 403.
func TestListTasks(t *testing.T) {
	t.Parallel()
	e := startRetryEnv(t)
	alice := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	bob := tokenFor(t, "bob", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	admin := tokenFor(t, "ops", auth.AllScopes...)

	var mine []string // alice's, oldest first
	for range 3 {
		mine = append(mine, e.submit(t, alice, "flaky"))
	}
	bobs := e.submit(t, bob, "flaky")
	for _, id := range append(slices.Clone(mine), bobs) {
		e.waitState(t, admin, id, task.Failed)
	}
	// The listing follows the bucket a few milliseconds behind.
	var all listBody
	testutil.Eventually(t, 10*time.Second, func() error {
		r, b := listTasks(t, e.base, alice, "state=failed")
		if r.status != http.StatusOK || len(b.Tasks) != 3 || b.Totals["failed"] != 3 {
			return fmt.Errorf("GET /tasks?state=failed as alice = %d %s", r.status, r.body)
		}
		all = b
		return nil
	})
	newestFirst := slices.Clone(mine)
	slices.Reverse(newestFirst)
	var got []string
	for i, tk := range all.Tasks {
		got = append(got, tk.ID)
		if tk.Owner != "alice" || tk.Type != "flaky" || tk.Queue != task.DefaultQueue || tk.Error == "" || tk.Payload != nil {
			t.Errorf("task %d = %+v, want alice's failed flaky task on default, with its error and no payload", i, tk)
		}
		if i > 0 && tk.CreatedAt.After(all.Tasks[i-1].CreatedAt) {
			t.Errorf("task %d is newer than task %d: not newest first", i, i-1)
		}
	}
	if !slices.Equal(got, newestFirst) {
		t.Errorf("alice's tasks = %v, want %v (hers, newest first)", got, newestFirst)
	}
	if all.Totals["all"] != 3 || all.Totals["queued"] != 0 || all.NextCursor != "" {
		t.Errorf("totals %v, next_cursor %q; want all 3 and no next page", all.Totals, all.NextCursor)
	}

	t.Run("pages", func(t *testing.T) {
		var paged []string
		query := "limit=2"
		for range 5 {
			r, b := listTasks(t, e.base, alice, query)
			if r.status != http.StatusOK {
				t.Fatalf("GET /tasks?%s = %d %s", query, r.status, r.body)
			}
			for _, tk := range b.Tasks {
				paged = append(paged, tk.ID)
			}
			if b.NextCursor == "" {
				break
			}
			query = "limit=2&cursor=" + url.QueryEscape(b.NextCursor)
		}
		if !slices.Equal(paged, newestFirst) {
			t.Errorf("pages of 2 = %v, want %v", paged, newestFirst)
		}
	})
	t.Run("filters", func(t *testing.T) {
		if _, b := listTasks(t, e.base, alice, "state=succeeded"); len(b.Tasks) != 0 || b.Totals["failed"] != 3 {
			t.Errorf("state=succeeded: %d tasks, totals %v; want none, and the totals of every state", len(b.Tasks), b.Totals)
		}
		if r, b := listTasks(t, e.base, alice, "type=slow"); len(b.Tasks) != 0 || b.Totals["all"] != 0 || !strings.Contains(string(r.body), `"tasks":[]`) {
			t.Errorf("type=slow: %s; want no tasks, as [], and totals of 0", r.body)
		}
		if _, b := listTasks(t, e.base, alice, "type=flaky&queue=default"); len(b.Tasks) != 3 {
			t.Errorf("type=flaky&queue=default: %d tasks, want 3", len(b.Tasks))
		}
		if _, b := listTasks(t, e.base, bob, ""); len(b.Tasks) != 1 || b.Tasks[0].ID != bobs {
			t.Errorf("bob's listing = %+v, want his one task", b.Tasks)
		}
		if _, b := listTasks(t, e.base, admin, "type=flaky"); len(b.Tasks) != 4 || b.Totals["failed"] != 4 {
			t.Errorf("admin's listing: %d tasks, totals %v; want all 4", len(b.Tasks), b.Totals)
		}
		if _, b := listTasks(t, e.base, admin, "owner=bob"); len(b.Tasks) != 1 || b.Tasks[0].ID != bobs {
			t.Errorf("admin's listing of bob's = %+v, want his one task", b.Tasks)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		_, first := listTasks(t, e.base, alice, "limit=1")
		for _, c := range []struct {
			who, query string
			status     int
			code, says string
		}{
			{alice, "state=bogus", 400, "invalid", "state must be one of"},
			{alice, "type=nope", 400, "invalid", `no type \"nope\" is registered`},
			{alice, "queue=nope", 400, "invalid", `no queue \"nope\" is registered`},
			{alice, "type=a.b", 400, "invalid", "type must be"},
			{alice, "limit=0", 400, "invalid", "limit must be"},
			{alice, "limit=201", 400, "invalid", "limit must be"},
			{alice, "limit=x", 400, "invalid", "limit must be"},
			{alice, "cursor=garbage!", 400, "invalid", "cursor"},
			{alice, "cursor=" + url.QueryEscape(first.NextCursor) + "&state=failed", 400, "invalid", "other filters"},
			{alice, "stat=failed", 400, "invalid", "unknown query parameter"},
			{alice, "state=failed&state=dead", 400, "invalid", "2 times"},
			{alice, "owner=bob", 403, "forbidden", "tasks:admin"},
			{"", "", 401, "unauthorized", ""},
		} {
			r := get(t, e.base+"/tasks?"+c.query, c.who)
			wantError(t, "GET /tasks?"+c.query, r, c.status, c.code, c.says)
		}
	})
}

// TestTaskIndexOrderAndBudget drives the index alone: records in any
// order come out newest first; a state change moves a task between the
// state's lists and counters; a type filter that matches little answers a
// short page with a cursor instead of walking every record; a deleted or
// expired record leaves the listing.
func TestTaskIndexOrderAndBudget(t *testing.T) {
	x := newTaskIndex(time.Hour, testutil.QuietLog())
	x.ready.Store(true)
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	put := func(i int, typ string, state task.State, rev uint64) {
		rec := task.Record{ID: fmt.Sprintf("t%05d", i), Type: typ, State: state, Owner: "alice",
			CreatedAt: base.Add(time.Duration(i) * time.Second), UpdatedAt: base.Add(time.Duration(i) * time.Second)}
		b, _ := json.Marshal(rec)
		x.apply(rec.ID, b, rev, false)
	}
	for _, i := range []int{3, 1, 2, 5, 4} {
		put(i, "a", task.Queued, uint64(i))
	}
	p, err := x.list(listQuery{owner: "alice", limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range p.tasks {
		ids = append(ids, s.ID)
	}
	if want := []string{"t00005", "t00004", "t00003", "t00002", "t00001"}; !slices.Equal(ids, want) {
		t.Errorf("list = %v, want %v", ids, want)
	}
	put(3, "a", task.Succeeded, 10)
	put(3, "a", task.Queued, 9) // an older revision: ignored
	if p, _ := x.list(listQuery{owner: "alice", state: task.Succeeded, limit: 10}); len(p.tasks) != 1 || p.tasks[0].ID != "t00003" {
		t.Errorf("succeeded = %+v, want t00003", p.tasks)
	}
	if tot := x.Totals("alice", "", ""); tot[task.Queued] != 4 || tot[task.Succeeded] != 1 {
		t.Errorf("totals = %v, want 4 queued, 1 succeeded", tot)
	}
	x.apply("t00005", nil, 11, true)
	if tot := x.Totals("", "a", ""); tot[task.Queued] != 3 {
		t.Errorf("totals after a delete = %v, want 3 queued", tot)
	}

	// A rare type behind more than a budget of others.
	for i := 100; i < 100+indexScanBudget+10; i++ {
		put(i, "common", task.Succeeded, uint64(i))
	}
	p, _ = x.list(listQuery{owner: "alice", typ: "a", limit: 10})
	if len(p.tasks) != 0 || p.next == nil {
		t.Fatalf("rare type past the budget: %d tasks, next %v; want a short page with a cursor", len(p.tasks), p.next)
	}
	p, _ = x.list(listQuery{owner: "alice", typ: "a", limit: 10, after: p.next})
	if len(p.tasks) != 4 {
		t.Errorf("rare type, second page: %d tasks, want the 4 left", len(p.tasks))
	}

	// Expired: last written more than the TTL (and a minute) ago.
	x.sweep(base.Add(time.Hour + time.Minute + 50*time.Second))
	if tot := x.Totals("", "", ""); tot[task.Queued] != 0 || tot[task.Succeeded] == 0 {
		t.Errorf("after the sweep: %v; want the first tasks gone, the later ones kept", tot)
	}
}

// errNoEvent is what nextEvent returns when the stream ended.
var errNoEvent = errors.New("stream ended")

// TestTaskIndexFollowsWhileUsed: the index follows the bucket (one
// consumer on its stream) only while it is used: not before the first
// listing, not once unused for its idle time with no stream open, and
// again, with what was written meanwhile, at the next use. An open event
// stream keeps it following.
func TestTaskIndexFollowsWhileUsed(t *testing.T) {
	t.Parallel()
	js, store := provisionedTasks(t)
	put := func(id string) {
		now := time.Now().UTC()
		if _, err := store.Create(t.Context(), &task.Record{ID: id, Type: "noop", State: task.Queued, Owner: "alice", CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	consumers := func() int {
		s, err := js.Stream(t.Context(), "KV_"+task.Bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	listed := func(x *taskIndex) int {
		if !x.awaitLoaded(t.Context(), 10*time.Second) {
			t.Fatal("the index did not load within 10 s")
		}
		p, err := x.list(listQuery{owner: "alice", limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return len(p.tasks)
	}
	put("a1")
	x, err := startTaskIndexIdle(t.Context(), js, testutil.QuietLog(), 300*time.Millisecond, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if n := consumers(); n != 0 {
		t.Fatalf("%d consumers on the bucket before any use, want 0", n)
	}
	if n := listed(x); n != 1 {
		t.Fatalf("first listing: %d tasks, want 1", n)
	}
	if n := consumers(); n != 1 {
		t.Errorf("%d consumers while used, want 1", n)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := consumers(); n != 0 || x.ready.Load() {
			return fmt.Errorf("unused: %d consumers, loaded %v; want it stopped", n, x.ready.Load())
		}
		return nil
	})
	put("a2")
	if n := listed(x); n != 2 {
		t.Fatalf("listing after a quiet spell: %d tasks, want 2 (with the one written meanwhile)", n)
	}

	_, unsubscribe, err := x.subscribeList(listFilter{owner: "alice"}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unsubscribe()
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); { // 3 idle times
		if n := consumers(); n != 1 {
			t.Fatalf("%d consumers with a stream open, want 1: a stream keeps the index following", n)
		}
	}
}
