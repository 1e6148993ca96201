package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/testutil"
)

// limitStore sets the JetStream store limit of ns's global account to max
// bytes (-1: none), as natsconf.GuardStore does when the disk fills and
// when space returns.
func limitStore(t *testing.T, ns *server.Server, max int64) {
	t.Helper()
	acc := ns.GlobalAccount()
	limits := acc.JetStreamUsage().Limits
	limits.MaxStore = max
	if err := acc.UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{"": limits}); err != nil {
		t.Fatalf("set the account's store limit to %d: %v", max, err)
	}
}

// wantStoreFull fails unless r is a 503 store_full JSON error with a
// Retry-After.
func wantStoreFull(t *testing.T, what string, r result) {
	t.Helper()
	if r.status != http.StatusServiceUnavailable || errorCode(t, r) != "store_full" || r.header.Get("Retry-After") == "" {
		t.Fatalf("%s on a full store = %d %s (Retry-After %q), want 503 store_full with Retry-After",
			what, r.status, r.body, r.header.Get("Retry-After"))
	}
}

// TestJetStreamStoreFull fills the JetStream store through POST /longtask
// with no worker running, up to a store limit on the account (what
// natsconf.GuardStore sets when the disk fills): submissions and schedules
// then answer 503 store_full with Retry-After, and reads go on. A worker
// started while the store is full cannot record a task as running and
// hands it back, at no cost to its attempts. Once the limit is lifted
// (space returned), with nothing restarted, every task that got a 202
// succeeds and new submissions are accepted again.
func TestJetStreamStoreFull(t *testing.T) {
	t.Parallel()
	ns := testutil.StartNATS(t)
	base := startGateway(t, testutil.Connect(t, ns))
	tok := tokenFor(t, "alice", auth.ScopeTasksRead, auth.ScopeTasksWrite)
	body := `{"task":"report","note":"` + strings.Repeat("x", 4000) + `"}`

	// Room for a handful of tasks (a record and a message of about 4 KiB
	// each), from what the account holds now.
	limitStore(t, ns, int64(ns.GlobalAccount().JetStreamUsage().Store)+64<<10)
	var accepted []string
	var full result
	for i := 0; ; i++ {
		if i > 100 {
			t.Fatalf("%d tasks of 4 KiB accepted with 64 KiB of room, want a 503 long before", i)
		}
		r := send(t, "POST", base+"/longtask", tok, body, nil)
		if r.status != http.StatusAccepted {
			full = r
			break
		}
		accepted = append(accepted, taskID(t, r))
	}
	wantStoreFull(t, "POST /longtask", full)
	if !strings.Contains(string(full.body), "out of space") {
		t.Errorf("POST /longtask on a full store = %s, want a message that says the store is out of space", full.body)
	}
	if len(accepted) == 0 {
		t.Fatal("no task accepted before the store was full")
	}
	// A refused submission may free a little (its record, written before
	// its message was refused, is deleted), so the next could fit. The
	// guard's limit once the disk has no more than its reserve free: the
	// account's use, no room at all.
	limitStore(t, ns, int64(ns.GlobalAccount().JetStreamUsage().Store))
	wantStoreFull(t, "POST /longtask, small", send(t, "POST", base+"/longtask", tok, `{"task":"noop"}`, nil))
	wantStoreFull(t, "POST /schedules", send(t, "POST", base+"/schedules", tok, `{"every":"1h","task":{"task":"noop"}}`, nil))
	if r := get(t, base+"/tasks/"+accepted[0], tok); r.status != http.StatusOK {
		t.Errorf("GET /tasks/%s on a full store = %d %s, want 200: reads go on", accepted[0], r.status, r.body)
	}
	// Only accepted tasks are queued: a refused submission queued nothing.
	wantQueued(t, ns, len(accepted))
	startQuickWorker(t, ns, "w-storefull", nil)
	js, err := jetstream.New(testutil.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	// The worker pulls, fails to record the task as running, and hands it
	// back: the record still says queued, with no attempt spent.
	testutil.Eventually(t, 10*time.Second, func() error {
		c, err := js.Consumer(t.Context(), task.Stream, "workers-default")
		if err != nil {
			return err
		}
		if info, err := c.Info(t.Context()); err != nil || info.NumRedelivered == 0 {
			return fmt.Errorf("no task handed back yet (%v)", err)
		}
		return nil
	})
	if rec := getRecord(t, base, tok, accepted[0]); rec.State != task.Queued || rec.Attempts != 0 {
		t.Errorf("task %s on a full store = %s after %d attempts, want queued after 0", accepted[0], rec.State, rec.Attempts)
	}

	limitStore(t, ns, -1) // space returns
	for _, id := range accepted {
		testutil.Eventually(t, 30*time.Second, func() error {
			if rec := getRecord(t, base, tok, id); rec.State != task.Succeeded {
				return &stateError{id: id, state: rec.State}
			}
			return nil
		})
	}
	taskID(t, send(t, "POST", base+"/longtask", tok, body, nil))
	if r := send(t, "POST", base+"/schedules", tok, `{"every":"1h","task":{"task":"noop"}}`, nil); r.status != http.StatusCreated {
		t.Fatalf("POST /schedules once space returned = %d %s, want 201", r.status, r.body)
	}
}

// TestDatabaseFull fills dbsvc's SQLite file through POST /items up to its
// --max-db-bytes: writes then answer 503 store_full with Retry-After, and
// reads go on. Deleting items frees pages, which SQLite reuses: writes
// succeed again, with nothing restarted.
func TestDatabaseFull(t *testing.T) {
	t.Parallel()
	// The cap must leave room for the seeded database, whose size only
	// running it tells: seed one, measure it, then cap it 64 KiB above.
	dir := t.TempDir()
	seedDatabase(t, dir, 200)
	fi, err := os.Stat(filepath.Join(dir, dbsvc.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	limit := fi.Size() + 64<<10
	st := startStackWith(t, 200, func(c *dbsvc.Config) { c.DataDir, c.MaxDBBytes = dir, limit })
	base := startGateway(t, testutil.Connect(t, st.ns))
	tok := token(t, auth.ScopeItemsRead, auth.ScopeItemsWrite)
	item := `{"name":"` + strings.Repeat("n", dbsvc.MaxNameLen) + `","price_cents":100,"stock":1}`

	var created []int64
	var full result
	for i := 0; ; i++ {
		if i > 2000 {
			t.Fatalf("%d items created in a database capped at %d bytes, want a 503 long before", i, limit)
		}
		r := send(t, "POST", base+"/items", tok, item, nil)
		if r.status != http.StatusCreated {
			full = r
			break
		}
		var it dbsvc.Item
		if err := json.Unmarshal(r.body, &it); err != nil {
			t.Fatal(err)
		}
		created = append(created, it.ID)
	}
	wantStoreFull(t, "POST /items", full)
	if !strings.Contains(string(full.body), "database is full") {
		t.Errorf("POST /items on a full database = %s, want a message that says the database is full", full.body)
	}
	if len(created) == 0 {
		t.Fatal("no item created before the database was full")
	}
	// Reads go on, uncached (a page) and cached alike.
	if r := get(t, fmt.Sprintf("%s/items?after_id=%d&limit=5", base, dbsvc.SeedItems), tok); r.status != http.StatusOK {
		t.Errorf("GET /items on a full database = %d %s, want 200", r.status, r.body)
	}
	if r := get(t, fmt.Sprintf("%s/items/%d", base, created[0]), tok); r.status != http.StatusOK {
		t.Errorf("GET /items/%d on a full database = %d %s, want 200", created[0], r.status, r.body)
	}

	// Space returns: deleting items frees their pages (a delete needs no
	// new page), and the next create reuses them.
	for _, id := range created[len(created)/2:] {
		if r := send(t, "DELETE", fmt.Sprintf("%s/items/%d", base, id), tok, "", nil); r.status != http.StatusNoContent {
			t.Fatalf("DELETE /items/%d on a full database = %d %s, want 204", id, r.status, r.body)
		}
	}
	if r := send(t, "POST", base+"/items", tok, item, nil); r.status != http.StatusCreated {
		t.Fatalf("POST /items once space returned = %d %s, want 201", r.status, r.body)
	}
}

// seedDatabase creates and seeds dbsvc's database in dir (seedRows sales),
// running dbsvc until it is ready, then stopping it: a clean stop folds
// the write-ahead log into the file, whose size is then the database's.
func seedDatabase(t *testing.T, dir string, seedRows int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := dbsvc.DefaultConfig()
	cfg.Listener, cfg.DataDir, cfg.SeedRows = ln, dir, seedRows
	nc := testutil.Connect(t, testutil.StartNATS(t))
	r := testutil.Start(t, func(ctx context.Context) error { return dbsvc.Run(ctx, cfg, nc, testutil.QuietLog()) })
	testutil.Eventually(t, 30*time.Second, func() error { return ready(t, "http://"+ln.Addr().String()) })
	if err := r.Stop(); err != nil {
		t.Fatalf("dbsvc.Run() = %v, want nil", err)
	}
}
