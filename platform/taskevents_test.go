package platform

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/testutil"
)

// TestTaskEventsThroughBalancer: the task event streams pass through the
// balancer as they come (not buffered until the end), a task's stream
// ends by itself once the task is final, and a client that goes away
// ends its stream in the gateway too: its place among the token's
// streams frees, so the balancer passed the close on.
func TestTaskEventsThroughBalancer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole platform")
	}
	cfg := testConfig(t) // one gateway: the stream limit is a gateway's
	p, err := Start(t.Context(), cfg, testutil.QuietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	tok, _, err := cfg.Keys.Issue("alice", auth.AllScopes, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	call := func(ctx context.Context, method, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, p.BalancerURL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return res
	}

	// A task that runs for a while: its stream shows it running before
	// it ends, so the events came through one at a time.
	res := call(t.Context(), "POST", "/longtask", `{"task":"sleep","duration_ms":1500}`)
	var sub struct {
		TaskID string `json:"task_id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&sub); err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /longtask = %d, %v", res.StatusCode, err)
	}
	res.Body.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	res = call(ctx, "GET", "/tasks/"+sub.TaskID+"/events", "")
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET /tasks/%s/events = %d %s", sub.TaskID, res.StatusCode, b)
	}
	var sawRunningAt, sawEndAt time.Time
	lines := bufio.NewScanner(res.Body)
	for lines.Scan() {
		line := lines.Text()
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"state":"running"`) && sawRunningAt.IsZero() {
			sawRunningAt = time.Now()
		}
		if line == "event: end" {
			sawEndAt = time.Now()
		}
	}
	res.Body.Close()
	if sawRunningAt.IsZero() || sawEndAt.IsZero() || sawEndAt.Sub(sawRunningAt) < time.Second {
		t.Errorf("running seen at %v, end at %v: want running, then end about 1.5 s later, as they happened", sawRunningAt, sawEndAt)
	}

	// Streams that stay open; each client that leaves frees its place.
	const limit = 16
	var cancels []context.CancelFunc
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		return call(ctx, "GET", "/tasks/events", ""), cancel
	}
	for range limit {
		r, cancel := open()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", len(cancels), r.StatusCode)
		}
		cancels = append(cancels, cancel)
		t.Cleanup(cancel)
	}
	if r, cancel := open(); r.StatusCode != http.StatusTooManyRequests {
		t.Errorf("stream %d = %d, want 429 while the others are open", limit+1, r.StatusCode)
		cancel()
	}
	cancels[0]()
	testutil.Eventually(t, 10*time.Second, func() error {
		r, cancel := open()
		if r.StatusCode != http.StatusOK {
			cancel()
			return fmt.Errorf("after a client left, a new stream = %d", r.StatusCode)
		}
		t.Cleanup(cancel)
		return nil
	})
}
