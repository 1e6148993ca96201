package platform

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"
)

// GatewaySockets gives each gateway of `up` a second listener, an abstract
// Unix socket (it replaces each of gwLns, in place, with one that accepts
// on both), and returns the dialer that takes the balancer there instead
// of to the gateway's TCP port: the same HTTP requests over the same kind of
// byte stream, without the loopback TCP/IP stack (and the host's packet
// filter) that each request and response otherwise crosses. Under load
// those crossings were about a third of `up`'s CPU time per cached request
// (see bench/README.md).
//
// The TCP ports stay: they are what a client, a test or another balancer
// reaches a gateway at, and the balancer still names its gateways by them.
// Where abstract sockets do not exist (not Linux), GatewaySockets changes
// nothing and returns a nil dialer: the balancer dials TCP as it would as
// its own process. Where one cannot be bound, it does the same and also
// returns why, for the log.
//
// An abstract socket has no file and no permissions: any process on the
// host (in the same network namespace) can connect to it, exactly as to the
// gateway's 127.0.0.1 port, which it otherwise is.
//
// Exported for bench/backend -front, which puts the same front door in
// front of trivial servers.
func GatewaySockets(gwLns []net.Listener) (dial func(ctx context.Context, addr string) (net.Conn, error), err error) {
	if runtime.GOOS != "linux" || len(gwLns) == 0 {
		return nil, nil
	}
	var tag [8]byte
	if _, err := rand.Read(tag[:]); err != nil {
		return nil, err
	}
	names := make(map[string]string, len(gwLns))
	unix := make([]net.Listener, 0, len(gwLns))
	for i, ln := range gwLns {
		// A random tag, so that two `up`s on one host never share a name.
		name := fmt.Sprintf("@scalelab-%s-gateway-%d", hex.EncodeToString(tag[:]), i+1)
		u, err := net.Listen("unix", name)
		if err != nil {
			closeAll(unix)
			return nil, fmt.Errorf("gateway %s: unix socket: %w", ln.Addr(), err)
		}
		unix = append(unix, u)
		names[ln.Addr().String()] = name
	}
	for i, ln := range gwLns {
		gwLns[i] = newMergedListener(ln, unix[i])
	}
	tcp := &net.Dialer{KeepAlive: 30 * time.Second}
	var unixDialer net.Dialer
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if name, ok := names[addr]; ok {
			return unixDialer.DialContext(ctx, "unix", name)
		}
		return tcp.DialContext(ctx, "tcp", addr)
	}, nil
}

// mergedListener accepts on a gateway's TCP listener and its Unix socket
// alike, so that one server serves both. Its address is the TCP one.
type mergedListener struct {
	tcp      net.Listener
	unix     net.Listener
	accepted chan accepted
	closed   chan struct{}
	once     sync.Once
	err      error // of the first Close
}

// accepted is the outcome of one Accept of either listener.
type accepted struct {
	conn net.Conn
	err  error
}

func newMergedListener(tcp, unix net.Listener) *mergedListener {
	m := &mergedListener{tcp: tcp, unix: unix, accepted: make(chan accepted), closed: make(chan struct{})}
	go m.acceptFrom(tcp, false)
	go m.acceptFrom(unix, true)
	return m
}

// acceptFrom hands ln's connections (and errors, which the server decides
// about) to Accept until ln is closed.
func (m *mergedListener) acceptFrom(ln net.Listener, unix bool) {
	for {
		c, err := ln.Accept()
		if c != nil && unix {
			c = loopbackConn{c}
		}
		select {
		case m.accepted <- accepted{c, err}:
		case <-m.closed:
			if c != nil {
				c.Close()
			}
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// Accept returns the next connection of either listener.
func (m *mergedListener) Accept() (net.Conn, error) {
	select {
	case a := <-m.accepted:
		return a.conn, a.err
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

// Close closes both listeners.
func (m *mergedListener) Close() error {
	m.once.Do(func() {
		close(m.closed)
		m.err = errors.Join(m.tcp.Close(), m.unix.Close())
	})
	return m.err
}

// Addr is the TCP listener's address: the gateway's name.
func (m *mergedListener) Addr() net.Addr { return m.tcp.Addr() }

// loopbackConn is a connection accepted on a gateway's Unix socket. Its
// peer is the balancer of the same process, so it reports a loopback
// address, as the balancer's TCP connection would: `up`'s gateways trust
// the X-Forwarded-For of loopback peers (Config.roles sets their
// TrustedProxies; the balancer sets the header), and a Unix peer's empty
// address would put every client under one rate limit.
type loopbackConn struct{ net.Conn }

// RemoteAddr is 127.0.0.1, port 0.
func (loopbackConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
