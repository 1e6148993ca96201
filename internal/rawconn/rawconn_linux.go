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
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			}
			n, errno = int(r), e
			return true
		}
	})
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

// write writes all of p, waiting in the netpoller whenever the socket's
// buffer is full, like net.Conn's Write.
func (c *Conn) write(p []byte) (int, error) {
	var (
		n     int
		errno syscall.Errno
	)
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			chunk := min(len(p)-n, maxRW)
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[n])), uintptr(chunk))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until writable
			default:
				errno = e
				return true
			}
		}
		return true
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
	if len(p) > maxRW {
		p = p[:maxRW]
	}
	var (
		errno   syscall.Errno
		wrote   bool
		blocked bool // the socket's send buffer filled up
	)
	rerr := c.rc.Read(func(fd uintptr) bool {
		if !wrote {
			for sent < len(w) {
				chunk := min(len(w)-sent, maxRW)
				r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w[sent])), uintptr(chunk))
				switch e {
				case 0:
					sent += int(r)
				case syscall.EINTR:
				case syscall.EAGAIN:
					blocked = true
					return true
				default:
					errno = e
					return true
				}
			}
			wrote = true
			return false // wait for the answer: it cannot be there yet
		}
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // woken early: wait again
			}
			n, errno = int(r), e
			return true
		}
	})
	switch {
	case rerr != nil && !wrote:
		return sent, 0, c.opError("write", rerr)
	case rerr != nil:
		return sent, 0, c.opError("read", rerr)
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
	case errno != 0:
		return sent, 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return sent, 0, io.EOF
	}
	return sent, n, nil
}
