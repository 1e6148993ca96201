package platform

import (
	"net"
	"sync"
)

// killableListener is a gateway's listener that can be killed as a
// process is by SIGKILL: at once, its port (and its Unix socket, see
// GatewaySockets) refuses connections and every connection it accepted is
// reset (a Unix socket connection is closed: it has no reset), with no
// response to requests in flight.
// The server behind it is not told: Accept just blocks until the server
// itself closes the listener at shutdown.
type killableListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	killed chan struct{} // closed by kill
	closed chan struct{} // closed by Close
	once   sync.Once
	closer sync.Once
}

func newKillableListener(ln net.Listener) *killableListener {
	return &killableListener{Listener: ln, conns: map[net.Conn]struct{}{}, killed: make(chan struct{}), closed: make(chan struct{})}
}

// Accept accepts as the listener does, and after kill blocks until Close:
// an error would make the server fail, and a dead process serves nothing
// but does not fail either.
func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		select {
		case <-l.killed:
			<-l.closed
			return nil, net.ErrClosed
		default:
			return nil, err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.killed:
		reset(c)
		return nil, net.ErrClosed
	default:
	}
	l.conns[c] = struct{}{}
	return &trackedConn{Conn: c, l: l}, nil
}

// Close closes the listener (the server's shutdown). After kill it has
// nothing left to close, which is no error.
func (l *killableListener) Close() error {
	l.closer.Do(func() { close(l.closed) })
	select {
	case <-l.killed:
		return nil
	default:
		return l.Listener.Close()
	}
}

// kill closes the port and resets every open connection.
func (l *killableListener) kill() {
	l.once.Do(func() {
		l.mu.Lock()
		close(l.killed)
		for c := range l.conns {
			reset(c)
		}
		l.conns = map[net.Conn]struct{}{}
		l.mu.Unlock()
		l.Listener.Close()
	})
}

// reset closes c with a TCP RST, as the kernel does for a killed
// process's sockets that still hold unread data.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// trackedConn forgets itself in its listener when closed.
type trackedConn struct {
	net.Conn
	l *killableListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
