package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalelab/scalelab/internal/testutil"
)

// serve runs an HTTPS server on 127.0.0.1 with ServerConfig(r) and
// returns its address.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerConfig(r, "http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// trusting is an HTTP client that trusts the certificate in certFile
// (and nothing else), keeping its connections.
func trusting(t *testing.T, certFile string) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in", certFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// get does GET url with c and returns the serial of the certificate the
// server showed, and whether the connection was one kept from before.
func get(t *testing.T, c *http.Client, url string) (serial string, reused bool, err error) {
	t.Helper()
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.TLS.PeerCertificates[0].SerialNumber.String(), reused, nil
}

func pairIn(t *testing.T, dir string, now time.Time) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile, err := SelfSigned(dir, []string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func serialOf(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return pair.Leaf.SerialNumber.String()
}

// TestWatchReloadsWithoutDroppingConnections: new files are served to the
// next handshake, while a connection made before goes on with the old
// certificate; a pair that does not load is refused and the old one stays.
func TestWatchReloadsWithoutDroppingConnections(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := pairIn(t, dir, time.Now())
	first := serialOf(t, certFile, keyFile)
	r, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go r.Watch(ctx, 10*time.Millisecond, slog.New(slog.DiscardHandler))
	url := "https://" + serve(t, r) + "/"

	// The client that will keep its connection trusts the first
	// certificate only; a fresh client per look trusts the new one.
	kept := trusting(t, certFile)
	if s, _, err := get(t, kept, url); err != nil || s != first {
		t.Fatalf("first GET: serial %s, err %v; want %s", s, err, first)
	}

	// A new pair, made elsewhere and moved in (as certbot or cert-manager do).
	other := t.TempDir()
	newCert, newKey := pairIn(t, other, time.Now())
	second := serialOf(t, newCert, newKey)
	for _, mv := range [][2]string{{newKey, keyFile}, {newCert, certFile}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if s, _, err := get(t, trusting(t, certFile), url); err != nil || s != second {
			return errors.New("new handshakes still get the first certificate")
		}
		return nil
	})
	if s, reused, err := get(t, kept, url); err != nil || s != first || !reused {
		t.Fatalf("GET on the kept connection: serial %s, reused %v, err %v; want the first certificate on the same connection", s, reused, err)
	}

	// A key that does not match: refused, the second pair stays.
	third := t.TempDir()
	_, thirdKey := pairIn(t, third, time.Now())
	if err := os.WriteFile(keyFile, mustRead(t, thirdKey), 0o600); err != nil {
		t.Fatal(err)
	}
	err = r.Reload()
	if err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("Reload with a key of another certificate = %v, want the mismatch named", err)
	}
	if s, _, err := get(t, trusting(t, certFile), url); err != nil || s != second {
		t.Fatalf("after a refused reload: serial %s, err %v; want the second certificate still", s, err)
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLoadRefuses: what does not serve is refused with the reason.
func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := pairIn(t, dir, time.Now())
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expiredDir := t.TempDir()
	expCert, expKey := pairIn(t, expiredDir, time.Now().Add(-2*selfSignedLife))
	for _, tc := range []struct{ name, cert, key, want string }{
		{"missing cert", filepath.Join(dir, "none.pem"), keyFile, "no such file"},
		{"garbage cert", garbage, keyFile, "tls certificate"},
		{"cert as key", certFile, certFile, "tls certificate"},
		{"expired", expCert, expKey, "not now"},
	} {
		if _, err := Load(tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Load = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if Check("a", "") == nil || Check("", "b") == nil || Check("", "") != nil || Check("a", "b") != nil {
		t.Error("Check wants both files or neither")
	}
}

// TestSelfSigned: the certificate verifies for each host it was made for
// (and for no other), and is reused while it has time left.
func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	certFile, keyFile := pairIn(t, dir, now)
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	r, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	_, port, _ := net.SplitHostPort(addr)
	c := trusting(t, certFile)
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, _, err := get(t, c, "https://"+net.JoinHostPort(host, port)+"/"); err != nil {
			t.Errorf("GET via %s: %v", host, err)
		}
	}
	// Another name: the client refuses it.
	tr := c.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com"
	if _, _, err := get(t, &http.Client{Transport: tr}, "https://"+addr+"/"); err == nil {
		t.Error("a client asking for example.com accepted the certificate")
	}
	// TLS 1.1 is refused.
	old := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}
	if conn, err := tls.Dial("tcp", addr, old); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}

	s := serialOf(t, certFile, keyFile)
	if c2, k2 := pairIn(t, dir, now.Add(24*time.Hour)); serialOf(t, c2, k2) != s {
		t.Error("a certificate with 364 days left was made again")
	}
	if c2, k2 := pairIn(t, dir, now.Add(selfSignedLife-selfSignedRenew+time.Hour)); serialOf(t, c2, k2) == s {
		t.Error("a certificate ending within 30 days was reused")
	}
	if _, _, err := SelfSigned(dir, []string{"127.0.0.1", "scalelab.test"}, now); err != nil {
		t.Fatal(err)
	}
	if pair, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil || pair.Leaf.VerifyHostname("scalelab.test") != nil {
		t.Errorf("a certificate without a host asked for was reused (%v)", err)
	}
}
