package balancer

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"
)

// This file is the client side of a connection: loopClient on the event
// loops, whose lifecycle state is one connState (exchange.go), and
// clientConn, the connection the goroutine engine reads.

// loopClient is a client connection on an event loop. Only its loop
// touches it (a goroutine that takes it off the loop does so through
// the loop: see takeOff).
type loopClient struct {
	l  *eventLoop
	c  gnet.Conn
	ip netip.Addr
	// slot is its place under the caps on client connections; it goes
	// with the connection when the connection leaves the loop.
	slot *connSlot
	// state is where the connection is in the lifecycle of its requests;
	// only to changes it.
	state connState
	req   fasthttp.Request // the request being proxied, kept for retries
	// ex is the request being proxied (stPending to stStreaming); gw the
	// gateway connection of its current attempt (stWaiting, stReading),
	// and dialing the one being dialed for it (stDialing).
	ex      *exchange
	gw      gnet.Conn
	dialing *loopGateway
	// since is when the connection last went idle, or when the request
	// now arriving began to, or made progress (stBody), or was blocked.
	since time.Time
	// got is how much of the request arriving was in at the last
	// progress (stBody).
	got int
	// fr, scanned and headLen frame the request arriving (scanHead):
	// the framer's state over its first scanned bytes, and its header
	// block's length once that is all in.
	fr      framer
	scanned int
	headLen int
	// inTraffic is set while fromClient runs for the connection: a
	// request answered within it (a 503, say) must not start fromClient
	// again from inside itself (see resume). It is about the loop's call
	// stack, not the connection's state.
	inTraffic bool
}

// transitionsRefused counts the events an engine sent that could not
// happen in their connection's state (see loopClient.to): bugs, which
// the tests look for.
var transitionsRefused atomic.Int64

// to moves lc to the state that event e leads to (see step). An event
// that cannot happen in lc's state is a bug in the engine: it is logged,
// and the connection is closed rather than left in a state that nothing
// may end.
func (lc *loopClient) to(e connEvent) {
	next, err := step(lc.state, e)
	if err != nil {
		lc.refused(err)
		return
	}
	lc.state = next
}

// refused handles an event that lc's state refused (see to).
func (lc *loopClient) refused(err error) {
	transitionsRefused.Add(1)
	lc.l.f.b.log.Error("client connection lifecycle", "err", err)
	_ = lc.c.Close()
}

// scanHead runs the framer over the bytes of buf, the request arriving,
// that it has not seen yet, and returns the header block's length once it
// is all in (0 before), or errFraming. The framer's state is kept between
// read events, so a header that arrives a byte at a time is scanned once,
// not once per event (which costs quadratic time in the header's length),
// and a body that arrives slowly rescans nothing.
func (lc *loopClient) scanHead(buf []byte) (int, error) {
	if lc.headLen > 0 {
		return lc.headLen, nil
	}
	for i := lc.scanned; i < len(buf); i++ {
		if !lc.fr.step(buf[i]) {
			return 0, errFraming
		}
		if lc.fr.headDone {
			lc.headLen = i + 1
			return lc.headLen, nil
		}
	}
	lc.scanned = len(buf)
	return 0, nil
}

// waitBody records that the body of lc's request is not all in: got
// bytes of the request are. Each byte more is progress, which restarts
// the wait of ClientBodyTimeout.
func (lc *loopClient) waitBody(got int) {
	if lc.state != stBody || got > lc.got {
		lc.to(evHeader)
		lc.got, lc.since = got, time.Now()
	}
}

// clientConn is a client's connection to the balancer. Its reads and
// writes are raw (see balancer/internal/rawconn); its Close lingers after a request
// the balancer refused (see lingerOnClose).
type clientConn struct {
	net.Conn
	linger atomic.Bool
	slot   *connSlot // its place under the caps, released by Close
	// fr follows the framing of the requests read (framing.go); frErr is
	// the first request it refused, which every read after returns.
	fr    framer
	frErr error
	// tunneled is set once the connection is upgraded (upgrade.go): its
	// bytes are another protocol's, read as they come.
	tunneled bool
	// h2, when set, takes the connection over if it begins with the
	// HTTP/2 preface (h2c with prior knowledge; see divertH2C). begun is
	// set at the first read, diverted once h2 has it.
	h2              *h2Server
	begun, diverted bool
}

// Read reads what the client sent, up to the first byte of a request
// whose framing is refused; the read after returns errFraming, which
// fasthttp's server answers with 400 (handleBadRequest). When that byte
// begins its request, it is let through, so that the server has begun
// reading the request (and answers it) rather than taking the connection
// as closed between two requests.
func (c *clientConn) Read(p []byte) (int, error) {
	if c.tunneled {
		return c.Conn.Read(p) // another protocol now: not HTTP's framing
	}
	if c.frErr != nil {
		return 0, c.frErr
	}
	n, err := c.Conn.Read(p)
	if !c.begun && c.h2 != nil && n > 0 {
		c.begun = true
		if n, err = c.divertH2C(p, n, err); c.diverted {
			return 0, io.EOF
		}
	}
	k, first, ferr := c.fr.scan(p[:n])
	if ferr == nil {
		return n, err
	}
	c.frErr = ferr
	if first {
		k++
	}
	if k > 0 {
		return k, nil
	}
	return 0, ferr
}

// lingerOnClose makes the close that follows the answer to a refused
// request (a body over the limit, say) linger: the client may still be
// sending what the balancer did not read, and closing a socket with unread
// bytes makes the kernel answer with a reset, which can destroy the answer
// in the client's buffers before the client reads it. net/http's server
// does the same (its rstAvoidanceDelay).
func (c *clientConn) lingerOnClose() { c.linger.Store(true) }

// lingerClient makes the close of the client connection of ctx linger
// (lingerOnClose), plain or TLS.
func lingerClient(ctx *fasthttp.RequestCtx) {
	if cc, ok := ctx.Conn().(interface{ lingerOnClose() }); ok {
		cc.lingerOnClose()
	}
}

// lingerTimeout and lingerMaxBytes bound how long, and how much of the
// client's request, a lingering close reads and drops.
const (
	lingerTimeout  = 500 * time.Millisecond
	lingerMaxBytes = 2 * maxRequestBody
)

// Close closes the connection; after lingerOnClose, it sends what is
// written and a FIN at once, and closes once the client has stopped
// sending or lingerTimeout has passed, in the background.
func (c *clientConn) Close() error {
	if c.diverted {
		return nil // the HTTP/2 server has the socket and the slot
	}
	c.slot.release()
	if !c.linger.Load() {
		return c.Conn.Close()
	}
	conn := c.Conn
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = nc.NetConn()
	}
	cw, ok := conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || c.Conn.SetReadDeadline(time.Now().Add(lingerTimeout)) != nil {
		return c.Conn.Close()
	}
	go func() {
		_, _ = io.CopyN(io.Discard, c.Conn, lingerMaxBytes)
		_ = c.Conn.Close()
	}()
	return nil
}

// SyscallConn gives peerClosed the socket.
func (c *clientConn) SyscallConn() (syscall.RawConn, error) { return syscallConnOf(c.Conn) }

// syscallConnOf returns the socket under c, which must offer it.
func syscallConnOf(c net.Conn) (syscall.RawConn, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		// A TLS connection: the socket under it.
		if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
			return syscallConnOf(nc.NetConn())
		}
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// tunnelFromNow makes the connection's reads raw: it was upgraded to
// another protocol (upgrade.go).
func (c *clientConn) tunnelFromNow() { c.tunneled = true }
