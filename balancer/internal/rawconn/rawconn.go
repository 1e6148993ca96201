package rawconn

import (
	"errors"
	"net"
	"syscall"
)

// maxHeld bounds what a Conn holds after HoldWrites: past it (a large
// body) what is held and what follows are sent as they are written.
const maxHeld = 64 << 10

// Conn is a connection whose Read and Write are raw system calls (see the
// package doc); the rest is the wrapped connection's. Like a *net.TCPConn,
// it may be read, written and closed from different goroutines at once, up
// to the first HoldWrites: from then on, reads and writes are for one
// goroutine at a time.
type Conn struct {
	net.Conn
	rc      syscall.RawConn
	holding bool
	held    []byte // written after HoldWrites, not sent yet
}

// HoldWrites makes the writes that follow wait for the next Read, which
// sends them and then waits for the answer without trying a read first.
// Writes past maxHeld bytes in all are sent as they come. Held bytes that
// no Read sent are dropped by Close: an abandoned request is better unsent.
//
// Use it only for a request whose peer sends nothing before it has the
// request whole, as an HTTP server on a keep-alive connection: the read
// readiness is reset before the request is sent, so bytes that had come
// before (say, a close) are noticed only at the next event on the socket or
// the read deadline.
func (c *Conn) HoldWrites() { c.holding = true }

// Write writes all of p, or holds it after HoldWrites (see there).
func (c *Conn) Write(p []byte) (int, error) {
	if !c.holding {
		return c.write(p)
	}
	if len(c.held)+len(p) <= maxHeld {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	// Too much to hold: what is held goes first, then p.
	c.holding = false
	if len(c.held) > 0 {
		_, err := c.write(c.held)
		c.held = c.held[:0]
		if err != nil {
			return 0, err
		}
	}
	return c.write(p)
}

// Read reads like net.Conn's Read: some bytes, io.EOF at the end, or an
// error; it waits in the netpoller while nothing is there. It first sends
// what HoldWrites held, and then waits for the answer before reading.
func (c *Conn) Read(p []byte) (int, error) {
	if !c.holding && len(c.held) == 0 {
		// Only looks: a connection that holds nothing may be read and
		// written from two goroutines at once (net/http's server reads in the
		// background while a handler writes).
		return c.read(p)
	}
	c.holding = false
	if len(c.held) == 0 {
		return c.read(p)
	}
	sent, n, err := c.writeRead(c.held, p)
	c.held = c.held[:copy(c.held, c.held[sent:])]
	return n, err
}

// SyscallConn returns the socket, so that code which looks at it (a peek
// for a peer's close) still can.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// opError dresses err, the failure of a read or write on c, the way
// net.Conn's own errors are: a *net.OpError named for op, around an
// *os.SyscallError for an errno (errors.Is finds syscall.ECONNRESET and
// the like through both). An error from the netpoller (deadline, closed
// connection) comes as an OpError already, named after the raw call; it is
// renamed.
func (c *Conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		renamed := *oe
		renamed.Op = op
		return &renamed
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
