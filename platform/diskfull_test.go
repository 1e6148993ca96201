package platform

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/dbsvc"
	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestDiskFull runs `up` with its data directory (the JetStream store and
// the SQLite file) on a real 48 MiB disk, and fills that disk with a file
// while a load of task submissions and item writes goes through the
// balancer. Then the file is removed, and with nothing restarted by hand
// submissions and writes succeed again, and every task that got a 202
// succeeds. Root only (a tmpfs); skipped elsewhere. Two cases:
//
//   - with a reserve (--store-reserve, as `up` runs): JetStream refuses
//     writes before the disk is full, so submissions answer 503 store_full
//     with Retry-After; SQLite fills the rest and item writes answer the
//     same; reads go on;
//   - without one (a reserve of 1 byte, looked at every 2 s, and a disk
//     filled to the last byte): unless the guard looks first, a JetStream
//     write meets ENOSPC, a stream latches it (submissions time out: 503
//     unavailable), and the guard restarts JetStream once the file is
//     gone. Which one happened is logged; the restart itself is asserted
//     by natsconf's TestGuardStoreRestartsJetStreamAfterENOSPC.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole platform")
	}
	for _, tc := range []struct {
		name     string
		reserve  int64         // --store-reserve
		interval time.Duration // how often the guard looks
		leave    int64         // bytes the file leaves free
		restart  bool          // JetStream may meet ENOSPC, and the guard restart it
	}{
		{name: "reserve", reserve: 4 << 20, interval: 20 * time.Millisecond, leave: 256 << 10},
		{name: "enospc", reserve: 1, interval: 2 * time.Second, leave: 0, restart: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// nats-server's EnableJetStream, after the guard has shut
			// JetStream down, writes the API queues (setJetStreamExportSubs)
			// that the old JetStream's API subscription, still in place,
			// reads for every request the roles send meanwhile: a race in
			// nats-server v2.15.2 that the detector reports in about 1 run
			// in 20. .ci/run runs this case again without -race.
			if tc.restart && raceDetector {
				t.Skip("under -race: nats-server's JetStream restart races its own API dispatch; .ci/run runs this case without -race (go test -run TestDiskFull/enospc ./platform)")
			}
			disk := testutil.MountTmpfs(t, 48<<20)
			cfg := testConfig(t)
			cfg.DataDir = filepath.Join(disk, "data")
			cfg.StoreReserve, cfg.GuardInterval = tc.reserve, tc.interval
			fillDisk(t, cfg, disk, tc.leave, tc.restart)
		})
	}
}

// fillDisk is one case of TestDiskFull: `up` with cfg, its data directory
// on disk, filled until leave bytes are free; restart says whether
// JetStream may meet ENOSPC (and the guard restart it) or refuses writes
// before.
func fillDisk(t *testing.T, cfg Config, disk string, leave int64, restart bool) {
	t.Helper()
	var logs testutil.LogBuffer
	p, err := Start(t.Context(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	tok, _, err := cfg.Keys.Issue("alice", auth.AllScopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	call := func(method, path, body string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, p.BalancerURL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, res.Header, b
	}
	storeFull := func(what string, status int, h http.Header, body []byte) error {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if status != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Error.Code != "store_full" || h.Get("Retry-After") == "" {
			return fmt.Errorf("%s = %d %s (Retry-After %q), want 503 store_full with Retry-After", what, status, body, h.Get("Retry-After"))
		}
		return nil
	}
	var accepted []string
	submit := func() (int, http.Header, []byte) {
		status, h, body := call("POST", "/longtask", `{"task":"sleep","duration_ms":10}`)
		if status == http.StatusAccepted {
			var sub struct {
				TaskID string `json:"task_id"`
			}
			if err := json.Unmarshal(body, &sub); err != nil || sub.TaskID == "" {
				t.Fatalf("POST /longtask = 202 %s, want a task_id", body)
			}
			accepted = append(accepted, sub.TaskID)
		}
		return status, h, body
	}
	item := `{"name":"` + strings.Repeat("n", dbsvc.MaxNameLen) + `","price_cents":100,"stock":1}`
	for range 5 {
		if status, _, body := submit(); status != http.StatusAccepted {
			t.Fatalf("POST /longtask = %d %s, want 202", status, body)
		}
		if status, _, body := call("POST", "/items", item); status != http.StatusCreated {
			t.Fatalf("POST /items = %d %s, want 201", status, body)
		}
	}

	// A steady load of task submissions and item writes runs while
	// something else takes the disk: with a reserve, all but less than it,
	// so JetStream takes no more writes and SQLite fills the rest. Each
	// answer is counted by status and error code.
	load := startLoad(t, hc, p.BalancerURL, tok, item)
	ballast := testutil.FillDisk(t, disk, leave)
	if restart {
		// Whichever comes first: a write meets ENOSPC before the guard
		// looks, or the guard looks first and refuses cleanly.
		testutil.Eventually(t, 20*time.Second, func() error {
			if strings.Contains(logs.String(), "jetstream store broken by a full disk") {
				return nil
			}
			status, h, body := submit()
			return storeFull("POST /longtask on a full disk", status, h, body)
		})
	} else {
		testutil.Eventually(t, 20*time.Second, func() error {
			status, h, body := submit()
			return storeFull("POST /longtask on a full disk", status, h, body)
		})
	}
	// SQLite (WAL mode) keeps taking writes into the space its write-ahead
	// log already holds (up to a few MiB, depending on when it was last
	// checkpointed), which a disk too full for a checkpoint cannot free:
	// only when the log has to grow does a write meet the full disk. So
	// items are written back to back until one is refused, not polled.
	deadline := time.Now().Add(90 * time.Second)
	var refused error
	for n := 0; ; n++ {
		status, h, body := call("POST", "/items", item)
		if refused = storeFull("POST /items on a full disk", status, h, body); refused == nil {
			t.Logf("the database refused a write after %d more items", n)
			break
		}
		if status != http.StatusCreated || time.Now().After(deadline) {
			t.Fatalf("after %d items: %v", n, refused)
		}
	}
	if status, _, body := call("GET", fmt.Sprintf("/items?after_id=%d&limit=5", dbsvc.SeedItems), ""); status != http.StatusOK {
		t.Errorf("GET /items on a full disk = %d %s, want 200", status, body)
	}
	if status, _, body := call("GET", "/tasks/"+accepted[0], ""); status != http.StatusOK {
		t.Errorf("GET /tasks/%s on a full disk = %d %s, want 200", accepted[0], status, body)
	}

	full := time.Now()
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		if status, _, body := submit(); status != http.StatusAccepted {
			return fmt.Errorf("POST /longtask once space returned = %d %s, want 202", status, body)
		}
		return nil
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		if status, _, body := call("POST", "/items", item); status != http.StatusCreated {
			return fmt.Errorf("POST /items once space returned = %d %s, want 201", status, body)
		}
		return nil
	})
	loadAccepted, answers := load.stop()
	t.Logf("answers during the fill and after: %v", answers)
	for k := range answers {
		switch {
		case k == "202", k == "201", k == "503 store_full":
		case k == "503 unavailable" && restart: // a latched stream times out
		default:
			t.Errorf("%d answers %q during the fill, want only 202, 201 and 503 store_full", answers[k], k)
		}
	}
	if answers["503 store_full"] == 0 {
		t.Error("the load saw no 503 store_full while the disk was full")
	}
	accepted = append(accepted, loadAccepted...)
	for _, id := range accepted {
		testutil.Eventually(t, 60*time.Second, func() error {
			status, _, body := call("GET", "/tasks/"+id+"?wait=5s", "")
			var rec struct {
				State string `json:"state"`
			}
			if status != http.StatusOK || json.Unmarshal(body, &rec) != nil {
				return fmt.Errorf("GET /tasks/%s = %d %s", id, status, body)
			}
			if rec.State != "succeeded" {
				return fmt.Errorf("task %s is %s, want succeeded", id, rec.State)
			}
			return nil
		})
	}
	restarted := strings.Contains(logs.String(), "jetstream restarted after a full disk")
	if broken := strings.Contains(logs.String(), "jetstream store broken by a full disk"); broken && !restarted {
		t.Error("JetStream met ENOSPC, and the guard did not say it restarted it")
	}
	t.Logf("%d tasks accepted, all succeeded %v after space returned; JetStream restarted by the guard: %v",
		len(accepted), time.Since(full).Round(time.Millisecond), restarted)
}

// load submits sleep tasks and creates items through the balancer, one
// after the other, until stopped, counting the answers by status and
// error code.
type load struct {
	done     chan struct{}
	finished chan struct{}
	accepted []string
	answers  map[string]int
}

// startLoad starts a load with tok against base; stop ends it.
func startLoad(t *testing.T, hc *http.Client, base, tok, item string) *load {
	t.Helper()
	l := &load{done: make(chan struct{}), finished: make(chan struct{}), answers: map[string]int{}}
	go func() {
		defer close(l.finished)
		for i := 0; ; i++ {
			select {
			case <-l.done:
				return
			default:
			}
			path, body := "/longtask", `{"task":"sleep","duration_ms":10}`
			if i%2 == 1 {
				path, body = "/items", item
			}
			req, _ := http.NewRequestWithContext(t.Context(), "POST", base+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			res, err := hc.Do(req)
			if err != nil {
				l.answers["error: "+err.Error()]++
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			var ans struct {
				TaskID string                `json:"task_id"`
				Error  struct{ Code string } `json:"error"`
			}
			_ = json.Unmarshal(b, &ans)
			key := fmt.Sprint(res.StatusCode)
			if ans.Error.Code != "" {
				key += " " + ans.Error.Code
			}
			l.answers[key]++
			if res.StatusCode == http.StatusAccepted {
				l.accepted = append(l.accepted, ans.TaskID)
			}
		}
	}()
	return l
}

// stop ends the load and returns the ids of the tasks it got a 202 for,
// and its answers.
func (l *load) stop() ([]string, map[string]int) {
	close(l.done)
	<-l.finished
	return l.accepted, l.answers
}
