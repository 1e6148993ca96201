package balancer

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http/httpguts"
)

// FuzzFromHTTP2: whatever header fields an HTTP/2 request that the HTTP/2
// server accepted carries, its HTTP/1.1 form reads back as one request
// with the same method, target and field, and nothing more: no field
// smuggles a line or a request of its own into the request the gateway
// reads.
func FuzzFromHTTP2(f *testing.F) {
	f.Add("GET", "/items/42?x=1", "example.com", "X-Test", "value", int64(0), []byte(nil))
	f.Add("POST", "/longtask", "127.0.0.1:8443", "Content-Type", "application/json", int64(-1), []byte(`{"task":"noop"}`))
	f.Add("PUT", "/a%20b", "h", "Transfer-Encoding", "chunked", int64(3), []byte("abc"))
	f.Fuzz(func(t *testing.T, method, target, host, name, value string, size int64, body []byte) {
		// What the HTTP/2 server lets through (x/net/http2 checks these
		// with httpguts, and :path starts with "/").
		if !httpguts.ValidHostHeader(host) || !httpguts.ValidHeaderFieldName(name) || !httpguts.ValidHeaderFieldValue(value) ||
			len(target) == 0 || target[0] != '/' || !validToken(method) || bytes.ContainsAny([]byte(target), " \r\n\x00") ||
			httpguts.HeaderValuesContainsToken([]string{name}, "") || isConnectionSpecific(name) {
			return
		}
		r := &http.Request{Method: method, RequestURI: target, Host: host, Header: http.Header{http.CanonicalHeaderKey(name): {value}}, Body: http.NoBody}
		if size != 0 {
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), max(size, -1)
		}
		var req fasthttp.Request
		fromHTTP2(r, &req)
		var back fasthttp.RequestHeader
		if err := back.Read(bufio.NewReader(bytes.NewReader(req.Header.Header()))); err != nil {
			return // fasthttp refuses it: the gateway gets nothing
		}
		if string(back.Method()) != method || string(back.RequestURI()) != target {
			t.Fatalf("read back %s %s, want %s %s", back.Method(), back.RequestURI(), method, target)
		}
		if http.CanonicalHeaderKey(name) != "Content-Length" && http.CanonicalHeaderKey(name) != "Host" &&
			http.CanonicalHeaderKey(name) != "Content-Type" && string(back.Peek(name)) != strings.Trim(value, " \t") {
			// HTTP/1.1 drops the white space around a value (RFC 9110 5.5).
			t.Fatalf("field %s read back %q, want %q", name, back.Peek(name), strings.Trim(value, " \t"))
		}
	})
}

// validToken reports whether s is an HTTP token (a method).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !httpguts.IsTokenRune(rune(s[i])) {
			return false
		}
	}
	return true
}

// isConnectionSpecific reports whether name is a field HTTP/2 forbids in
// a request (RFC 9113 8.2.2), which the HTTP/2 server refuses.
func isConnectionSpecific(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Te":
		return true
	}
	return false
}
