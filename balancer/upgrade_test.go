package balancer

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/scalelab/scalelab/internal/testutil"
)

// wsBackend is a gateway stand-in with a WebSocket echo on /ws (which
// also says who asked, in its first message), a refused upgrade on
// /deny, and a WebSocket that only listens on /quiet.
func wsBackend(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) {
		r := c.Request()
		_ = websocket.Message.Send(c, "hello "+r.Header.Get("X-Forwarded-For")+" "+r.Header.Get("X-Request-Id"))
		for {
			var m string
			if websocket.Message.Receive(c, &m) != nil || websocket.Message.Send(c, m) != nil {
				return
			}
		}
	}))
	mux.Handle("/quiet", websocket.Handler(func(c *websocket.Conn) { _, _ = io.Copy(io.Discard, c) }))
	mux.HandleFunc("/deny", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":{"code":"forbidden","message":"no"}}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func dialWS(t *testing.T, base, path string) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig(strings.Replace(base, "http", "ws", 1)+path, base)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dialer = &net.Dialer{Timeout: 5 * time.Second}
	c, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("websocket dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestWebSocket: a WebSocket goes through the balancer both ways, on
// either engine, with the balancer's headers on its handshake, and keeps
// going for as long as it is used.
func TestWebSocket(t *testing.T) {
	base := startBalancer(t, testConfig(wsBackend(t).URL))
	c := dialWS(t, base, "/ws")
	var hello string
	if err := websocket.Message.Receive(c, &hello); err != nil || !strings.HasPrefix(hello, "hello 127.0.0.1 ") || len(hello) < len("hello 127.0.0.1 ")+10 {
		t.Fatalf("first message %q, %v; want the gateway's hello with X-Forwarded-For and a request ID", hello, err)
	}
	for i, msg := range []string{"one", strings.Repeat("x", 200<<10), "three"} {
		if err := websocket.Message.Send(c, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(c, &got); err != nil || got != msg {
			t.Fatalf("echo %d: %d bytes, %v; want the %d sent", i, len(got), err, len(msg))
		}
	}
	// The same balancer still serves plain requests beside the tunnel.
	if resp, body := get(t, newClient(t), base+"/deny"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET /deny = %d %s", resp.StatusCode, body)
	}
}

// TestUpgradeRefused: a gateway that answers an upgrade with anything but
// 101 has its answer passed on; an upgrade with a body is refused (400).
func TestUpgradeRefused(t *testing.T) {
	base := startBalancer(t, testConfig(wsBackend(t).URL))
	rc := dialRaw(t, base)
	rc.send("GET /deny HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	resp, body := rc.read(http.MethodGet)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"forbidden"`) || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("refused upgrade = %d %v %s, want the gateway's 403 with a request ID", resp.StatusCode, resp.Header, body)
	}
	rc = dialRaw(t, base)
	rc.send("POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc")
	if resp, body := rc.read(http.MethodPost); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"invalid"`) {
		t.Errorf("upgrade with a body = %d %s, want 400 invalid", resp.StatusCode, body)
	}
	// No gateway to go to: 502, as for any request.
	rc = dialRaw(t, startBalancer(t, testConfig(deadURL(t))))
	rc.send("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp, body := rc.read(http.MethodGet); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("upgrade to a dead gateway = %d %s, want 502", resp.StatusCode, body)
	}
}

// TestStreamIdleTimeout: a tunnel on which nothing is sent, and a
// streamed answer whose gateway goes silent, are cut after
// StreamIdleTimeout; ones that keep talking are not, however long they
// last (past ResponseHeaderTimeout too).
func TestStreamIdleTimeout(t *testing.T) {
	events := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		n := 8 // events every 100 ms for 800 ms: busy
		if r.URL.Path == "/silent" {
			n = 1
		}
		for i := range n {
			_, _ = io.WriteString(w, "data: "+strings.Repeat("e", i+1)+"\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-time.After(100 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		if r.URL.Path == "/silent" {
			<-r.Context().Done() // and then nothing
		}
	}))
	t.Cleanup(events.Close)
	ws := wsBackend(t)

	cfg := testConfig(ws.URL)
	cfg.StreamIdleTimeout = 400 * time.Millisecond
	cfg.ResponseHeaderTimeout = 300 * time.Millisecond
	wsBase := startBalancer(t, cfg)
	cfg.Backends = []string{events.URL}
	evBase := startBalancer(t, cfg)

	// A busy stream outlives both timeouts; a silent one is cut.
	resp, body := get(t, newClient(t), evBase+"/busy")
	if resp.StatusCode != http.StatusOK || strings.Count(string(body), "data: ") != 8 {
		t.Errorf("busy stream = %d, %d events; want all 8", resp.StatusCode, strings.Count(string(body), "data: "))
	}
	start := time.Now()
	r, err := newClient(t).Get(evBase + "/silent")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err == nil || !strings.Contains(string(got), "data: e") || time.Since(start) > 5*time.Second {
		t.Errorf("silent stream: %q, %v after %v; want its first event, then a cut within seconds", got, err, time.Since(start))
	}

	// A talking WebSocket outlives the idle timeout; a silent one is closed.
	c := dialWS(t, wsBase, "/ws")
	var msg string
	_ = websocket.Message.Receive(c, &msg)
	for range 8 {
		if err := websocket.Message.Send(c, "ping"); err != nil {
			t.Fatal(err)
		}
		if err := websocket.Message.Receive(c, &msg); err != nil || msg != "ping" {
			t.Fatalf("echo after a while: %q %v", msg, err)
		}
		time.Sleep(100 * time.Millisecond) // the client's pace, not a wait for the balancer
	}
	q := dialWS(t, wsBase, "/quiet")
	start = time.Now()
	_ = q.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = q.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("silent WebSocket: read = %v after %v, want it closed by the balancer", err, time.Since(start))
	}
}

// TestUpgradeShutdown: a shutdown waits for an open tunnel as for a
// request in flight, and closes it when the grace is over: a clean
// shutdown still.
func TestUpgradeShutdown(t *testing.T) {
	cfg := testConfig(wsBackend(t).URL)
	cfg.ShutdownTimeout = 300 * time.Millisecond
	base, cancel, errc := runBalancer(t, cfg)
	var c *websocket.Conn
	testutil.Eventually(t, 5*time.Second, func() error {
		conf, _ := websocket.NewConfig(strings.Replace(base, "http", "ws", 1)+"/ws", base)
		var err error
		c, err = websocket.DialConfig(conf)
		return err
	})
	defer c.Close()
	var hello string
	if err := websocket.Message.Receive(c, &hello); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run() did not return with a tunnel open")
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := bufio.NewReader(c).ReadByte(); err == nil {
		t.Error("the tunnel is still open after the shutdown")
	}
}

// TestWebSocketOverTLS: wss:// through the HTTPS listener, with
// X-Forwarded-Proto: https on the handshake the gateway sees.
func TestWebSocketOverTLS(t *testing.T) {
	gw := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) {
		_ = websocket.Message.Send(c, c.Request().Header.Get("X-Forwarded-Proto"))
		var m string
		if websocket.Message.Receive(c, &m) == nil {
			_ = websocket.Message.Send(c, m)
		}
	}))
	t.Cleanup(gw.Close)
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	startBalancer(t, cfg)
	conf, err := websocket.NewConfig(strings.Replace(tlsBase, "https", "wss", 1)+"/ws", tlsBase)
	if err != nil {
		t.Fatal(err)
	}
	conf.TlsConfig = httpsClient(t, certFile).Transport.(*http.Transport).TLSClientConfig
	c, err := websocket.DialConfig(conf)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer c.Close()
	var proto, echo string
	if err := websocket.Message.Receive(c, &proto); err != nil || proto != "https" {
		t.Errorf("gateway saw X-Forwarded-Proto %q (%v), want https", proto, err)
	}
	if websocket.Message.Send(c, "over tls") != nil || websocket.Message.Receive(c, &echo) != nil || echo != "over tls" {
		t.Errorf("echo over wss = %q", echo)
	}
}
