package balancer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/balancer/internal/rawconn"
)

// This file moves connections from the event loops (front) to goroutines:
// client connections to the goroutine engine, and the two connections of
// an answer that is streamed. A connection leaves a loop as a copy of its
// socket (dup), with the bytes the loop had read and not used; the loop
// then closes its own copy, which closes nothing while the other is open.

// handoffListener is the goroutine engine's listener when the event loops
// accept: it yields the client connections they hand over.
type handoffListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	// h2 takes over the connections that begin with the HTTP/2 preface
	// (clientConn.h2).
	h2 *h2Server
}

// newHandoffListener returns a listener that says it listens on addr.
func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// give hands c to the goroutine engine, or closes it if the engine has
// stopped accepting; slot, c's place under the caps on client connections,
// goes with it. It blocks until one or the other: call it from a
// goroutine, never from a loop.
func (h *handoffListener) give(c net.Conn, slot *connSlot) {
	conn := &clientConn{Conn: c, slot: slot, h2: h.h2}
	if _, ok := c.(*replayConn); !ok {
		conn.Conn = rawconn.Wrap(c)
	}
	h.giveConn(conn)
}

// giveConn is give of a connection that is ready to serve as it is (a
// TLS one, from tlsFront).
func (h *handoffListener) giveConn(conn net.Conn) {
	select {
	case h.conns <- conn:
	case <-h.done:
		_ = conn.Close()
	}
}

// Accept returns the next connection handed over.
func (h *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; connections handed over after it are closed.
func (h *handoffListener) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

// Addr returns the address of the listener the loops accept from.
func (h *handoffListener) Addr() net.Addr { return h.addr }

// replayConn is a connection taken off a loop: its reads return first
// what the loop had read and not used.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the socket under c, for clientConn's lingering close.
func (c *replayConn) NetConn() net.Conn {
	if nc, ok := c.Conn.(interface{ NetConn() net.Conn }); ok {
		return nc.NetConn()
	}
	return c.Conn
}

// SyscallConn gives peerClosed the socket.
func (c *replayConn) SyscallConn() (syscall.RawConn, error) { return syscallConnOf(c.Conn) }

// detach copies the socket of c, a connection on a loop, with what the
// loop read of it and did not use; the caller then has the loop close c.
// It runs on c's loop.
func detach(c gnet.Conn) (net.Conn, error) {
	fd, err := c.Dup()
	if err != nil {
		return nil, err
	}
	buf, _ := c.Peek(-1)
	pending := bytes.Clone(buf)
	_, _ = c.Discard(len(buf))
	conn, err := fileConn(fd)
	if err != nil {
		return nil, err
	}
	return &replayConn{Conn: rawconn.Wrap(conn), pending: pending}, nil
}

// fileConn returns the socket fd as a net.Conn, and closes fd.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	return net.FileConn(f)
}

// leave marks lc, whose answer was streamed or which handOff gave away
// already, as off the loop: the loop's close of it is bookkeeping.
func (lc *loopClient) leave() {
	if lc.state == stStreaming {
		lc.to(evHandOff)
	}
}

// takeOff takes lc off its loop, once what was written to it has gone
// (or clientWriteTimeout has passed: the client is then cut off). It runs
// off the loop.
func (f *front) takeOff(lc *loopClient) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
		done bool
	}
	el := lc.l.el
	deadline := time.Now().Add(clientWriteTimeout)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		res := make(chan result, 1)
		err := el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			switch {
			case lc.state == stClosed:
				res <- result{err: errClientGone, done: true}
			case lc.c.OutboundBuffered() > 0 && time.Now().Before(deadline):
				res <- result{}
			case lc.c.OutboundBuffered() > 0:
				lc.leave()
				_ = el.Close(lc.c)
				res <- result{err: errSlowClient, done: true}
			default:
				conn, err := detach(lc.c)
				lc.leave()
				_ = el.Close(lc.c)
				res <- result{conn: conn, err: err, done: true}
			}
			return nil
		}))
		if err != nil {
			return nil, err
		}
		if r := <-res; r.done {
			return r.conn, r.err
		}
		time.Sleep(pause)
	}
}

// stream hands an answer too large to pass on whole, or of unknown
// length, to a goroutine that streams it (see streamAnswer). buf is what
// came of it so far, header included. It runs in fromGateway, whose
// connection the loop then closes.
func (f *front) stream(gc gnet.Conn, g *loopGateway, lc *loopClient, buf []byte) gnet.Action {
	ex := lc.ex
	fd, err := gc.Dup()
	if err != nil {
		return f.brokenAttempt(lc, g, err)
	}
	pending := bytes.Clone(buf)
	_, _ = gc.Discard(len(buf))
	g.lc, g.away = nil, true
	lc.gw = nil
	lc.to(evStream)
	f.streams.Add(1)
	go f.streamAnswer(lc, ex, fd, pending, g.headLen, g.size)
	return gnet.Close
}

// streamAnswer streams an answer to lc: the gateway connection fd, with
// pending, what the loop had read of it (a header of headLen bytes and
// the body's start; size is the body's length, -1 chunked, -2 up to the
// close). It writes as it reads, flushing every read of a body of unknown
// length, so a stream (server-sent events) is not held back and a slow
// client slows its gateway down. The gateway connection is then closed and
// the client connection goes to the goroutine engine.
func (f *front) streamAnswer(lc *loopClient, ex *exchange, fd int, pending []byte, headLen, size int) {
	defer f.streams.Done()
	gw, err := fileConn(fd)
	if err == nil {
		defer gw.Close()
	}
	client, cerr := f.takeOff(lc)
	if cerr != nil {
		lc.slot.release()
		ex.gone = true
		ex.failed(cerr)
		ex.end()
		return
	}
	// From here on the client connection is this goroutine's: its slot is
	// released when it closes, or goes with it to the goroutine engine.
	client = &clientConn{Conn: client, slot: lc.slot}
	if err != nil {
		ex.failed(err)
		_ = client.Close()
		ex.end()
		return
	}
	var h fasthttp.ResponseHeader
	if err := h.Read(bufio.NewReader(bytes.NewReader(pending[:headLen]))); err != nil {
		ex.failed(err) // parsed on the loop already: cannot happen
		_ = client.Close()
		ex.end()
		return
	}
	closing := ex.closeAsked || f.draining.Load() || size == -2 && h.StatusCode() == fasthttp.StatusSwitchingProtocols
	ex.rewriteAnswer(&h, closing)
	if size < 0 {
		h.SetContentLength(-1) // chunked to the client
	}
	// As in the goroutine engine, a read that waits looks whether the
	// client is still there (see gatewayConn): a stream whose client left
	// ends, and its gateway sees the connection close.
	gc := newGatewayConn(gw)
	gc.ex, ex.peer = ex, client
	if err := gc.setCheckDeadline(time.Now()); err != nil {
		ex.failed(err)
		_ = client.Close()
		ex.end()
		return
	}
	src := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(pending[headLen:]), gc), bufferSize)
	n, err := copyAnswer(client, h.AppendBytes(nil), src, size)
	ex.bodyBytes = n
	if err != nil {
		f.b.log.Debug("streaming an answer failed", "upstream", ex.backend.label, "err", err, "request_id", ex.requestID)
		closing = true
	}
	if closing {
		_ = client.Close()
	} else {
		f.slow.give(client.(*clientConn).Conn, lc.slot)
	}
	ex.end()
}

// copyAnswer writes head and then the body read from src to dst: size
// bytes, or when size is negative (-1 chunked, -2 up to the end of src)
// re-chunked, one chunk per read.
func copyAnswer(dst io.Writer, head []byte, src *bufio.Reader, size int) (body int64, err error) {
	if _, err := dst.Write(head); err != nil {
		return 0, err
	}
	if size >= 0 {
		n, err := io.CopyN(dst, src, int64(size))
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, err
	}
	var r io.Reader = src
	if size == -1 {
		r = httputil.NewChunkedReader(src)
	}
	cw := httputil.NewChunkedWriter(dst)
	buf := make([]byte, bufferSize)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := cw.Write(buf[:n]); werr != nil {
				return body, werr
			}
			body += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return body, err
		}
	}
	if size == -1 {
		if err := skipTrailer(src); err != nil {
			return body, err
		}
	}
	if err := cw.Close(); err != nil {
		return body, err
	}
	_, err = io.WriteString(dst, "\r\n")
	return body, err
}
