package rawconn

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// maxRW caps one system call's length, as internal/poll does: some
// kernels fail larger ones.
const maxRW = 1 << 30

// Wrap returns c with raw reads and writes when it is a socket (TCP or
// Unix), and c itself otherwise.
func Wrap(c net.Conn) net.Conn {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return c
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return c
	}
	return &Conn{Conn: c, rc: rc}
}

// read reads like net.Conn's Read: some bytes, io.EOF at the end, or an
// error; it waits in the netpoller while nothing is there.
func (c *Conn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		var again bool
		n, again, errno = readOnce(fd, p)
		return !again // wait until readable
	})
	return c.readResult(n, errno, err)
}

// write writes all of p, waiting in the netpoller whenever the socket's
// buffer is full, like net.Conn's Write.
func (c *Conn) write(p []byte) (int, error) {
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		var again bool
		again, errno = writeAll(fd, p, &n)
		return !again // wait until writable
	})
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case errno != 0:
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// writeRead sends w and then reads the answer into p. It saves the read
// that write followed by read would try first, which finds nothing (the
// peer has not answered yet): the readiness wait is armed before w is
// sent, so the answer cannot slip past it, and the socket is read only once
// the netpoller says the answer is there.
//
// It returns how much of w was sent (all of it unless err is not nil), n
// and err as read's.
func (c *Conn) writeRead(w, p []byte) (sent, n int, err error) {
	if len(p) == 0 {
		sent, err = c.write(w)
		return sent, 0, err
	}
	var (
		errno   syscall.Errno
		wrote   bool
		blocked bool // the socket's send buffer filled up
	)
	rerr := c.rc.Read(func(fd uintptr) bool {
		if !wrote {
			blocked, errno = writeAll(fd, w, &sent)
			if blocked || errno != 0 {
				return true
			}
			wrote = true
			return false // wait for the answer: it cannot be there yet
		}
		var again bool
		n, again, errno = readOnce(fd, p)
		return !again // woken early: wait again
	})
	switch {
	case rerr != nil && !wrote:
		return sent, 0, c.opError("write", rerr)
	case blocked:
		// More than the send buffer takes: the rest goes the usual way,
		// waiting for room, and the answer after it.
		m, err := c.write(w[sent:])
		sent += m
		if err != nil {
			return sent, 0, err
		}
		n, err = c.read(p)
		return sent, n, err
	case errno != 0 && !wrote:
		return sent, 0, c.opError("write", os.NewSyscallError("write", errno))
	}
	n, err = c.readResult(n, errno, rerr)
	return sent, n, err
}

// readResult turns the outcome of a raw read into read's results: the
// netpoller's error, the call's, io.EOF for an orderly close, or n.
func (c *Conn) readResult(n int, errno syscall.Errno, err error) (int, error) {
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readOnce reads from the socket fd into p (not empty) with one raw call,
// retried on EINTR. again reports EAGAIN: nothing there yet.
func readOnce(fd uintptr, p []byte) (n int, again bool, errno syscall.Errno) {
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			return int(r), false, 0
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, true, 0
		}
		return 0, false, e
	}
}

// writeAll writes p[*sent:] to the socket fd with raw calls, advancing
// *sent, until all of p is written, the socket's buffer is full (again)
// or a call fails (errno).
func writeAll(fd uintptr, p []byte, sent *int) (again bool, errno syscall.Errno) {
	for *sent < len(p) {
		chunk := min(len(p)-*sent, maxRW)
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[*sent])), uintptr(chunk))
		switch e {
		case 0:
			*sent += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true, 0
		default:
			return false, e
		}
	}
	return false, 0
}
