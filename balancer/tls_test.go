package balancer

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/certs"
	"github.com/scalelab/scalelab/internal/testutil"
)

// withTLS gives cfg HTTPS on a fresh 127.0.0.1 port, with a self-signed
// certificate for 127.0.0.1 and localhost made in a temporary directory.
// It returns the HTTPS base URL and the certificate's file.
func withTLS(t *testing.T, cfg *Config) (base, certFile string) {
	t.Helper()
	certFile, keyFile, err := certs.SelfSigned(t.TempDir(), []string{"127.0.0.1", "localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.Listener = certFile, keyFile, ln
	return "https://" + ln.Addr().String(), certFile
}

// httpsClient trusts the certificate in certFile and nothing else, and
// does not follow redirects.
func httpsClient(t *testing.T, certFile string) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemBytes)
	c := newClient(t)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: roots}
	return c
}

// TestHTTPS: the HTTPS listener proxies as the plain one does, with
// X-Forwarded-Proto: https, bodies both ways, and TLS 1.2 at least; the
// plain listener goes on serving beside it.
func TestHTTPS(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	plain := startBalancer(t, cfg)
	c := httpsClient(t, certFile)

	resp, body := get(t, c, tlsBase+"/items/42?x=1")
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("GET over https = %d (tls %v) %s", resp.StatusCode, resp.TLS != nil, body)
	}
	e := decodeEcho(t, body)
	if e.Path != "/items/42" || e.RawQuery != "x=1" || e.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("gateway saw path %q query %q X-Forwarded-Proto %q, want /items/42, x=1, https", e.Path, e.RawQuery, e.Header.Get("X-Forwarded-Proto"))
	}
	big := strings.Repeat("b", 300<<10) // past the loops' 64 KiB, streamed
	resp, body = do(t, c, newRequest(t, http.MethodPost, tlsBase+"/upload", strings.NewReader(big)))
	if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Body != big {
		t.Errorf("POST of 300 KiB over https = %d, body passed whole: %v", resp.StatusCode, decodeEcho(t, body).Body == big)
	}
	resp, body = get(t, newClient(t), plain+"/items/42")
	if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("plain GET beside https = %d %s, want 200 with X-Forwarded-Proto http", resp.StatusCode, body)
	}

	addr := strings.TrimPrefix(tlsBase, "https://")
	if conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
	// Plain HTTP on the HTTPS port gets no answer that parses as HTTP.
	if resp, err := newClient(t).Get("http://" + addr + "/items/42"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP on the https port was proxied")
		}
	}
}

// TestHTTPSHandshakeTimeout: a client that connects to the HTTPS port and
// never says hello is cut after the header timeout, as on the plain port.
func TestHTTPSHandshakeTimeout(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	cfg.ClientHeaderTimeout = 300 * time.Millisecond
	tlsBase, _ := withTLS(t, &cfg)
	startBalancer(t, cfg)
	conn, err := net.Dial("tcp", strings.TrimPrefix(tlsBase, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("read = %v, want the balancer to close the connection", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a silent TLS client was cut after %v, want about the 300ms header timeout", d)
	}
}

// TestHTTPSRedirect: with Redirect, the plain listener sends every request
// outside /-/ to the same target on https, and its probes still answer.
func TestHTTPSRedirect(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	cfg.TLS.Redirect = true
	plain := startBalancer(t, cfg)
	_, tlsPort, _ := net.SplitHostPort(strings.TrimPrefix(tlsBase, "https://"))

	c := newClient(t)
	resp, body := get(t, c, plain+"/items/42?x=1")
	want := "https://127.0.0.1:" + tlsPort + "/items/42?x=1"
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("plain GET = %d Location %q %s, want 308 to %s", resp.StatusCode, resp.Header.Get("Location"), body, want)
	}
	resp, body = do(t, c, newRequest(t, http.MethodPost, plain+"/longtask", strings.NewReader(`{"task":"noop"}`)))
	if resp.StatusCode != http.StatusPermanentRedirect {
		t.Errorf("plain POST = %d %s, want 308 (a client repeats the POST on https)", resp.StatusCode, body)
	}
	if resp, body := get(t, c, plain+"/-/healthz"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /-/healthz on the plain port = %d %s, want 200", resp.StatusCode, body)
	}
	// Following the Location works.
	follow := httpsClient(t, certFile)
	follow.CheckRedirect = nil
	resp, body = get(t, follow, plain+"/items/7")
	if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Path != "/items/7" {
		t.Errorf("GET following the redirect = %d %s", resp.StatusCode, body)
	}
}

// TestTLSConfigRefused: half a pair, a redirect without HTTPS and files
// that do not load are refused at start, with the reason.
func TestTLSConfigRefused(t *testing.T) {
	gw := echoBackend(t, "gw")
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"cert only", func(c *Config) { c.TLS.CertFile = "cert.pem" }, "go together"},
		{"redirect without tls", func(c *Config) { c.TLS.Redirect = true }, "--https-redirect needs HTTPS"},
		{"bad tls addr", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile, c.TLS.Addr = "a", "b", "8443" }, "--tls-addr"},
	} {
		cfg := testConfig(gw.URL)
		tc.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
	cfg := testConfig(gw.URL)
	missing := filepath.Join(t.TempDir(), "none.pem")
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.Addr = missing, missing, "127.0.0.1:0"
	_, cancel, errc := runBalancer(t, cfg)
	defer cancel()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "none.pem") {
			t.Errorf("Run with a missing certificate = %v, want an error naming the file", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run with a missing certificate did not return")
	}
}

// h2Client speaks HTTP/2 to the balancer's HTTPS listener, trusting
// certFile.
func h2Client(t *testing.T, certFile string) *http.Client {
	t.Helper()
	c := httpsClient(t, certFile)
	tr := c.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = true
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	return c
}

// TestHTTP2: a client that offers h2 gets HTTP/2, and its requests go
// through the same proxying: headers, bodies of known and unknown length
// both ways, many streams at once on one connection, and the errors.
func TestHTTP2(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	startBalancer(t, cfg)
	c := h2Client(t, certFile)

	resp, body := get(t, c, tlsBase+"/items/42?x=1")
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %s %d %s, want HTTP/2 200", resp.Proto, resp.StatusCode, body)
	}
	e := decodeEcho(t, body)
	if e.Path != "/items/42" || e.RawQuery != "x=1" || e.Header.Get("X-Forwarded-Proto") != "https" ||
		e.Header.Get("X-Forwarded-Host") != strings.TrimPrefix(tlsBase, "https://") || resp.Header.Get("X-Served-By") != "gw" || resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("HTTP/2 GET: gateway saw %+v; answer headers %v", e, resp.Header)
	}
	// A body of unknown length (no Content-Length), larger than the
	// balancer keeps for a retry: streamed to the gateway.
	big := strings.Repeat("h2", 200<<10)
	req := newRequest(t, http.MethodPost, tlsBase+"/upload", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	resp, body = do(t, c, req)
	if resp.StatusCode != http.StatusOK || decodeEcho(t, body).Body != big {
		t.Errorf("HTTP/2 POST of 400 KiB, unknown length = %d, passed whole: %v", resp.StatusCode, decodeEcho(t, body).Body == big)
	}
	// Streams at once on one connection.
	errs := make(chan error, 32)
	for i := range 32 {
		go func() {
			r, err := c.Get(tlsBase + "/s/" + strconv.Itoa(i))
			if err == nil {
				b, _ := io.ReadAll(r.Body)
				r.Body.Close()
				if r.ProtoMajor != 2 || decodeEchoErr(b).Path != "/s/"+strconv.Itoa(i) {
					err = fmt.Errorf("stream %d: %s %d %s", i, r.Proto, r.StatusCode, b)
				}
			}
			errs <- err
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	// The gateway's status and error body come through.
	req = newRequest(t, http.MethodGet, tlsBase+"/teapot", nil)
	req.Header.Set("X-Want-Status", "418")
	if resp, _ := do(t, c, req); resp.StatusCode != 418 {
		t.Errorf("HTTP/2 GET wanting 418 = %d", resp.StatusCode)
	}
	// /-/ is the balancer's on HTTP/2 too.
	if resp, body := get(t, c, tlsBase+"/-/readyz"); resp.StatusCode != http.StatusOK {
		t.Errorf("HTTP/2 GET /-/readyz = %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, c, tlsBase+"/-/balancer"); resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("HTTP/2 GET /-/balancer on the public port = %d %s, want 404 JSON", resp.StatusCode, body)
	}
}

func decodeEchoErr(b []byte) (e echo) {
	_ = json.Unmarshal(b, &e)
	return e
}

// TestHTTP2ServerSentEvents: an event stream comes through HTTP/2 as the
// gateway sends it, not when it ends.
func TestHTTP2ServerSentEvents(t *testing.T) {
	release := make(chan struct{})
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "data: last\n\n")
	}))
	t.Cleanup(gw.Close)
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	startBalancer(t, cfg)
	resp, err := h2Client(t, certFile).Get(tlsBase + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /events = %s %v", resp.Proto, resp.Header)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line = %q, %v; want the first event before the stream ends", line, err)
	}
	close(release)
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), "data: last") {
		t.Errorf("rest of the stream = %q", rest)
	}
}

// TestH2C: a client that speaks HTTP/2 in clear with prior knowledge is
// served HTTP/2 on the plain port, by either engine; HTTP/1.1 clients on
// the same port are not affected.
func TestH2C(t *testing.T) {
	gw := echoBackend(t, "gw")
	base := startBalancer(t, testConfig(gw.URL))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	for i := range 3 { // one connection, several streams
		resp, body := get(t, c, base+"/items/"+strconv.Itoa(i))
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("h2c GET = %s %d %s, want HTTP/2 200", resp.Proto, resp.StatusCode, body)
		}
		if e := decodeEcho(t, body); e.Path != "/items/"+strconv.Itoa(i) || e.Header.Get("X-Forwarded-Proto") != "http" {
			t.Errorf("h2c GET: gateway saw %+v", e)
		}
	}
	resp, body := do(t, c, newRequest(t, http.MethodPost, base+"/up", strings.NewReader("hello")))
	if resp.ProtoMajor != 2 || decodeEcho(t, body).Body != "hello" {
		t.Errorf("h2c POST = %s %d %s", resp.Proto, resp.StatusCode, body)
	}
	if resp, body := get(t, newClient(t), base+"/items/1"); resp.ProtoMajor != 1 || resp.StatusCode != http.StatusOK {
		t.Errorf("HTTP/1.1 GET beside h2c = %s %d %s", resp.Proto, resp.StatusCode, body)
	}
}

// TestHTTP2Shutdown: a shutdown tells open HTTP/2 connections to go
// (GOAWAY), lets a stream in flight finish, and returns cleanly.
func TestHTTP2Shutdown(t *testing.T) {
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	}))
	t.Cleanup(gw.Close)
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	_, cancel, errc := runBalancer(t, cfg)
	c := h2Client(t, certFile)
	testutil.Eventually(t, 5*time.Second, func() error {
		_, err := c.Get(tlsBase + "/fast")
		return err
	})
	slow := make(chan string, 1)
	go func() {
		resp, err := c.Get(tlsBase + "/slow")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- resp.Proto + " " + string(b)
	}()
	<-arrived
	cancel()
	// The shutdown is under way once the HTTPS port takes no connection.
	testutil.Eventually(t, 5*time.Second, func() error {
		conn, err := net.Dial("tcp", strings.TrimPrefix(tlsBase, "https://"))
		if err == nil {
			conn.Close()
			return errors.New("the https port still accepts")
		}
		return nil
	})
	close(release)
	if got := <-slow; got != "HTTP/2.0 done" {
		t.Errorf("the stream in flight at shutdown got %q, want its answer", got)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("Run() did not return after a shutdown with an HTTP/2 connection open")
	}
}

// TestReloadCertificate: POST /-/reload reads the certificate again (as
// SIGHUP does), refusing a pair that does not load.
func TestReloadCertificate(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	tlsBase, certFile := withTLS(t, &cfg)
	base := startBalancer(t, cfg)
	// Run loads the first pair on its own goroutine: replacing the files
	// before it has would hand it a mismatched pair. An answer over HTTPS
	// with the first certificate trusted says it has loaded.
	if resp, _ := get(t, httpsClient(t, certFile), tlsBase+"/x"); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET with the first certificate trusted = %d", resp.StatusCode)
	}
	keyFile := cfg.TLS.KeyFile
	newCert, newKey, err := certs.SelfSigned(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, mv := range [][2]string{{newKey, keyFile}, {newCert, certFile}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if status, body := postReload(t, base, adminToken(t, "admin")); status != http.StatusOK {
		t.Fatalf("POST /-/reload = %d %s", status, body)
	}
	if resp, _ := get(t, httpsClient(t, certFile), tlsBase+"/x"); resp.StatusCode != http.StatusOK {
		t.Errorf("GET with the new certificate trusted = %d", resp.StatusCode)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if status, body := postReload(t, base, adminToken(t, "admin")); status != http.StatusBadRequest || !strings.Contains(string(body), "tls certificate") {
		t.Errorf("POST /-/reload with a broken key = %d %s, want 400 naming the certificate", status, body)
	}
}
