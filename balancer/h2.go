package balancer

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/scalelab/scalelab/internal/logging"
)

// This file serves HTTP/2: over TLS when the client's ALPN asks for h2
// (tlsFront), and in clear with prior knowledge (h2c, on the plain
// listener). The framing, flow control, HPACK and the limits on streams
// are golang.org/x/net/http2's, not written here. Each stream is turned
// into a fasthttp request and handed to the balancer's one handler
// (balancer.handle), so that an HTTP/2 request is picked, sent, retried,
// limited, rewritten and logged exactly as an HTTP/1.1 one; the gateways
// are spoken to in HTTP/1.1 as ever. The answer goes back on the stream,
// streamed as the goroutine engine streams it (flushed as it comes when
// its length is unknown: server-sent events).

// h2Server serves the HTTP/2 connections of one listener.
type h2Server struct {
	b *balancer
	// hs is the base configuration of every connection (header limit,
	// idle timeout, error log); its Shutdown tells every connection to go
	// away (GOAWAY), which http2.ConfigureServer hooks onto it.
	hs  *http.Server
	srv *http2.Server

	mu       sync.Mutex
	conns    map[net.Conn]struct{} // open, to close those left at the end
	draining bool
	wg       sync.WaitGroup
}

// h2MaxStreams caps the streams a client may have open at once on one
// connection: what a browser opens, and a bound on what one connection
// costs (each stream is a goroutine while it is served).
const h2MaxStreams = 250

func newH2Server(b *balancer) *h2Server {
	s := &h2Server{b: b, conns: map[net.Conn]struct{}{}}
	s.hs = &http.Server{
		MaxHeaderBytes: maxHeaderBytes,
		IdleTimeout:    clientIdleTimeout,
		ErrorLog:       slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
	s.srv = &http2.Server{MaxConcurrentStreams: h2MaxStreams, IdleTimeout: clientIdleTimeout}
	// Cannot fail: hs has no TLS configuration of its own to check.
	_ = http2.ConfigureServer(s.hs, s.srv)
	return s
}

// serve serves the HTTP/2 connection c until it ends, then closes it. c
// has been through its TLS handshake, or begins with the h2c preface.
func (s *h2Server) serve(c net.Conn) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.Close()
		s.wg.Done()
	}()
	s.srv.ServeConn(c, &http2.ServeConnOpts{BaseConfig: s.hs, Handler: http.HandlerFunc(s.stream)})
}

// drain tells every connection to finish its streams and go, and refuses
// new ones.
func (s *h2Server) drain() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	// With no listener and no connection of its own, Shutdown runs the
	// GOAWAY hook and returns.
	_ = s.hs.Shutdown(context.Background())
}

// wait waits for the connections to end, or ctx; then it closes those
// left.
func (s *h2Server) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// None open (the last one may be closing): no wait on ctx, which
	// may have ended already.
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	if open == 0 {
		<-done
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	<-done
	return fmt.Errorf("%d http/2 connections still open: %w", n, ctx.Err())
}

// requestCtxs recycles the fasthttp request contexts of streams.
var requestCtxs = sync.Pool{New: func() any { return new(fasthttp.RequestCtx) }}

// stream serves one HTTP/2 stream through balancer.handle.
func (s *h2Server) stream(w http.ResponseWriter, r *http.Request) {
	ctx := requestCtxs.Get().(*fasthttp.RequestCtx)
	defer func() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		requestCtxs.Put(ctx)
	}()
	sc := &streamConn{r: r, rc: http.NewResponseController(w)}
	var conn net.Conn = sc
	if r.TLS != nil {
		conn = tlsStreamConn{sc}
	}
	ctx.Init2(conn, logging.Printf{Log: s.b.log}, false)

	fromHTTP2(r, &ctx.Request)

	s.b.handle(ctx)

	resp := &ctx.Response
	// The answer's body stream (a streamed answer) ends the exchange when
	// closed, whatever happens to the client.
	defer func() { _ = resp.CloseBodyStream() }()
	h := w.Header()
	for k, v := range resp.Header.All() {
		switch string(k) {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Trailer", "Content-Length":
			// Connection-specific headers are not HTTP/2's (RFC 9113
			// 8.2.2); the length is set below.
			continue
		}
		h.Add(string(k), string(v))
	}
	size := resp.Header.ContentLength()
	if !resp.IsBodyStream() {
		size = len(resp.Body())
	}
	if size >= 0 && r.Method != http.MethodHead {
		h.Set("Content-Length", strconv.Itoa(size))
	}
	status := resp.StatusCode()
	if status == statusClientClosed {
		return // nobody to answer
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if !resp.IsBodyStream() {
		_, _ = w.Write(resp.Body())
		return
	}
	var dst io.Writer = w
	if size < 0 {
		dst = flushWriter{w: w, rc: sc.rc}
	}
	if _, err := io.Copy(dst, resp.BodyStream()); err != nil && !errors.Is(err, context.Canceled) {
		s.b.log.Debug("http/2 answer cut", "err", err)
	}
}

// flushWriter flushes every write: an answer of unknown length (events,
// a long poll) goes to the client as it comes.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// streamConn is what the handler sees as the client connection of an
// HTTP/2 stream: its addresses, read deadlines on the stream's body (the
// client body timeout), and whether the client has gone (reset the
// stream, or closed the connection). Reads and writes go through the
// stream, never through it.
type streamConn struct {
	r  *http.Request
	rc *http.ResponseController
}

var errStreamConn = errors.New("an HTTP/2 stream is read and written through its request")

func (c *streamConn) Read([]byte) (int, error)  { return 0, errStreamConn }
func (c *streamConn) Write([]byte) (int, error) { return 0, errStreamConn }
func (c *streamConn) Close() error              { return nil }
func (c *streamConn) LocalAddr() net.Addr {
	if a, ok := c.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a
	}
	return &net.TCPAddr{}
}
func (c *streamConn) RemoteAddr() net.Addr {
	if ap, err := netip.ParseAddrPort(c.r.RemoteAddr); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return &net.TCPAddr{}
}
func (c *streamConn) SetDeadline(t time.Time) error      { return c.rc.SetReadDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.rc.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.rc.SetWriteDeadline(t) }

// gone reports whether the client reset the stream or left: peerClosed
// asks it, as it asks a socket.
func (c *streamConn) gone() bool { return c.r.Context().Err() != nil }

// tlsStreamConn is a streamConn of a TLS connection: fasthttp's IsTLS
// sees its state, so the request goes on with X-Forwarded-Proto: https.
type tlsStreamConn struct{ *streamConn }

// Handshake has been done: the stream exists.
func (c tlsStreamConn) Handshake() error { return nil }

// ConnectionState is the TLS state of the stream's connection.
func (c tlsStreamConn) ConnectionState() tls.ConnectionState { return *c.r.TLS }

// h2cPreface is the HTTP/2 client preface (RFC 9113 section 3.4), and
// h2cPrefaceLine its first line, which an HTTP/1.1 parser reads as the
// request line of a request "PRI *" with no header, followed by "SM".
var (
	h2cPreface     = []byte(http2.ClientPreface)
	h2cPrefaceLine = h2cPreface[:len("PRI * HTTP/2.0\r\n")]
)

// divertH2C decides, at the first read of c (n bytes in p, err), whether
// the client speaks HTTP/2 with prior knowledge: its first bytes are the
// preface's first line, which no HTTP/1.1 request begins with (fasthttp
// would refuse its "*"). Then c is diverted: the HTTP/2 server gets the
// socket, the bytes read and c's slot, on a goroutine of its own, and
// fasthttp is told the connection closed before any request. A first read
// shorter than that line, and a prefix of it, is completed by more reads
// (into p, which is fasthttp's read buffer: kilobytes). It returns what
// the read gives fasthttp otherwise.
func (c *clientConn) divertH2C(p []byte, n int, err error) (int, error) {
	for err == nil && n < len(h2cPrefaceLine) && n < len(p) && bytes.HasPrefix(h2cPrefaceLine, p[:n]) {
		var m int
		m, err = c.Conn.Read(p[n:])
		n += m
	}
	if !bytes.HasPrefix(p[:n], h2cPrefaceLine) {
		return n, err
	}
	c.diverted = true
	conn := &replayConn{Conn: c.Conn, pending: bytes.Clone(p[:n])}
	go c.h2.serve(&slotConn{Conn: conn, slot: c.slot})
	return 0, io.EOF
}

// slotConn is a connection that gives its place under the caps on client
// connections back when it closes.
type slotConn struct {
	net.Conn
	slot *connSlot
}

func (c *slotConn) Close() error {
	c.slot.release()
	return c.Conn.Close()
}

// fromHTTP2 makes req the HTTP/1.1 form of the HTTP/2 request r: method,
// target (":path"), Host (":authority"), header fields, and r's body as a
// stream (of unknown length when r says none).
func fromHTTP2(r *http.Request, req *fasthttp.Request) {
	req.Header.SetMethod(r.Method)
	req.Header.SetRequestURI(r.RequestURI)
	req.Header.SetHost(r.Host)
	for k, vs := range r.Header {
		if k == "Content-Length" {
			continue // from r.ContentLength, below
		}
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		// -1 (no length said): sent on chunked, as an HTTP/1.1 body of
		// unknown length is.
		// Without its Close: the handler swaps the stream for its own
		// reader of it (takeBody), and fasthttp closes the stream it
		// replaces. The server closes the body when the stream ends.
		req.SetBodyStream(struct{ io.Reader }{r.Body}, int(r.ContentLength))
	}
}
