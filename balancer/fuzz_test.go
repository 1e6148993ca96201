package balancer

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzClientBytes writes arbitrary bytes on a client connection, as a
// client could, and reads what the balancer answers: requests the event
// loops frame themselves, ones they hand to the goroutine engine, and
// garbage. No answer may be a 5xx (the gateway answers 200, and bad input
// is the client's fault: 4xx), and the balancer must go on serving.
func FuzzClientBytes(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
		"POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"GET /-/healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET http://a/abs HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /after HTTP/1.1\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nHost: a\r\n\r\n",
		"BREW /pot HTCPCP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
		"\x00\x01\x02\xff\r\n\r\n",
		// h2c with prior knowledge: the preface, then an empty SETTINGS
		// frame, then garbage; and half a preface.
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\xff\xff",
		"PRI * HTTP/2.0\r\n",
		"PRI * HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	gw := echoBackend(f, "fuzz")
	base := startBalancer(f, testConfig(gw.URL))
	client := &http.Client{Timeout: 5 * time.Second}
	addr := strings.TrimPrefix(base, "http://")
	f.Fuzz(func(t *testing.T, data []byte) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatalf("dial balancer: %v", err)
		}
		defer conn.Close()
		if _, err := conn.Write(data); err != nil {
			t.Fatalf("write: %v", err)
		}
		// Whatever comes back within a short while (a partial request is
		// never answered, so the read times out).
		_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		got, err := io.ReadAll(conn)
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("read: %v", err)
		}
		br := bufio.NewReader(bytes.NewReader(got))
		for {
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				break // the end, or an answer cut by the deadline
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
			if res.StatusCode >= 500 {
				t.Fatalf("answer %d to %q", res.StatusCode, data)
			}
		}
		// And the balancer still serves.
		res, err := client.Get(base + "/alive")
		if err != nil {
			t.Fatalf("GET /alive after the input: %v", err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET /alive after the input: status %d", res.StatusCode)
		}
	})
}

// isReset reports whether err is a connection reset: the balancer may
// close a connection it had not read to the end.
func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}
