package balancer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/logging"
)

// front is the balancer's event-loop engine (--engine loop): client
// connections and the connections to the gateways live on event loops, one
// per core, as in an nginx worker, instead of a goroutine per client
// connection. With a goroutine per connection every proxied request parks
// and wakes two goroutines; an event loop takes a batch of ready sockets
// from one epoll_wait and serves them in turn. bench/README.md
// ("2026-11-29") measured the difference: 0.74–0.78× the CPU per request.
//
// The loops serve the common request, and hand the rest to the goroutine
// engine (fasthttp's server, which also serves `/-/`), connection and all:
//
//   - A request the loops take is HTTP/1.1 in origin form, outside /-/,
//     without Upgrade, Expect or a chunked body, and with a body of at most
//     replayLimit bytes. Any other request, or one that does not parse,
//     moves its connection to the goroutine engine for good (see handOff),
//     which answers it as it always did, errors included.
//   - An answer with a body of at most loopBodyLimit bytes is passed on
//     whole by the loop. A larger one, a chunked one (server-sent events)
//     or one delimited by the close of the connection is streamed by a
//     goroutine of its own (see streamAnswer), which writes as it reads, so
//     a slow client slows its gateway down instead of filling memory; the
//     client connection then goes to the goroutine engine.
//
// The loops are I/O: every step of a request's lifecycle (admission, the
// gateway, retries and their budget, health, metrics, the rewriting of
// requests and answers) is the exchange's, shared with the goroutine
// engine (exchange.go), and each client connection moves through one
// connState at a time, by step. Each loop keeps its own idle connections
// to each gateway (upstreamconn.go), so a request never waits for another
// loop.
type front struct {
	gnet.BuiltinEventEngine
	b      *balancer
	engine *gnet.Client
	dialer *net.Dialer
	slow   *handoffListener // the goroutine engine's listener

	mu    sync.Mutex
	loops map[gnet.EventLoop]*eventLoop

	draining atomic.Bool
	clients  atomic.Int64   // client connections on the loops
	streams  sync.WaitGroup // answers being streamed off the loops
	stop     context.CancelFunc
	sweeper  sync.WaitGroup
}

// loopBodyLimit is the largest answer body an event loop passes on whole;
// a larger one is streamed (see front).
const loopBodyLimit = 1 << 20

// Timeouts of client connections, for both engines: keeping an idle
// connection, and waiting for a client to read what it was sent before it
// is cut off. Sending a request is bounded by Config.ClientHeaderTimeout
// and Config.ClientBodyTimeout (slowloris).
const (
	clientIdleTimeout  = 120 * time.Second
	clientWriteTimeout = 30 * time.Second
)

// sweepInterval is how often each loop looks for timeouts: a response
// header timeout fires at most this late.
const sweepInterval = 50 * time.Millisecond

// maxPendingInput bounds what a client may send while its request is at a
// gateway (pipelined requests): the loop cannot stop reading a socket, so
// past this the connection is closed.
const maxPendingInput = maxHeaderBytes + maxRequestBody

// maxPendingOutput bounds what is written to a client and not yet sent
// before its next request is served: a client that sends requests and
// does not read the answers waits (see eventLoop.sweep) instead of having
// every answer buffered for it.
const maxPendingOutput = 4 << 20

// errHeaderTimeout fails an attempt whose gateway did not begin its answer
// within Config.ResponseHeaderTimeout.
var errHeaderTimeout = fmt.Errorf("no response header within the response header timeout: %w", os.ErrDeadlineExceeded)

// errHeaderTooLarge fails an attempt whose gateway sent a header over
// maxAnswerHeaderBytes.
var errHeaderTooLarge = errors.New("the gateway's response header is too large")

// errSlowClient ends an exchange whose client did not read its earlier
// answers within clientWriteTimeout.
var errSlowClient = errors.New("the client does not read its answers")

// eventLoop is one event loop's state. Only that loop touches it.
type eventLoop struct {
	f       *front
	el      gnet.EventLoop
	clients map[*loopClient]struct{}
	idle    map[*backend][]gnet.Conn // idle gateway connections, most recent last
	respH   fasthttp.ResponseHeader  // the answer header being passed on
	errResp fasthttp.Response        // an answer of the balancer's own
	src     bytes.Reader
	br      *bufio.Reader
	out     []byte // what is being written
}

// loopsUsable reports whether the event loops can serve cfg: they speak
// plain HTTP to gateways only.
func loopsUsable(cfg Config) bool {
	if cfg.Engine != EngineLoop || cfg.TLS.Redirect {
		// Redirected plain requests are answered by the handler.
		return false
	}
	for _, raw := range cfg.Backends {
		if u, err := parseBackend(raw); err != nil || u.Scheme != "http" {
			return false
		}
	}
	return true
}

// newFront starts the event loops, one per core; slow is the goroutine
// engine's listener, which gets the connections the loops hand over.
func newFront(b *balancer, slow *handoffListener) (*front, error) {
	f := &front{
		b:      b,
		dialer: &net.Dialer{Timeout: b.cfg.DialTimeout, KeepAlive: 30 * time.Second},
		slow:   slow,
		loops:  map[gnet.EventLoop]*eventLoop{},
	}
	engine, err := gnet.NewClient(f,
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(eventLoops(b.cfg.EventLoops)),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(logging.Printf{Log: b.log}))
	if err != nil {
		return nil, fmt.Errorf("event loops: %w", err)
	}
	if err := engine.Start(); err != nil {
		return nil, fmt.Errorf("start event loops: %w", err)
	}
	f.engine = engine
	ctx, stop := context.WithCancel(context.Background())
	f.stop = stop
	f.sweeper.Go(func() { f.sweepEvery(ctx) })
	return f, nil
}

// eventLoops is the number of loops to start for the configured n.
func eventLoops(n int) int {
	if n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// accept takes the connections of ln onto the loops until ln is closed.
// A connection that is not TCP goes to the goroutine engine.
func (f *front) accept(ln net.Listener) error {
	return acceptEach(patientListener{Listener: ln, log: f.b.log, limits: f.b.limits}, func(c net.Conn, slot *connSlot) {
		tc, ok := c.(*net.TCPConn)
		if !ok || f.draining.Load() {
			go f.slow.give(c, slot)
			return
		}
		// Enroll closes tc: the loop has a copy of the socket.
		if _, err := f.engine.EnrollContext(tc, &loopClient{slot: slot}); err != nil {
			slot.release()
			f.b.log.Warn("an event loop refused a connection", "err", err)
		}
	})
}

// loopOf returns the state of event loop el, made at its first connection.
func (f *front) loopOf(el gnet.EventLoop) *eventLoop {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.loops[el]
	if l == nil {
		l = &eventLoop{
			f: f, el: el,
			clients: map[*loopClient]struct{}{},
			idle:    map[*backend][]gnet.Conn{},
			br:      bufio.NewReaderSize(nil, maxAnswerHeaderBytes),
		}
		f.loops[el] = l
	}
	return l
}

// parse parses head, a whole header block, into h.
func (l *eventLoop) parse(head []byte, h interface{ Read(*bufio.Reader) error }) error {
	l.src.Reset(head)
	l.br.Reset(&l.src)
	return h.Read(l.br)
}

// OnOpen sets up a client connection, or sends a new gateway connection
// the request it was dialed for.
func (f *front) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	switch v := c.Context().(type) {
	case *loopClient:
		l := f.loopOf(c.EventLoop())
		// A new connection has ClientHeaderTimeout to send its first
		// request, as on the goroutine engine.
		v.l, v.c, v.since, v.state = l, c, time.Now(), stHead
		if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			v.ip = a.AddrPort().Addr().Unmap()
		}
		l.clients[v] = struct{}{}
		f.clients.Add(1)
		return nil, gnet.None
	case *loopGateway:
		l := f.loopOf(c.EventLoop())
		lc := v.lc
		if lc == nil {
			// Its client left while it was dialed: it serves the next one.
			if l.park(c, v) {
				return nil, gnet.None
			}
			return nil, gnet.Close
		}
		lc.dialing, lc.gw = nil, c
		lc.to(evSend)
		return l.request(lc), gnet.None
	}
	return nil, gnet.Close
}

// OnTraffic reads what came on a connection.
func (f *front) OnTraffic(c gnet.Conn) gnet.Action {
	switch v := c.Context().(type) {
	case *loopClient:
		return f.fromClient(v)
	case *loopGateway:
		return f.fromGateway(c, v)
	}
	return gnet.Close
}

// OnClose ends what a closed connection was part of.
func (f *front) OnClose(c gnet.Conn, err error) gnet.Action {
	switch v := c.Context().(type) {
	case *loopClient:
		f.clientClosed(v)
	case *loopGateway:
		f.gatewayClosed(c, v, err)
	}
	return gnet.None
}

// headEnd ends a header block.
var headEnd = []byte("\r\n\r\n")

// fromClient reads the requests that came on a client connection and
// proxies them, one at a time: a request that comes while one is at a
// gateway waits in the connection's buffer.
func (f *front) fromClient(lc *loopClient) gnet.Action {
	lc.inTraffic = true
	defer func() { lc.inTraffic = false }()
	c := lc.c
	for {
		if !lc.state.reads() {
			if c.InboundBuffered() > maxPendingInput {
				return gnet.Close
			}
			return gnet.None
		}
		buf, _ := c.Peek(-1)
		if len(buf) == 0 {
			return gnet.None
		}
		if c.OutboundBuffered() > maxPendingOutput {
			if lc.state != stBlocked {
				lc.to(evBacklog)
				lc.since = time.Now()
			}
			return gnet.None
		}
		// The framer finds the header block's end, as the goroutine
		// engine's does (framing.go); a request it refuses goes to the
		// goroutine engine, whose framer refuses it too and answers 400.
		head, ferr := lc.scanHead(buf)
		if ferr != nil {
			return f.handOff(lc)
		}
		if head == 0 {
			if len(buf) > maxHeaderBytes {
				return f.handOff(lc) // the goroutine engine answers 431
			}
			if lc.state != stHead {
				lc.to(evBytes)
				lc.since = time.Now()
			}
			return gnet.None
		}
		if head > maxHeaderBytes {
			return f.handOff(lc) // the goroutine engine answers 431
		}
		req := &lc.req
		req.Reset()
		if err := lc.l.parse(buf[:head], &req.Header); err != nil || !loopTakes(&req.Header) {
			return f.handOff(lc)
		}
		size := req.Header.ContentLength()
		if size < 0 {
			size = 0 // no Content-Length (a chunked body was handed off)
			if !req.Header.IsGet() && !req.Header.IsHead() {
				// As fasthttp's server does: the gateway is told the body
				// is empty.
				req.Header.SetContentLength(0)
			}
		}
		total := head + size
		if size > replayLimit {
			// The goroutine engine streams a large body (see
			// exchange.takeBody). It gets the connection once the body's
			// first replayLimit bytes are in, so that a client that sends
			// a header and stalls costs only the bytes it sent (one over
			// maxRequestBody goes at once: it gets 413).
			total = head + replayLimit
			if len(buf) >= total || size > maxRequestBody {
				return f.handOff(lc)
			}
		}
		if len(buf) < total {
			lc.waitBody(len(buf))
			return gnet.None
		}
		req.SetBody(buf[head:total])
		_, _ = c.Discard(total)
		lc.fr, lc.scanned, lc.headLen = framer{}, 0, 0 // the next request
		f.serve(lc)
	}
}

// loopTakes reports whether an event loop proxies the request with header
// h (see front); the goroutine engine serves any other.
func loopTakes(h *fasthttp.RequestHeader) bool {
	uri := h.RequestURI()
	return len(uri) > 0 && uri[0] == '/' && !bytes.HasPrefix(uri, []byte(opsPrefix+"/")) &&
		h.IsHTTP11() && h.ContentLength() != -1 &&
		len(h.Peek(hdrExpect)) == 0 && len(h.Peek("Upgrade")) == 0
}

// handOff moves a client connection to the goroutine engine, with what it
// sent that was not read. It is called from fromClient, whose connection
// the loop then closes: the engine has its own copy of the socket.
func (f *front) handOff(lc *loopClient) gnet.Action {
	lc.to(evHandOff)
	if lc.c.OutboundBuffered() > 0 {
		// An answer is still being written: the socket can change hands
		// only once it is out.
		go func() {
			if conn, err := f.takeOff(lc); err == nil {
				f.slow.give(conn, lc.slot)
			} else {
				lc.slot.release()
			}
		}()
		return gnet.None
	}
	conn, err := detach(lc.c)
	if err != nil {
		lc.slot.release()
		f.b.log.Warn("could not hand a connection to the goroutine engine", "err", err)
		return gnet.Close
	}
	go f.slow.give(conn, lc.slot)
	return gnet.Close
}

// serve proxies the request in lc.req, which is whole.
func (f *front) serve(lc *loopClient) {
	lc.to(evRequest)
	ex := newExchange(f.b, nil)
	req := &lc.req
	lc.ex = ex
	if !ex.admit(&req.Header) {
		ex.closeAsked = req.Header.ConnectionClose()
		r := lc.l.errorAnswer()
		ex.refusal(r)
		f.answer(lc, r)
		return
	}
	ex.prepare(req, lc.ip, false)
	f.attempt(lc, ex.backend)
}

// attempt sends lc's request to backend bk, over an idle connection of
// the loop's or a new one.
func (f *front) attempt(lc *loopClient, bk *backend) {
	ex, l := lc.ex, lc.l
	start := ex.startAttempt(&lc.req, bk)
	if gc := l.unpark(bk); gc != nil {
		g := gc.Context().(*loopGateway)
		g.lc, g.start = lc, start
		lc.gw = gc
		lc.to(evSend)
		_, _ = gc.Write(l.request(lc)) // a failed write closes gc: see gatewayClosed
		return
	}
	g := &loopGateway{b: bk, lc: lc, start: start}
	lc.dialing = g
	lc.to(evDial)
	f.dial(l, g)
}

// request returns lc's request as it goes to the gateway, and starts the
// wait for its answer.
func (l *eventLoop) request(lc *loopClient) []byte {
	lc.ex.sent(time.Now())
	out := lc.req.Header.AppendBytes(l.out[:0])
	out = append(out, lc.req.Body()...)
	l.out = out
	return out
}

// dial connects to g's backend off the loop, bounded by the dial timeout,
// and enrolls the connection on loop l, whose OnOpen sends the request. A
// failed dial fails the attempt, on the loop.
func (f *front) dial(l *eventLoop, g *loopGateway) {
	addr := g.b.client.Addr
	go func() {
		err := f.dialOnto(l.el, addr, g)
		if err == nil {
			return
		}
		_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			if lc := g.lc; lc != nil {
				lc.dialing = nil
				f.attemptFailed(lc, &dialError{err: err})
				f.resume(lc)
			}
			return nil
		}))
	}()
}

// dialOnto connects to addr and enrolls the connection on el, with g as
// its state.
func (f *front) dialOnto(el gnet.EventLoop, addr string, g *loopGateway) error {
	conn, err := dial(f.dialer, f.b.cfg.Dial, addr)
	if err != nil {
		return err
	}
	switch conn.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		_ = conn.Close()
		return fmt.Errorf("the event loops take TCP and Unix connections, not %T", conn)
	}
	res, err := el.Enroll(gnet.NewContext(context.Background(), g), conn)
	if err != nil {
		_ = conn.Close()
		return err
	}
	return (<-res).Err // enrolled or not, conn itself is closed
}

// fromGateway reads a gateway's answer. One whose body is at most
// loopBodyLimit bytes is passed on once whole; another is streamed.
func (f *front) fromGateway(gc gnet.Conn, g *loopGateway) gnet.Action {
	lc := g.lc
	if lc == nil {
		return gnet.Close // an idle gateway connection has nothing to say
	}
	l, ex := lc.l, lc.ex
	buf, _ := gc.Peek(-1)
	h := &l.respH
	if g.headLen == 0 {
		for {
			end := bytes.Index(buf, headEnd)
			if end < 0 {
				if len(buf) > maxAnswerHeaderBytes {
					return f.brokenAttempt(lc, g, errHeaderTooLarge)
				}
				return gnet.None
			}
			if err := l.parse(buf[:end+4], h); err != nil {
				return f.brokenAttempt(lc, g, fmt.Errorf("read the gateway's answer: %w", err))
			}
			if st := h.StatusCode(); st >= 100 && st < 200 && st != fasthttp.StatusSwitchingProtocols {
				// An interim answer (100 Continue, 103 Early Hints): dropped, as
				// the goroutine engine drops it.
				_, _ = gc.Discard(end + 4)
				buf, _ = gc.Peek(-1) // Discard may have recycled the old buf
				continue
			}
			g.headLen = end + 4
			break
		}
		status := h.StatusCode()
		ex.gotAnswer(g.start, status)
		lc.to(evAnswerHead)
		g.size = h.ContentLength()
		if string(ex.method) == fasthttp.MethodHead || status < 200 ||
			status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified {
			g.size = 0
		}
		if g.size < 0 || g.size > loopBodyLimit || status == fasthttp.StatusSwitchingProtocols {
			return f.stream(gc, g, lc, buf)
		}
	} else if len(buf) >= g.headLen+g.size {
		if err := l.parse(buf[:g.headLen], h); err != nil {
			return f.brokenAttempt(lc, g, err) // parsed before: cannot happen
		}
	}
	total := g.headLen + g.size
	if len(buf) < total {
		return gnet.None
	}
	// The whole answer is in.
	reuse := !h.ConnectionClose() && len(buf) == total
	closing := ex.closeAsked || f.draining.Load()
	ex.rewriteAnswer(h, closing)
	ex.bodyBytes = int64(g.size)
	out := h.AppendBytes(l.out[:0])
	out = append(out, buf[g.headLen:total]...)
	l.out = out
	_, _ = gc.Discard(total)
	g.lc, g.headLen = nil, 0
	f.write(lc, out, closing)
	if reuse && l.park(gc, g) {
		return gnet.None
	}
	return gnet.Close
}

// write writes out, the answer to lc's request, ends the request's
// exchange, and goes on with the connection: it is closed if it must be
// (closing), and its next request, if one is in, is served.
func (f *front) write(lc *loopClient, out []byte, closing bool) {
	ex := lc.ex
	lc.ex, lc.gw, lc.dialing = nil, nil, nil
	// The state changes before the write: a write that fails closes the
	// client at once (see clientClosed), which finds it idle.
	lc.to(evAnswered)
	_, werr := lc.c.Write(out)
	ex.end()
	lc.since = time.Now()
	if werr != nil || lc.state == stClosed {
		return
	}
	if closing {
		f.closeClient(lc)
		return
	}
	f.resume(lc)
}

// resume serves what lc sent while its last request was proxied, unless
// fromClient is running for lc already (it will).
func (f *front) resume(lc *loopClient) {
	if lc.inTraffic || !lc.state.reads() || lc.c.InboundBuffered() == 0 {
		return
	}
	if f.fromClient(lc) == gnet.Close && lc.state != stClosed {
		_ = lc.l.el.Close(lc.c)
	}
}

// closeClient closes lc once what was written to it has gone: closing a
// socket with unsent bytes would lose them.
func (f *front) closeClient(lc *loopClient) {
	lc.to(evClosing)
	if lc.c.OutboundBuffered() == 0 {
		_ = lc.c.Close() // asynchronous: safe from any callback
	}
	// Otherwise the sweep closes it once the bytes are out.
}

// brokenAttempt fails lc's attempt on g, which broke before its answer
// was in; the loop closes g.
func (f *front) brokenAttempt(lc *loopClient, g *loopGateway, err error) gnet.Action {
	g.lc = nil
	lc.gw = nil
	f.attemptFailed(lc, err)
	f.resume(lc)
	return gnet.Close
}

// attemptFailed retries lc's request after a failed attempt, or answers
// it with 502 (the exchange decides: see exchange.attemptFailed).
func (f *front) attemptFailed(lc *loopClient, err error) {
	if next := lc.ex.attemptFailed(err); next != nil {
		f.attempt(lc, next)
		return
	}
	r := lc.l.errorAnswer()
	setError(r, lc.ex.status, apperr.Unavailable, msgBadGateway, lc.ex.requestID)
	f.answer(lc, r)
}

// answer answers lc's request with r, an answer of the balancer's own,
// and ends its exchange.
func (f *front) answer(lc *loopClient, r *fasthttp.Response) {
	closing := lc.ex.closeAsked || f.draining.Load()
	if closing {
		r.SetConnectionClose()
	}
	lc.ex.bodyBytes = int64(len(r.Body()))
	f.write(lc, lc.l.appendAnswer(r), closing)
}

// errorAnswer returns the loop's answer for errors, reset.
func (l *eventLoop) errorAnswer() *fasthttp.Response {
	l.errResp.Reset()
	l.errResp.Header.SetNoDefaultContentType(true)
	return &l.errResp
}

// appendAnswer returns r as it goes to a client, in the loop's buffer.
func (l *eventLoop) appendAnswer(r *fasthttp.Response) []byte {
	r.Header.SetContentLength(len(r.Body()))
	out := r.Header.AppendBytes(l.out[:0])
	out = append(out, r.Body()...)
	l.out = out
	return out
}

// clientClosed ends the exchange of a client that hung up: its gateway
// connection is closed (the answer is nobody's) and the request recorded
// as 499.
func (f *front) clientClosed(lc *loopClient) {
	was := lc.state
	lc.to(evClosed)
	delete(lc.l.clients, lc)
	f.clients.Add(-1)
	if was == stAway || was == stStreaming {
		return // the slot went with the connection
	}
	lc.slot.release()
	ex := lc.ex
	if ex == nil {
		return
	}
	lc.ex = nil
	if g := lc.dialing; g != nil {
		g.lc, lc.dialing = nil, nil
	}
	if gc := lc.gw; gc != nil {
		gc.Context().(*loopGateway).lc = nil
		lc.gw = nil
		_ = lc.l.el.Close(gc)
	}
	ex.abandon()
}

// gatewayClosed fails the attempt a closed gateway connection carried, or
// forgets an idle one.
func (f *front) gatewayClosed(gc gnet.Conn, g *loopGateway, err error) {
	if g.away {
		return
	}
	lc := g.lc
	if lc == nil {
		f.loopOf(gc.EventLoop()).forget(gc, g)
		return
	}
	g.lc, lc.gw = nil, nil
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	f.attemptFailed(lc, fmt.Errorf("the gateway closed the connection: %w", err))
	f.resume(lc)
}

// sweepEvery sweeps every loop every sweepInterval until ctx ends.
func (f *front) sweepEvery(ctx context.Context) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.sweepAll()
	}
}

// sweepAll has every loop sweep itself.
func (f *front) sweepAll() {
	f.mu.Lock()
	loops := make([]*eventLoop, 0, len(f.loops))
	for _, l := range f.loops {
		loops = append(loops, l)
	}
	f.mu.Unlock()
	for _, l := range loops {
		_ = l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			l.sweep(time.Now())
			return nil
		}))
	}
}

// sweep enforces the timeouts of loop l's connections at now and, while
// the balancer drains, closes its idle client connections.
func (l *eventLoop) sweep(now time.Time) {
	f := l.f
	draining := f.draining.Load()
	for lc := range l.clients {
		switch lc.state {
		case stClosing:
			if lc.c.OutboundBuffered() == 0 || now.Sub(lc.since) > clientWriteTimeout {
				_ = l.el.Close(lc.c)
			}
		case stWaiting:
			if d := lc.ex.headerDeadline; !d.IsZero() && now.After(d) {
				if gc := lc.gw; gc != nil {
					gc.Context().(*loopGateway).lc = nil
					lc.gw = nil
					_ = l.el.Close(gc)
				}
				f.attemptFailed(lc, errHeaderTimeout)
				f.resume(lc)
			}
		case stBlocked:
			switch {
			case lc.c.OutboundBuffered() <= maxPendingOutput:
				f.resume(lc)
			case now.Sub(lc.since) > clientWriteTimeout:
				_ = l.el.Close(lc.c) // it does not read its answers
			}
		case stHead, stBody:
			if draining && lc.c.InboundBuffered() == 0 {
				f.closeClient(lc) // a new connection that sent nothing yet
				break
			}
			limit := f.b.cfg.ClientHeaderTimeout
			if lc.state == stBody {
				limit = f.b.cfg.ClientBodyTimeout
			}
			if now.Sub(lc.since) > limit {
				r := l.errorAnswer()
				setError(r, fasthttp.StatusRequestTimeout, apperr.CodeForStatus(fasthttp.StatusRequestTimeout),
					"the request was not sent in time", "")
				r.SetConnectionClose()
				_, _ = lc.c.Write(l.appendAnswer(r))
				if lc.state != stClosed {
					f.closeClient(lc)
				}
			}
		case stIdle:
			if (draining || now.Sub(lc.since) > clientIdleTimeout) && lc.c.InboundBuffered() == 0 {
				f.closeClient(lc)
			}
		}
		// stDialing and stReading wait on their gateway connection (the
		// dial timeout, its close); stAway and stStreaming are off the
		// loop.
	}
	idle := f.b.cfg.IdleConnTimeout
	var stale []gnet.Conn
	for bk, conns := range l.idle {
		for _, gc := range conns {
			g := gc.Context().(*loopGateway)
			if draining || bk.retired() || idle > 0 && now.Sub(g.since) > idle {
				stale = append(stale, gc)
			}
		}
	}
	for _, gc := range stale {
		_ = l.el.Close(gc) // OnClose forgets it
	}
}

// drain starts the shutdown: answers go out with Connection: close, and
// idle connections are closed (at once, then by every sweep).
func (f *front) drain() {
	f.draining.Store(true)
	f.sweepAll()
}

// wait waits until no client connection is left on the loops and no answer
// is being streamed, or ctx ends; then it stops the loops. Connections
// still open then are closed.
func (f *front) wait(ctx context.Context) error {
	var err error
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for f.clients.Load() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("%d client connections still open: %w", f.clients.Load(), ctx.Err())
		case <-t.C:
		}
	}
	f.stop()
	f.sweeper.Wait()
	if serr := f.engine.Stop(); serr != nil && err == nil {
		err = serr
	}
	streams := make(chan struct{})
	go func() { f.streams.Wait(); close(streams) }()
	select {
	case <-streams:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("answers still streaming: %w", ctx.Err())
		}
	}
	return err
}
