package balancer

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/scalelab/scalelab/internal/testutil"
)

// accessLine is one line of the access log.
type accessLine struct {
	Msg       string  `json:"msg"`
	Method    string  `json:"method"`
	Path      string  `json:"path"`
	Status    int     `json:"status"`
	Bytes     int64   `json:"bytes"`
	Duration  float64 `json:"duration_ms"`
	Client    string  `json:"client"`
	Upstream  string  `json:"upstream"`
	Retries   int     `json:"retries"`
	RequestID string  `json:"request_id"`
}

// runWithAccessLog runs a balancer over backends with the access log on,
// sends the requests of do, stops it and returns the log's lines.
func runWithAccessLog(t *testing.T, cfg Config, do func(base string)) []accessLine {
	t.Helper()
	var out testutil.LogBuffer
	cfg.AccessLog, cfg.AccessLogOutput = true, &out
	base, cancel, errc := runBalancer(t, cfg)
	do(base)
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	var lines []accessLine
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var a accessLine
		if err := json.Unmarshal([]byte(l), &a); err != nil || a.Msg != "access" {
			t.Fatalf("access log line %q: %v", l, err)
		}
		lines = append(lines, a)
	}
	return lines
}

// TestAccessLog: one line per request, with what an operator reads:
// method, path without the query, status, body bytes, duration, client,
// the gateway, retries and the request ID the client got.
func TestAccessLog(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(deadURL(t), gw.URL)
	cfg.MaxRetries = 1
	var ids []string
	var sizes []int
	lines := runWithAccessLog(t, cfg, func(base string) {
		c := newClient(t)
		for _, path := range []string{"/items/1?secret=x", "/items/2", "/large"} {
			req := newRequest(t, http.MethodGet, base+path, nil)
			if path == "/large" {
				req.Header.Set("X-Pad", strings.Repeat("p", 3000))
			}
			resp, body := do(t, c, req)
			ids = append(ids, resp.Header.Get("X-Request-Id"))
			sizes = append(sizes, len(body))
		}
	})
	if len(lines) != 3 {
		t.Fatalf("%d access lines, want 3: %+v", len(lines), lines)
	}
	retried := 0
	for i, l := range lines {
		want := []string{"/items/1", "/items/2", "/large"}[i]
		if l.Method != "GET" || l.Path != want || l.Status != 200 || l.Bytes != int64(sizes[i]) || l.Duration <= 0 ||
			l.Client != "127.0.0.1" || l.Upstream != gw.URL || l.RequestID != ids[i] {
			t.Errorf("line %d = %+v, want GET %s 200 %d bytes from 127.0.0.1 via %s, id %s", i, l, want, sizes[i], gw.URL, ids[i])
		}
		retried += l.Retries
	}
	// Round robin over a dead gateway and a live one: some request met
	// the dead one first and was retried.
	if retried == 0 {
		t.Errorf("no line says retries > 0: %+v", lines)
	}
}

// TestAccessLogSample: with a sample of 4, one request in four is
// logged, and every 5xx.
func TestAccessLogSample(t *testing.T) {
	gw := echoBackend(t, "gw")
	cfg := testConfig(gw.URL)
	cfg.AccessLogSample = 4
	lines := runWithAccessLog(t, cfg, func(base string) {
		c := newClient(t)
		for range 8 {
			get(t, c, base+"/ok")
		}
		req := newRequest(t, http.MethodGet, base+"/boom", nil)
		req.Header.Set("X-Want-Status", "503")
		do(t, c, req)
	})
	var ok, failed int
	for _, l := range lines {
		switch l.Status {
		case 200:
			ok++
		case 503:
			failed++
		}
	}
	if ok != 2 || failed != 1 {
		t.Errorf("sampled lines: %d of 8 OK, %d of 1 503; want 2 and 1", ok, failed)
	}
}

// FuzzAppendJSONString: whatever bytes a path holds, the access log's
// string is valid JSON, and reads back as the bytes when they are UTF-8.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"/items/42", `/a"b\c`, "/\x00\x1f\x7f", "/caf\xc3\xa9", "/\xff\xfe", "/😀"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		out := appendJSONString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("%q gave %s, not a JSON string: %v", s, out, err)
		}
		if utf8.Valid(s) && back != string(s) {
			t.Fatalf("%q read back as %q", s, back)
		}
	})
}
