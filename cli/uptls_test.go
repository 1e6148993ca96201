package cli

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"
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
