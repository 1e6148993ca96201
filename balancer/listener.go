package balancer

import (
	"errors"
	"log/slog"
	"net"
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
	h2     *h2Server    // h2c with prior knowledge (clientConn.h2)
}

// maxAcceptPause caps the pause between two failed accepts.
const maxAcceptPause = time.Second

func (l patientListener) Accept() (net.Conn, error) {
	c, slot, err := l.acceptLimited()
	if err != nil {
		return c, err
	}
	return &clientConn{Conn: rawconn.Wrap(c), slot: slot, h2: l.h2}, nil
}

// acceptEach gives each connection l accepts, with its slot, to handle,
// until l is closed (nil) or fails for good (the error).
func acceptEach(l patientListener, handle func(net.Conn, *connSlot)) error {
	for {
		c, slot, err := l.acceptLimited()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		handle(c, slot)
	}
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
