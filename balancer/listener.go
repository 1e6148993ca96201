package balancer

import (
	"errors"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/scalelab/scalelab/internal/rawconn"
)

// patientListener retries Accept on errors that pass, as net/http's server
// does. fasthttp's Serve returns on the first Accept error it does not
// know as temporary, and running out of file descriptors (EMFILE, ENFILE)
// is one: under a connection flood the balancer would stop for good,
// where it should wait for connections to close and go on.
type patientListener struct {
	net.Listener
	log *slog.Logger
}

// maxAcceptPause caps the pause between two failed accepts.
const maxAcceptPause = time.Second

func (l patientListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return rawconn.Wrap(c), nil
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
