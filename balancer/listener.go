package balancer

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/scalelab/scalelab/balancer/internal/rawconn"
)

// patientListener retries Accept on errors that pass, as net/http's server
// does. fasthttp's Serve returns on the first Accept error it does not
// know as temporary, and running out of file descriptors (EMFILE, ENFILE)
// is one: under a connection flood the balancer would stop for good,
// where it should wait for connections to close and go on.
type patientListener struct {
	net.Listener
	log    *slog.Logger
	limits *connLimiter // nil: no caps on client connections
}

// maxAcceptPause caps the pause between two failed accepts.
const maxAcceptPause = time.Second

func (l patientListener) Accept() (net.Conn, error) {
	c, slot, err := l.acceptLimited()
	if err != nil {
		return c, err
	}
	return &clientConn{Conn: rawconn.Wrap(c), slot: slot}, nil
}

// acceptLimited is acceptRaw under the caps on client connections
// (Config.MaxConns, Config.MaxConnsPerIP): a connection over one is closed
// at once, unread, and the next one accepted. The slot goes with the
// connection and must be released when it closes.
func (l patientListener) acceptLimited() (net.Conn, *connSlot, error) {
	for {
		c, err := l.acceptRaw()
		if err != nil {
			return c, nil, err
		}
		slot, ok := l.limits.acquire(remoteIP(c))
		if ok {
			return c, slot, nil
		}
		l.log.Debug("connection refused: too many client connections", "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
}

// acceptRaw is Accept without the wrapping: the connection as the
// listener gave it.
func (l patientListener) acceptRaw() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return c, nil
		}
		if !passing(err) {
			return c, err
		}
		pause = min(max(2*pause, 5*time.Millisecond), maxAcceptPause)
		l.log.Warn("accept failed; retrying", "err", err, "in", pause)
		time.Sleep(pause)
	}
}

// passing reports whether an Accept error can go away by itself: out of
// file descriptors or buffers, or a connection aborted before it was
// accepted.
func passing(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
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
}

// Read reads what the client sent, up to the first byte of a request
// whose framing is refused; the read after returns errFraming, which
// fasthttp's server answers with 400 (handleBadRequest). When that byte
// begins its request, it is let through, so that the server has begun
// reading the request (and answers it) rather than taking the connection
// as closed between two requests.
func (c *clientConn) Read(p []byte) (int, error) {
	if c.frErr != nil {
		return 0, c.frErr
	}
	n, err := c.Conn.Read(p)
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
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}
