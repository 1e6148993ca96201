package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

var httpsLine = regexp.MustCompile(`https\s+(https://\S+)\s+\(self-signed: curl --cacert (\S+) (\S+)\)`)

// TestUpTLS: `up --tls` serves the API over HTTPS with a certificate the
// banner names, and the banner's curl line, done with a client that trusts
// only that file, answers.
func TestUpTLS(t *testing.T) {
	p := startUp(t, t.TempDir(), "--tls", "--tls-addr", "127.0.0.1:0")
	m := httpsLine.FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no https line in the banner:\n%s", p.stdout)
	}
	base, certFile, healthURL := m[1], m[2], m[3]
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s holds no certificate", certFile)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	for _, tc := range []struct{ url, token string }{{healthURL, ""}, {base + "/data", p.token}} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tc.url, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			t.Errorf("GET %s = %d over %v, %s; want 200 over TLS 1.2+", tc.url, resp.StatusCode, resp.TLS != nil, body)
		}
	}
	p.stop(t)
}

// TestUpTaskEventsWebSocket: a task's events as a WebSocket, through up's
// front door (the balancer's tunnel to a gateway), from queued to the end.
func TestUpTaskEventsWebSocket(t *testing.T) {
	p := startUp(t, t.TempDir())
	sub := p.do(t, "POST", "/longtask", "Bearer "+p.token, []byte(`{"task":"sleep","duration_ms":300}`))
	var queued struct {
		TaskID string `json:"task_id"`
	}
	if sub.status != http.StatusAccepted || json.Unmarshal(sub.body, &queued) != nil {
		t.Fatalf("POST /longtask = %d %s", sub.status, sub.body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, strings.Replace(p.base, "http", "ws", 1)+"/tasks/"+queued.TaskID+"/events",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + p.token}}})
	if err != nil {
		t.Fatalf("WebSocket through the balancer: %v (%v)", err, resp)
	}
	defer c.CloseNow()
	var last string
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("after %s: %v", last, err)
		}
		var m struct {
			Event string `json:"event"`
			Data  struct {
				State string `json:"state"`
			} `json:"data"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("message %q: %v", b, err)
		}
		if m.Event == "end" {
			break
		}
		last = m.Data.State
	}
	if last != "succeeded" {
		t.Errorf("last state before end = %q, want succeeded", last)
	}
	// The gateway closes after end; a client answers its close.
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after end: %v, want a normal closure", err)
	}
	p.stop(t)
}
