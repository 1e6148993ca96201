package balancer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math"
	"net"
	"net/http/httputil"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/balancer/internal/rawconn"
)

// This file is the gateway side of a request: the connections to a
// gateway, as the goroutine engine takes them from its backend's fasthttp
// pool (upstream.roundTrip, gatewayConn, upstreamBody) and as each event
// loop keeps its own (loopGateway, park and unpark).

// loopGateway is a connection to a gateway on an event loop.
type loopGateway struct {
	b     *backend
	lc    *loopClient // the client whose attempt it carries; nil when idle
	since time.Time   // idle since
	start time.Time   // the start of the attempt it carries
	// headLen and size are the answer's header length and body size, once
	// its header is in.
	headLen, size int
	away          bool // streamed by a goroutine; closed on the loop
}

// park keeps gc, now idle, for the next request to its backend, unless
// the loop has MaxIdleConnsPerHost idle ones already or the backend is
// gone. It reports whether gc was kept.
func (l *eventLoop) park(gc gnet.Conn, g *loopGateway) bool {
	idle := l.idle[g.b]
	if len(idle) >= l.f.b.cfg.MaxIdleConnsPerHost || g.b.retired() || l.f.draining.Load() {
		return false
	}
	g.since = time.Now()
	l.idle[g.b] = append(idle, gc)
	return true
}

// unpark returns the most recently used idle connection to bk, or nil.
func (l *eventLoop) unpark(bk *backend) gnet.Conn {
	idle := l.idle[bk]
	if len(idle) == 0 {
		return nil
	}
	gc := idle[len(idle)-1]
	l.idle[bk] = idle[:len(idle)-1]
	return gc
}

// forget drops gc from the idle connections.
func (l *eventLoop) forget(gc gnet.Conn, g *loopGateway) {
	idle := l.idle[g.b]
	for i, c := range idle {
		if c == gc {
			l.idle[g.b] = append(idle[:i], idle[i+1:]...)
			break
		}
	}
	if len(l.idle[g.b]) == 0 {
		delete(l.idle, g.b)
	}
}

// newBackendClient returns the connection pool to one gateway. The balancer uses
// only its pool (AcquireConn, ReleaseConn, CloseConn and its buffer pools):
// requests are written and answers read by upstream.roundTrip, which adds
// what HostClient.Do lacks for a proxy (see there). Every timeout is
// explicit: a gateway that is down, blackholed or stuck must cost a client a
// bounded wait, never a hang.
func newBackendClient(cfg Config, u *url.URL) *fasthttp.HostClient {
	dialer := &net.Dialer{
		Timeout:   cfg.DialTimeout,
		KeepAlive: 30 * time.Second, // notice gateways that vanish without a FIN
	}
	idle := cfg.IdleConnTimeout
	if idle == 0 {
		idle = math.MaxInt64 // zero means forever; fasthttp's zero is 10s
	}
	return &fasthttp.HostClient{
		Addr: backendAddr(u),
		// Dial marks its errors, so that a request that could not connect
		// (and so sent nothing) is told from one that broke after sending.
		Dial: func(addr string) (net.Conn, error) {
			c, err := dial(dialer, cfg.Dial, addr)
			if err != nil {
				return nil, &dialError{err: err}
			}
			return newGatewayConn(c), nil
		},
		IsTLS: u.Scheme == "https",
		// No cap on connections, as with net/http's transport: the
		// balancer's own --max-inflight bounds them. Idle ones are kept up
		// to MaxIdleConnsPerHost (see upstream.roundTrip) and closed after
		// IdleConnTimeout; LIFO reuse keeps the busy ones busy, so that
		// after a burst the surplus goes idle and is closed.
		MaxConns:            math.MaxInt32,
		MaxIdleConnDuration: idle,
		ConnPoolStrategy:    fasthttp.LIFO,
		// The balancer retries on its own terms (see forwarder); the
		// client's retries of idempotent requests on the same gateway are
		// not wanted. roundTrip does not call Do, so this is a safeguard.
		MaxIdemponentCallAttempts: 1,
		ReadBufferSize:            maxAnswerHeaderBytes,
		WriteBufferSize:           bufferSize,
		// Request targets go to the gateway as the client sent them.
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
	}
}

// backendAddr is the host:port of the gateway at u, its scheme's default
// port when u names none.
func backendAddr(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// dial connects to a gateway at addr (host:port) with custom when it is
// set (Config.Dial), bounded by dialer's timeout, and over TCP with dialer
// otherwise.
func dial(dialer *net.Dialer, custom func(context.Context, string) (net.Conn, error), addr string) (net.Conn, error) {
	if custom == nil {
		return dialer.Dial("tcp", addr)
	}
	ctx := context.Background()
	if dialer.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dialer.Timeout)
		defer cancel()
	}
	return custom(ctx, addr)
}

// dialError is a failure to connect to a gateway: refused, timed out, no
// route, unresolvable name. Nothing of the request was sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial gateway: " + e.err.Error() }

func (e *dialError) Unwrap() error { return e.err }

// isDialError reports whether err is a failure to connect: refused, timed
// out, no route, unresolvable name, or no connection to be had.
func isDialError(err error) bool {
	var de *dialError
	if errors.As(err, &de) || errors.Is(err, fasthttp.ErrNoFreeConns) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// errClientGone is what an attempt fails with when the client hung up
// while it waited for the gateway.
var errClientGone = errors.New("balancer: the client went away")

// errStreamIdle cuts an answer whose gateway went silent for
// Config.StreamIdleTimeout.
var errStreamIdle = errors.New("balancer: the gateway sent nothing for --stream-idle-timeout")

// staleCheckAfter is how long a pooled connection must have been idle
// before it is checked for a close by the gateway. Below it the check (one
// non-blocking read) costs more than the rare race it catches.
const staleCheckAfter = 50 * time.Millisecond

// maxStaleConns bounds how many dead pooled connections one attempt
// throws away before it gives up and dials.
const maxStaleConns = 8

// upstream sends one attempt to one gateway over its pooled connections.
//
// Why not HostClient.Do: it has no response header timeout (ReadTimeout
// covers the whole body, which would cut server-sent event streams off);
// it cannot be interrupted when the client goes away; it does not notice a
// pooled connection that the gateway has closed while it was idle, so the
// next request on it fails after being sent, and a POST would get a 502
// (net/http's transport keeps reading idle connections for this); and it
// either buffers every body or streams every body, where a proxy wants to
// pass a small answer on whole and stream the rest.
type upstream struct {
	responseHeaderTimeout time.Duration
	maxIdle               int // idle connections kept per gateway
}

// roundTrip sends req to b and reads the answer into resp (the client's
// response: nothing is copied). A body that arrived with the headers is
// read into resp and the connection goes back to the pool at once;
// another body (large, chunked, streamed) is left to ex.body, which the
// server copies to the client after the handler returns (see respond).
//
// It returns a *dialError when no connection could be made (nothing was
// sent) and any other error when the exchange broke after the request may
// have been sent. Once a connection is taken, every way out gives it back
// in one place (the deferred giveBack), unless the body streams: then the
// body's Close does.
func (u *upstream) roundTrip(b *backend, req *fasthttp.Request, resp *fasthttp.Response, ex *exchange) (err error) {
	hc := b.client
	now := time.Now()
	cc, err := hc.AcquireConn(0, false)
	// A connection the gateway closed while it sat in the pool reads EOF
	// at once; dropping it before anything is written makes that race
	// harmless for every method.
	for stale := 0; err == nil && stale < maxStaleConns && isStale(cc.Conn(), now, cc.CreatedTime(), cc.LastUseTime()); stale++ {
		hc.CloseConn(cc)
		cc, err = hc.AcquireConn(0, false)
	}
	if err != nil {
		return err
	}
	conn := cc.Conn()
	gc := gatewayConnOf(conn)
	var br *bufio.Reader
	// keep: the connection may serve another request once this one is
	// done; streamed: the body's Close gives it back instead.
	keep, streamed := false, false
	defer func() {
		if streamed {
			return
		}
		if br != nil {
			hc.ReleaseReader(br)
		}
		gc.release()
		if err == nil && u.keepIdle(hc, keep) {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}()
	var headerDeadline time.Time
	if u.responseHeaderTimeout > 0 {
		headerDeadline = now.Add(u.responseHeaderTimeout)
	}
	// The read deadline is the next look at the client (see gatewayConn),
	// or the response header timeout if that comes first. It runs from the
	// start of the write (a TLS handshake included).
	if gc != nil {
		gc.ex, gc.headerDeadline = ex, headerDeadline
		err = gc.setCheckDeadline(now)
	} else {
		err = conn.SetReadDeadline(nextCheck(now, headerDeadline))
	}
	if err != nil {
		return err
	}
	uploading := ex.bodyRest != nil
	if gc != nil && !uploading {
		gc.holdRequest()
	}
	bw := hc.AcquireWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if uploading {
		if body := ex.bodyRest; body.err != nil {
			// The client's upload failed (too slow, broken off, too large):
			// the gateway got part of a request, and its connection goes.
			return &bodyError{err: body.err}
		}
		if gc != nil && u.responseHeaderTimeout > 0 {
			// The upload took its time: the wait for the answer starts now.
			now := time.Now()
			gc.headerDeadline = now.Add(u.responseHeaderTimeout)
			gc.deadline = time.Time{}
			err = errors.Join(err, gc.setCheckDeadline(now))
		}
	}
	// A gateway may answer before it has the whole body (413 for one over
	// its limit) and close the connection, which fails the rest of the
	// write: its answer, if it came, is the one to pass on.
	writeErr := err
	if writeErr != nil && !peerHungUp(writeErr) {
		return ex.cause(writeErr)
	}
	resp.Reset()
	resp.SkipBody = true // read below, or streamed
	br = hc.AcquireReader(conn)
	if err := resp.ReadLimitBody(br, 0); err != nil {
		if writeErr != nil {
			return ex.cause(writeErr)
		}
		return ex.cause(err)
	}
	if gc != nil {
		gc.headerDeadline = time.Time{} // the body takes as long as it takes
	}
	head := req.Header.IsHead()
	status := resp.StatusCode()
	size := resp.Header.ContentLength()
	// A 101 hands the connection over to another protocol (Upgrade is not
	// passed on, so a gateway should not send one).
	keep = writeErr == nil && !req.Header.ConnectionClose() && !resp.ConnectionClose() &&
		status != fasthttp.StatusSwitchingProtocols
	switch {
	case head || status < 200 || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified:
		// No body: the connection is ready for the next request already.
		resp.SkipBody = head
		return nil
	case size >= 0 && br.Buffered() >= size:
		// The whole body came with the headers, as small answers do: pass
		// it on whole.
		resp.SkipBody = false
		body, _ := br.Peek(size)
		resp.SetBody(body)
		_, _ = br.Discard(size)
		return nil
	}
	// The body streams. The closure is made only here, so that a whole
	// answer allocates none.
	resp.SkipBody = false
	streamed = true
	release := func(reuse bool) {
		if u.keepIdle(hc, reuse) {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}
	ex.body = upstreamBody{hc: hc, br: br, gc: gc, release: release, keep: keep && size != -2, ex: ex}
	switch size {
	case -1:
		ex.body.src = httputil.NewChunkedReader(br)
		ex.body.chunked = true
	case -2:
		// No length and not chunked: the body ends when the gateway
		// closes the connection.
		ex.body.src = br
	default:
		ex.body.src = io.LimitReader(br, int64(size))
		ex.body.size = int64(size)
	}
	ex.streaming = true
	return nil
}

// keepIdle reports whether a connection to hc's gateway that may be
// reused goes back to the pool: past maxIdle idle connections the gateway
// has more than the load needs, and it is closed instead.
func (u *upstream) keepIdle(hc *fasthttp.HostClient, reuse bool) bool {
	return reuse && hc.IdleConnsCount() < u.maxIdle
}

// peerHungUp reports whether err, a failed write, says that the gateway
// closed the connection (it may have answered first).
func peerHungUp(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// nextCheck returns the read deadline of a gateway connection at now: the
// next look at the client, or the response header deadline if it comes
// first.
func nextCheck(now, headerDeadline time.Time) time.Time {
	next := now.Add(clientCheckInterval)
	if !headerDeadline.IsZero() && headerDeadline.Before(next) {
		return headerDeadline
	}
	return next
}

// gatewayConn is a connection to a gateway. While an exchange uses it, a
// read that waits longer than clientCheckInterval times out, looks whether
// the client is still there, and goes on waiting if it is: so a request
// whose client hung up is dropped (and its gateway sees the connection
// close, as net/http's cancelled request context would show it), and a
// gateway that sends no headers within the response header timeout fails
// the attempt, without a timer or a goroutine per request.
//
// A request written to it is held until the read of its answer, which
// sends it and waits for the answer in one go (rawconn.Conn.HoldWrites):
// a read tried right after the write would find nothing, a system call
// wasted per request.
type gatewayConn struct {
	net.Conn
	raw *rawconn.Conn // Conn itself when its reads and writes are raw; nil otherwise
	// Set by roundTrip while an exchange uses the connection; only the
	// goroutine serving that exchange reads and writes them.
	ex             *exchange
	headerDeadline time.Time // zero once the headers are in
	deadline       time.Time // the read deadline last set
	// silentSince is when the gateway last sent something, as far as the
	// looks at the client tell (zero: it sent something since the last
	// look); past Config.StreamIdleTimeout of it, a body read fails.
	silentSince time.Time
}

// newGatewayConn returns c, a new connection to a gateway, as a gatewayConn.
func newGatewayConn(c net.Conn) *gatewayConn {
	gc := &gatewayConn{Conn: rawconn.Wrap(c)}
	gc.raw, _ = gc.Conn.(*rawconn.Conn)
	return gc
}

// holdRequest makes the request about to be written wait for the read of
// its answer (see gatewayConn).
func (c *gatewayConn) holdRequest() {
	if c.raw != nil {
		c.raw.HoldWrites()
	}
}

// setCheckDeadline sets the read deadline for the next look at the client
// (or the response header deadline) from now. A deadline set by an earlier
// request that is at least half an interval away and not past the new one
// is kept: on a busy connection, resetting it for every request (a timer
// change each) would cost more than the look it schedules.
func (c *gatewayConn) setCheckDeadline(now time.Time) error {
	next := nextCheck(now, c.headerDeadline)
	if !c.deadline.Before(now.Add(clientCheckInterval/2)) && !c.deadline.After(next) {
		return nil
	}
	c.deadline = next
	return c.Conn.SetReadDeadline(next)
}

// gatewayConnOf returns the gatewayConn under conn (which is one, or a TLS
// connection over one).
func gatewayConnOf(conn net.Conn) *gatewayConn {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	gc, _ := conn.(*gatewayConn)
	return gc
}

func (c *gatewayConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 && !c.silentSince.IsZero() {
			c.silentSince = time.Time{}
		}
		if err == nil || c.ex == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		now := time.Now()
		if !c.headerDeadline.IsZero() && !now.Before(c.headerDeadline) {
			return n, err // the response header timeout
		}
		if c.headerDeadline.IsZero() {
			// The answer has begun: its silence is bounded instead.
			if c.silentSince.IsZero() {
				c.silentSince = now.Add(-clientCheckInterval) // about when the last look found bytes
			} else if idle := c.ex.b.cfg.StreamIdleTimeout; idle > 0 && now.Sub(c.silentSince) >= idle {
				return n, errStreamIdle
			}
		}
		if c.ex.clientGone() {
			return n, errClientGone
		}
		if err := c.setCheckDeadline(now); err != nil {
			return n, err
		}
	}
}

// release detaches the exchange before the connection goes back to the
// pool (or is closed). A nil c is a connection the balancer did not dial.
func (c *gatewayConn) release() {
	if c != nil {
		c.ex, c.silentSince = nil, time.Time{}
	}
}

// SyscallConn gives peerClosed the socket.
func (c *gatewayConn) SyscallConn() (syscall.RawConn, error) { return syscallConnOf(c.Conn) }

// upstreamBody is a gateway's response body as the server copies it to
// the client, when it did not come whole with the headers. Close returns
// the connection to the pool when the body was read to its end, closes it
// otherwise, and ends the exchange (see exchange.end), so that in-flight
// counts and durations include the copy of the body. It lives in the
// exchange: no allocation of its own.
type upstreamBody struct {
	hc      *fasthttp.HostClient
	br      *bufio.Reader
	gc      *gatewayConn
	src     io.Reader
	size    int64 // the Content-Length, when known
	read    int64
	chunked bool
	release func(reuse bool) // returns or closes the connection
	keep    bool             // the connection may be reused after the body
	eof     bool
	ex      *exchange
}

func (u *upstreamBody) Read(p []byte) (int, error) {
	if u.eof {
		// Past the end (and the trailer): nothing more is this body's.
		return 0, io.EOF
	}
	n, err := u.src.Read(p)
	u.read += int64(n)
	if errors.Is(err, io.EOF) {
		switch {
		case u.chunked:
			// The trailer section (dropped, like every trailer) ends with
			// an empty line.
			err = skipTrailer(u.br)
		case u.size > 0 && u.read < u.size:
			err = io.ErrUnexpectedEOF
		}
		if err == nil {
			err = io.EOF
		}
		u.eof = err == io.EOF
	}
	return n, err
}

// skipTrailer reads a chunked body's trailer section up to its end.
func skipTrailer(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return nil
		}
	}
}

// Close implements io.Closer; the server calls it once the body is
// written or the write failed.
func (u *upstreamBody) Close() error {
	if u.ex == nil {
		return nil
	}
	ex := u.ex
	u.ex = nil
	u.hc.ReleaseReader(u.br)
	u.gc.release()
	u.release(u.eof && u.keep)
	ex.bodyBytes = u.read
	ex.end()
	return nil
}

// isStale reports whether a pooled connection, last used at last, was
// closed by the gateway by now. Fresh connections and ones idle for less
// than staleCheckAfter are not checked.
func isStale(conn net.Conn, now, created, last time.Time) bool {
	return last.After(created) && now.Sub(last) > staleCheckAfter && peerClosed(conn)
}

// peerClosed reports whether the other end closed (or reset) conn: a
// non-blocking peek reads EOF or an error. A connection that cannot be
// checked (TLS) is taken as open.
func peerClosed(conn net.Conn) bool {
	if s, ok := conn.(interface{ gone() bool }); ok {
		return s.gone() // an HTTP/2 stream (h2.go)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	// Control, not Read: Read fails at once when the connection's read
	// deadline has passed, which for a pooled connection it usually has.
	_ = rc.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && err == nil || err != nil && !errors.Is(err, syscall.EAGAIN)
	})
	return closed
}
