package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"runtime"
	"sync"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
	"github.com/valyala/fasthttp"
)

// serveGnet serves on addr with the event-loop core, one loop per P.
func serveGnet(addr string, backends []*net.TCPAddr) error {
	p := &proxy{loops: map[gnet.EventLoop]*loop{}}
	for _, b := range backends {
		p.backends = append(p.backends, b)
		p.hosts = append(p.hosts, b.String())
	}
	return gnet.Run(p, "tcp://"+addr,
		gnet.WithMulticore(true),
		gnet.WithLogLevel(logging.WarnLevel),
		gnet.WithNumEventLoop(runtime.GOMAXPROCS(0)),
		gnet.WithReuseAddr(true), // bind despite the TIME_WAIT sockets of an earlier run
		gnet.WithTCPNoDelay(gnet.TCPNoDelay))
}

// proxy is the event handler of every connection, client or gateway.
type proxy struct {
	gnet.BuiltinEventEngine
	backends []net.Addr
	hosts    []string // the backends' host:port, the Host header they get
	mu       sync.Mutex
	loops    map[gnet.EventLoop]*loop
}

// loop is one event loop's state; only that loop's thread touches it.
type loop struct {
	idle  [][]gnet.Conn // idle gateway connections, per backend
	next  int           // round robin
	reqH  fasthttp.RequestHeader
	respH fasthttp.ResponseHeader
	src   bytes.Reader
	br    *bufio.Reader
	out   []byte // the request or answer being written
}

// header is a fasthttp request or response header.
type header interface {
	Reset()
	Read(*bufio.Reader) error
}

// parse parses head, a whole header block, into h with the loop's reader.
func (l *loop) parse(head []byte, h header) error {
	h.Reset()
	l.src.Reset(head)
	l.br.Reset(&l.src)
	return h.Read(l.br)
}

// client is a client connection's state.
type client struct {
	l         *loop
	ip        []byte
	busy      bool      // a request is at a gateway
	gateway   gnet.Conn // the gateway connection carrying it, once there is one
	requestID string
	head      bool // the request is a HEAD: no body in the answer
	close     bool // the client asked for Connection: close
}

// gateway is a gateway connection's state.
type gateway struct {
	backend int
	client  gnet.Conn // the client whose request it carries; nil when idle
	pending []byte    // a first request, sent once the connection is up
}

// loopOf returns the state of event loop el, made at its first connection.
func (p *proxy) loopOf(el gnet.EventLoop) *loop {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.loops[el]
	if l == nil {
		l = &loop{idle: make([][]gnet.Conn, len(p.backends)), br: bufio.NewReaderSize(nil, 4096)}
		p.loops[el] = l
	}
	return l
}

// OnOpen sends a new gateway connection its first request, or sets up a
// client connection.
func (p *proxy) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if g, ok := c.Context().(*gateway); ok {
		if g.client == nil {
			return nil, gnet.Close // its client left while it dialed
		}
		g.client.Context().(*client).gateway = c
		out := g.pending
		g.pending = nil
		return out, gnet.None
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	c.SetContext(&client{l: p.loopOf(c.EventLoop()), ip: []byte(host)})
	return nil, gnet.None
}

// OnTraffic reads what came on a connection.
func (p *proxy) OnTraffic(c gnet.Conn) gnet.Action {
	switch st := c.Context().(type) {
	case *client:
		return p.fromClient(c, st)
	case *gateway:
		return p.fromGateway(c, st)
	}
	return gnet.Close
}

// OnClose fails the exchange a closing gateway connection carried, and
// forgets an idle one. A client that leaves while its request is at a
// gateway takes the gateway connection with it: the answer is nobody's.
func (p *proxy) OnClose(c gnet.Conn, _ error) gnet.Action {
	g, ok := c.Context().(*gateway)
	if !ok {
		if cl, ok := c.Context().(*client); ok && cl.busy && cl.gateway != nil {
			cl.gateway.Context().(*gateway).client = nil
			_ = cl.gateway.Close()
		}
		return gnet.None
	}
	if g.client != nil {
		cl := g.client.Context().(*client)
		cl.busy, cl.gateway = false, nil
		writeBadGateway(g.client, cl)
		return gnet.None
	}
	l := p.loopOf(c.EventLoop())
	idle := l.idle[g.backend]
	for i, ic := range idle {
		if ic == c {
			l.idle[g.backend] = append(idle[:i], idle[i+1:]...)
			break
		}
	}
	return gnet.None
}

var headEnd = []byte("\r\n\r\n")

// fromClient reads one request, rewrites it and sends it to a gateway.
// Requests that come while one is at a gateway wait in the connection's
// buffer (a pipelining client gets its answers in order).
func (p *proxy) fromClient(c gnet.Conn, cl *client) gnet.Action {
	if cl.busy {
		return gnet.None
	}
	buf, _ := c.Peek(-1)
	end := bytes.Index(buf, headEnd)
	if end < 0 {
		if len(buf) > 64<<10 {
			return gnet.Close
		}
		return gnet.None
	}
	l := cl.l
	h := &l.reqH
	if err := l.parse(buf[:end+4], h); err != nil {
		return gnet.Close
	}
	size := h.ContentLength()
	switch size {
	case -2:
		size = 0 // no Content-Length: no body
	case -1:
		return gnet.Close // chunked request bodies: not in this experiment
	}
	total := end + 4 + size
	if len(buf) < total {
		return gnet.None
	}
	cl.requestID = rand.Text()
	cl.head = h.IsHead()
	cl.close = h.ConnectionClose()
	prepare(h, cl.ip, cl.requestID)
	b := l.next % len(p.backends)
	l.next++
	h.SetHost(p.hosts[b])
	out := h.AppendBytes(l.out[:0])
	out = append(out, buf[end+4:total]...)
	l.out = out
	_, _ = c.Discard(total)
	cl.busy = true
	if n := len(l.idle[b]); n > 0 {
		gc := l.idle[b][n-1]
		l.idle[b] = l.idle[b][:n-1]
		gc.Context().(*gateway).client = c
		cl.gateway = gc
		_, _ = gc.Write(out)
		return gnet.None
	}
	p.dial(c, cl, &gateway{backend: b, client: c, pending: bytes.Clone(out)})
	return gnet.None
}

// dial connects a new gateway connection on the client's event loop; its
// OnOpen sends the request. A failed dial answers 502, on the loop.
func (p *proxy) dial(c gnet.Conn, cl *client, g *gateway) {
	el := c.EventLoop()
	fail := func(context.Context) error {
		if g.client != nil {
			cl.busy, g.client = false, nil
			writeBadGateway(c, cl)
		}
		return nil
	}
	res, err := el.Register(gnet.NewContext(context.Background(), g), p.backends[g.backend])
	if err != nil {
		_ = fail(nil)
		return
	}
	go func() {
		r := <-res
		if r.Err != nil {
			_ = el.Execute(context.Background(), gnet.RunnableFunc(fail))
		}
	}()
}

// fromGateway reads an answer and passes it to its client, once whole.
func (p *proxy) fromGateway(gc gnet.Conn, g *gateway) gnet.Action {
	if g.client == nil {
		return gnet.Close // an idle connection has nothing to say
	}
	buf, _ := gc.Peek(-1)
	end := bytes.Index(buf, headEnd)
	if end < 0 {
		return gnet.None
	}
	c := g.client
	cl := c.Context().(*client)
	l := cl.l
	h := &l.respH
	if err := l.parse(buf[:end+4], h); err != nil {
		return gnet.Close
	}
	size := h.ContentLength()
	status := h.StatusCode()
	if cl.head || status < 200 || status == 204 || status == 304 {
		size = 0
	}
	if size < 0 {
		return gnet.Close // chunked or close-delimited: not in this experiment
	}
	total := end + 4 + size
	if len(buf) < total {
		return gnet.None
	}
	reuse := !h.ConnectionClose()
	prepareResponse(h, cl.requestID, cl.close)
	out := h.AppendBytes(l.out[:0])
	out = append(out, buf[end+4:total]...)
	l.out = out
	_, _ = gc.Discard(total)
	g.client, cl.gateway = nil, nil
	if reuse {
		l.idle[g.backend] = append(l.idle[g.backend], gc)
	}
	cl.busy = false
	_, _ = c.Write(out)
	if cl.close {
		_ = c.Close()
	} else if c.InboundBuffered() > 0 {
		p.fromClient(c, cl)
	}
	if !reuse {
		return gnet.Close
	}
	return gnet.None
}

// writeBadGateway answers a request no gateway answered.
func writeBadGateway(c gnet.Conn, cl *client) {
	_, _ = c.Write(fmt.Appendf(nil, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Request-Id: %s\r\n\r\n%s",
		len(badGatewayBody), cl.requestID, badGatewayBody))
}
