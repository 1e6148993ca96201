package balancer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// streamDashboard is a Dashboard whose /events streams one numbered event
// each time the test asks for one, so a test can see that each is sent
// when it is flushed, not when the handler returns.
type streamDashboard struct {
	status  atomic.Pointer[func() Status]
	next    chan struct{}
	running atomic.Bool
	ran     chan struct{} // closed when Run returns
}

func newStreamDashboard() *streamDashboard {
	return &streamDashboard{next: make(chan struct{}), ran: make(chan struct{})}
}

func (d *streamDashboard) Handler(status func() Status) http.Handler {
	d.status.Store(&status)
	// No ServeMux: it would redirect the stripped "" to "/".
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/state":
			writeJSON(w, http.StatusOK, (*d.status.Load())())
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 1; ; i++ {
				fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				select {
				case <-d.next:
				case <-r.Context().Done():
					return
				}
			}
		default:
			fmt.Fprintf(w, "path %q", r.URL.Path)
		}
	})
}

func (d *streamDashboard) Run(ctx context.Context) {
	d.running.Store(true)
	<-ctx.Done()
	close(d.ran)
}

func TestDashboardRoutes(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "a")
	c := newClient(t)

	t.Run("none configured", func(t *testing.T) {
		t.Parallel()
		base := startBalancer(t, testConfig(gw.URL))
		for _, p := range []string{"/-/dashboard", "/-/dashboard/", "/-/dashboard/events"} {
			res, body := get(t, c, adminOf(t, base)+p)
			want := `{"error":{"code":"not_found","message":"no balancer route ` + p + `"}}`
			if res.StatusCode != http.StatusNotFound || strings.TrimSpace(string(body)) != want {
				t.Errorf("GET %s = %d %s, want 404 %s", p, res.StatusCode, body, want)
			}
		}
	})

	t.Run("configured", func(t *testing.T) {
		t.Parallel()
		d := newStreamDashboard()
		cfg := testConfig(gw.URL)
		cfg.Dashboard = d
		base := startBalancer(t, cfg)
		for p, want := range map[string]string{
			"/-/dashboard": `path ""`, "/-/dashboard/": `path "/"`, "/-/dashboard/app.js": `path "/app.js"`,
		} {
			res, body := get(t, c, adminOf(t, base)+p)
			if res.StatusCode != http.StatusOK || string(body) != want {
				t.Errorf("GET %s = %d %s, want 200 %s", p, res.StatusCode, body, want)
			}
		}
		res, body := get(t, c, adminOf(t, base)+"/-/dashboard/state")
		var s Status
		if err := json.Unmarshal(body, &s); err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("GET /-/dashboard/state = %d %s (%v)", res.StatusCode, body, err)
		}
		if len(s.Backends) != 1 || s.Backends[0].URL != gw.URL || s.Policy != PolicyRoundRobin {
			t.Errorf("status given to the dashboard = %+v, want the one gateway %s", s, gw.URL)
		}
		if !d.running.Load() {
			t.Errorf("Dashboard.Run was not started")
		}
	})
}

// TestDashboardStreams: a dashboard's server-sent events reach the client
// as they are flushed, and an open stream does not hold up shutdown.
func TestDashboardStreams(t *testing.T) {
	t.Parallel()
	gw := echoBackend(t, "a")
	d := newStreamDashboard()
	cfg := testConfig(gw.URL)
	cfg.Dashboard = d
	base, cancel, errc := runBalancer(t, cfg)
	admin := adminOf(t, base)
	c := newClient(t)
	c.Timeout = 0 // a stream

	var res *http.Response
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for res, err = c.Do(newRequest(t, http.MethodGet, admin+"/-/dashboard/events", nil)); err != nil; res, err = c.Do(newRequest(t, http.MethodGet, admin+"/-/dashboard/events", nil)) {
		if time.Now().After(deadline) {
			t.Fatalf("GET /-/dashboard/events: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval: the balancer is starting
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q, want text/event-stream", ct)
	}
	r := bufio.NewReader(res.Body)
	for i := 1; i <= 3; i++ {
		// The handler writes event i+1 only after this read returns, so
		// reading it proves event i was sent when flushed.
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: %d\n", i); line != want {
			t.Fatalf("event line = %q, want %q", line, want)
		}
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("read end of event %d: %v", i, err)
		}
		d.next <- struct{}{}
	}

	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10s after cancel with a stream open")
	}
	if took := time.Since(start); took > cfg.ShutdownTimeout/2 {
		t.Errorf("shutdown with a stream open took %v, want well under the %v timeout", took, cfg.ShutdownTimeout)
	}
	select {
	case <-d.ran:
	default:
		t.Errorf("Dashboard.Run still running after Run returned")
	}
}
