// Package rawconn makes a socket's reads and writes plain non-blocking
// system calls that the Go scheduler does not hear about, and lets a
// request-answer protocol send a message and wait for its answer without
// the read that would find nothing.
//
// Why raw calls: net.Conn's Read and Write enter the kernel through
// syscall.Syscall, which tells the scheduler that a system call began. When
// one takes longer than the scheduler monitor's tick (20 µs), the monitor
// hands the goroutine's processor to another thread (a futex wake-up), the
// thread back from the call must get a processor again or sleep (another),
// and the monitor itself keeps waking every 20 µs for as long as it finds
// such calls. A loopback write runs the receiver's side of TCP too, and on
// a virtual machine a system call is slow, so under proxy load most writes
// outlast the tick: perf put about a tenth of the balancer's CPU in the
// monitor's sleeps and those hand-offs (bench/README.md). The socket is
// non-blocking, so no call can block; like the runtime's own netpoller
// calls they can be made raw, and the processor stays with the goroutine
// for the microseconds the call takes. Waiting for a socket to become
// readable or writable still parks the goroutine in the netpoller, with
// deadlines, as net.Conn does.
//
// Why held writes: a proxy writes a request and then reads its answer.
// The read right after the write nearly always finds nothing (the server
// has not answered yet), fails with EAGAIN and only then waits: a system
// call wasted per request. After HoldWrites, writes are kept until the next
// Read, which sends them and waits for the answer in one go (see
// Conn.writeRead).
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
