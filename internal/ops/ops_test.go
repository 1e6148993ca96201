package ops

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/scalelab/scalelab/internal/apperr"
)

func ready(context.Context) error { return nil }

// serve runs h on an httptest server closed when the test ends.
func serve(t *testing.T, h http.Handler) (base string, client *http.Client) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, srv.Client()
}

func fetch(t *testing.T, client *http.Client, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatalf("NewRequest(%s %s) = %v", method, url, err)
	}
	req.Header.Set("X-Request-ID", "req-ops")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s = %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestHandler(t *testing.T) {
	t.Parallel()
	errDown := errors.New("db is down")
	tests := []struct {
		name       string
		ready      ReadyFunc
		method     string
		path       string
		wantStatus int
		wantJSON   any    // exact JSON body, when set
		wantText   string // substring of the body, when set
	}{
		{"healthz", ready, "GET", "/healthz", http.StatusOK, map[string]any{"status": "ok"}, ""},
		{"healthz while not ready", func(context.Context) error { return errDown }, "GET", "/healthz",
			http.StatusOK, map[string]any{"status": "ok"}, ""},
		{"readyz ready", ready, "GET", "/readyz", http.StatusOK, map[string]any{"status": "ready"}, ""},
		{"readyz not ready", func(context.Context) error { return errDown }, "GET", "/readyz",
			http.StatusServiceUnavailable, map[string]any{"error": map[string]any{
				"code": "unavailable", "message": "not ready: db is down", "request_id": "req-ops",
			}}, ""},
		{"readyz gets a deadline", func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		}, "GET", "/readyz", http.StatusOK, map[string]any{"status": "ready"}, ""},
		{"metrics", ready, "GET", "/metrics", http.StatusOK, nil, "go_goroutines"},
		{"metrics has process collector", ready, "GET", "/metrics", http.StatusOK, nil, "process_"},
		{"healthz HEAD", ready, "HEAD", "/healthz", http.StatusOK, nil, ""},
		{"healthz POST", ready, "POST", "/healthz", http.StatusMethodNotAllowed, nil, ""},
		{"unknown", ready, "GET", "/nope", http.StatusNotFound, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base, client := serve(t, Handler(NewRegistry(), tt.ready))
			resp, body := fetch(t, client, tt.method, base+tt.path)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("%s %s status = %d, want %d (body %q)", tt.method, tt.path, resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantText != "" && !strings.Contains(body, tt.wantText) {
				t.Errorf("%s %s body = %.200q…, want it to contain %q", tt.method, tt.path, body, tt.wantText)
			}
			if tt.wantJSON == nil {
				return
			}
			if got, want := resp.Header.Get("Content-Type"), "application/json; charset=utf-8"; got != want {
				t.Errorf("%s %s Content-Type = %q, want %q", tt.method, tt.path, got, want)
			}
			var got any
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("%s %s body %q is not JSON: %v", tt.method, tt.path, body, err)
			}
			if diff := cmp.Diff(tt.wantJSON, got); diff != "" {
				t.Errorf("%s %s body mismatch (-want +got):\n%s", tt.method, tt.path, diff)
			}
		})
	}
}

func TestMetricsContentType(t *testing.T) {
	t.Parallel()
	base, client := serve(t, Handler(NewRegistry(), ready))
	resp, _ := fetch(t, client, "GET", base+"/metrics")
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics Content-Type = %q, want text/plain", ct)
	}
}

func TestNewRegistryIsPerInstance(t *testing.T) {
	t.Parallel()
	// Two registries must not clash: `up` runs several roles in one process.
	a, b := NewRegistry(), NewRegistry()
	if a == b {
		t.Fatal("NewRegistry() returned the same registry twice")
	}
	mfs, err := a.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	if len(mfs) == 0 {
		t.Errorf("Gather() = no metric families, want runtime and process metrics")
	}
}

func TestMountPrefix(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "proxied "+r.URL.Path) })
	Mount(mux, "/-", NewRegistry(), ready)
	base, client := serve(t, mux)
	tests := []struct {
		path       string
		wantStatus int
		wantBody   string // substring
	}{
		{"/-/healthz", http.StatusOK, `"status":"ok"`},
		{"/-/readyz", http.StatusOK, `"status":"ready"`},
		{"/-/metrics", http.StatusOK, "go_goroutines"},
		// The root paths belong to someone else.
		{"/healthz", http.StatusOK, "proxied /healthz"},
		{"/readyz", http.StatusOK, "proxied /readyz"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			resp, body := fetch(t, client, "GET", base+tt.path)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Errorf("GET %s = %d %.100q, want %d with %q", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestNATSReady(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     true,
	})
	if err != nil {
		t.Fatalf("server.NewServer() = %v", err)
	}
	go ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after 10s")
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)

	check := NATSReady(nc)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := check(ctx); err != nil {
		t.Fatalf("NATSReady() with a live server = %v, want nil", err)
	}
	base, client := serve(t, Handler(NewRegistry(), check))
	if resp, body := fetch(t, client, "GET", base+"/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz with a live server = %d %q, want 200", resp.StatusCode, body)
	}

	ns.Shutdown()
	ns.WaitForShutdown()
	testutil.Eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if err := check(ctx); err == nil {
			return errors.New("NATSReady() = nil after the server shut down, want an error")
		}
		return nil
	})
	resp, body := fetch(t, client, "GET", base+"/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz after server shutdown = %d %q, want 503", resp.StatusCode, body)
	}
	var got apperr.Body
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("GET /readyz body %q: %v", body, err)
	}
	if got.Error.Code != apperr.Unavailable || !strings.HasPrefix(got.Error.Message, "not ready: nats") {
		t.Errorf("GET /readyz body = %+v, want code unavailable, message \"not ready: nats…\"", got.Error)
	}
}
