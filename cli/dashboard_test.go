package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scalelab/scalelab/internal/testutil"
	"github.com/scalelab/scalelab/natsconf"
	"github.com/scalelab/scalelab/natsconf/natstest"
	"github.com/scalelab/scalelab/platform/dashboard"
)

// adminListeningLine is the balancer's log line that names the address
// of its admin listener, which serves the dashboard.
var adminListeningLine = regexp.MustCompile(`"msg":"http listening","role":"balancer","listener":"admin","addr":"([^"]+)"`)

// TestBalancerRoleDashboard: `scalelab balancer` serves the dashboard with
// the NATS figures when given the balancer user, and without them (saying
// why) when given no NATS.
func TestBalancerRoleDashboard(t *testing.T) {
	t.Parallel()
	ns, pw := natstest.Start(t)

	for _, tc := range []struct {
		name      string
		args      []string
		env       map[string]string
		connected bool
		why       string
	}{
		{name: "with NATS", args: []string{"--nats", ns.ClientURL(), "--nats-user", string(natsconf.RoleBalancer)},
			env: map[string]string{envNATSPassword: pw[natsconf.RoleBalancer]}, connected: true},
		{name: "without NATS", why: "no NATS connection"},
		{name: "refused", args: []string{"--nats", ns.ClientURL(), "--nats-user", string(natsconf.RoleBalancer)},
			env: map[string]string{envNATSPassword: "wrong"}, why: "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(t.Context())
			stderr := &syncBuffer{}
			done := make(chan error, 1)
			args := append([]string{"balancer", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
				"--backends", "http://127.0.0.1:9", "--log-format", "json"}, tc.args...)
			go func() { done <- run(ctx, args, env(tc.env), io.Discard, stderr) }()
			t.Cleanup(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("run(balancer) = %v, want nil", err)
				}
			})
			var addr string
			testutil.Eventually(t, 10*time.Second, func() error {
				m := adminListeningLine.FindStringSubmatch(stderr.String())
				if m == nil {
					return fmt.Errorf("no listening line yet in %s", tail(stderr.String(), 2000))
				}
				addr = m[1]
				return nil
			})
			testutil.Eventually(t, 15*time.Second, func() error {
				res, err := client.Get("http://" + addr + "/-/dashboard/state")
				if err != nil {
					return err
				}
				defer res.Body.Close()
				var s dashboard.Snapshot
				if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
					return err
				}
				if s.Balancer == nil || len(s.Balancer.Gateways) != 1 {
					return fmt.Errorf("balancer figures %+v, want the one gateway", s.Balancer)
				}
				if s.NATS.Connected != tc.connected || !strings.Contains(s.NATS.Error, tc.why) {
					return fmt.Errorf("nats %+v, want connected %v, error with %q", s.NATS, tc.connected, tc.why)
				}
				if tc.connected && (s.Queue == nil || s.Workers == nil) {
					return fmt.Errorf("no NATS figures: queue %+v, workers %+v", s.Queue, s.Workers)
				}
				return nil
			})
			if strings.Contains(stderr.String(), "Permissions Violation") {
				t.Errorf("permission violation in the balancer's log:\n%s", tail(stderr.String(), 3000))
			}
		})
	}
}

// browserNames are the Chromium binaries the browser test looks for, in
// order: Debian's package, other distributions', Google's.
var browserNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// requireBrowser skips the test under -short or without Chromium, and
// returns Chromium's path.
func requireBrowser(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the browser test starts the whole platform and Chromium")
	}
	browser := findBrowser()
	if browser == "" {
		t.Skipf("no Chromium found (looked for %s in PATH): install Debian's chromium package to run the browser test",
			strings.Join(browserNames, ", "))
	}
	return browser
}

// startBrowser starts headless Chromium with a window of width × height
// for at most timeout, and returns its context; it stops at cleanup.
// Steps run on shorter contexts made from it do not own the browser.
func startBrowser(t *testing.T, browser string, width, height int, timeout time.Duration) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.WindowSize(width, height),
		// Chromium refuses to run as root with its sandbox (CI containers).
		chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancel() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", browser, err)
	}
	return bctx
}

// findBrowser returns the path of a Chromium binary, or "".
func findBrowser() string {
	for _, name := range browserNames {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// dashboardView is what the browser test reads off the page.
type dashboardView struct {
	Samples       int               `json:"samples"`
	Roles         map[string]int    `json:"roles"`
	GatewayIDs    []string          `json:"gateway_ids"`
	WorkerIDs     []string          `json:"worker_ids"`
	GatewayRates  []string          `json:"gateway_rates"`
	Text          map[string]string `json:"text"`
	WorkersDone   []string          `json:"workers_done"`
	NATSConnected bool              `json:"nats_connected"`
}

// readDashboard is the script that fills a dashboardView.
const readDashboard = `(() => {
  const roles = {};
  for (const g of document.querySelectorAll("#topology .node")) roles[g.dataset.role] = (roles[g.dataset.role] || 0) + 1;
  const ids = role => [...document.querySelectorAll('#topology .node[data-role="' + role + '"][data-id]')].map(g => g.dataset.id);
  const text = {};
  for (const id of ["total-rate", "total-requests", "hit-ratio", "db-queries", "db-rate", "queue-pending", "queue-inflight", "queue-dead", "task-rate"]) {
    text[id] = (document.getElementById(id) || {}).textContent || "";
  }
  return {
    samples: +(document.body.dataset.samples || 0),
    roles,
    gateway_ids: ids("gateway"),
    worker_ids: ids("worker"),
    gateway_rates: [...document.querySelectorAll('#topology .node[data-role="gateway"] [data-field="rate"]')].map(e => e.textContent),
    text,
    workers_done: [...document.querySelectorAll("#workers tbody tr")].map(r => (r.cells[3] || {}).textContent || ""),
    nats_connected: document.getElementById("nats-pill").classList.contains("on"),
  };
})()`

// number reads a figure as the page shows it ("1,234", "12 req/s", "93%").
func number(s string) float64 {
	f := strings.Fields(strings.ReplaceAll(strings.TrimSuffix(strings.TrimSpace(s), "%"), ",", ""))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
	if err != nil {
		return -1
	}
	return v
}

// TestDashboardInBrowser loads the balancer's live dashboard of a real
// `scalelab up` in headless Chromium: it shows every role, and its
// figures move while traffic flows through the balancer. It keeps a
// screenshot in $SCALELAB_SCREENSHOT_DIR (else the test's temp dir).
func TestDashboardInBrowser(t *testing.T) {
	browser := requireBrowser(t)
	p := startUp(t, t.TempDir())
	bearer := "Bearer " + p.token

	bctx := startBrowser(t, browser, 1360, 1060, 2*time.Minute)

	if err := chromedp.Do(bctx,
		chromedp.Navigate(p.adminURL+"/-/dashboard"),
		chromedp.WaitVisible(chromedp.CSS(`#topology .node[data-role="balancer"]`)),
	); err != nil {
		t.Fatalf("load %s/-/dashboard in %s: %v", p.adminURL, browser, err)
	}
	read := func() dashboardView {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[dashboardView](readDashboard))
		if err != nil {
			t.Fatalf("read the dashboard: %v", err)
		}
		return v
	}

	// Every role, once the dashboard's NATS figures are in.
	var v dashboardView
	deadline := time.Now().Add(30 * time.Second)
	for {
		v = read()
		err := func() error {
			if !v.NATSConnected {
				return fmt.Errorf("NATS not connected yet")
			}
			for role, want := range map[string]int{"client": 1, "balancer": 1, "gateway": 2, "nats": 1, "queue": 1, "worker": 2, "dbsvc": 1, "cachesvc": 1} {
				if v.Roles[role] != want {
					return fmt.Errorf("%d %s nodes, want %d (all: %v)", v.Roles[role], role, want, v.Roles)
				}
			}
			if len(v.WorkerIDs) != 2 {
				return fmt.Errorf("worker ids %v, want 2 workers that answered", v.WorkerIDs)
			}
			return nil
		}()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard does not show every role after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval: the page updates once a second
	}
	for _, gw := range v.GatewayIDs {
		if !strings.HasPrefix(gw, "http://127.0.0.1:") {
			t.Errorf("gateway node id %q, want a gateway URL", gw)
		}
	}
	before := number(v.Text["total-requests"])

	// Traffic through the balancer, in bursts between two looks at the
	// page, until every figure has moved.
	traffic := func(round int) {
		for i := range 10 {
			p.do(t, "GET", "/data", bearer, nil)
			p.do(t, "GET", fmt.Sprintf("/items/%d", 1+(round*10+i)%40), bearer, nil)
		}
		if r := p.do(t, "POST", "/longtask", bearer, []byte(`{"task":"noop"}`)); r.status != http.StatusAccepted {
			t.Fatalf("POST /longtask = %d %s, want 202", r.status, r.body)
		}
	}
	var moved dashboardView
	deadline = time.Now().Add(45 * time.Second)
	for round := 0; ; round++ {
		traffic(round)
		moved = read()
		err := func() error {
			var rates []float64
			anyRate := false
			for _, s := range moved.GatewayRates {
				rates = append(rates, number(s))
				anyRate = anyRate || number(s) > 0
			}
			if !anyRate {
				return fmt.Errorf("gateway rates %q, want one > 0", moved.GatewayRates)
			}
			if got := number(moved.Text["total-requests"]); got <= before {
				return fmt.Errorf("total requests %q, want more than %v", moved.Text["total-requests"], before)
			}
			if number(moved.Text["hit-ratio"]) <= 0 {
				return fmt.Errorf("cache hit ratio %q, want > 0%%", moved.Text["hit-ratio"])
			}
			if number(moved.Text["db-queries"]) <= 0 {
				return fmt.Errorf("database queries %q, want > 0", moved.Text["db-queries"])
			}
			done := 0.0
			for _, s := range moved.WorkersDone {
				done += number(s)
			}
			if done <= 0 {
				return fmt.Errorf("tasks succeeded per worker %q, want some", moved.WorkersDone)
			}
			return nil
		}()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard figures did not move after 45s of traffic: %v\nview: %+v", err, moved)
		}
	}
	// And they keep moving: a later sample counts more requests.
	first := number(moved.Text["total-requests"])
	deadline = time.Now().Add(15 * time.Second)
	for round := 0; number(read().Text["total-requests"]) <= first; round++ {
		if time.Now().After(deadline) {
			t.Fatalf("total requests stuck at %v after 15s of traffic", first)
		}
		traffic(round)
	}

	saveScreenshot(t, bctx, "dashboard.png")
}

// saveScreenshot keeps a screenshot of the page as name in
// $SCALELAB_SCREENSHOT_DIR (CI keeps it as an artifact), else in the
// test's temp dir.
func saveScreenshot(t *testing.T, bctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("SCALELAB_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
