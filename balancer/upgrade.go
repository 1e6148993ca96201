package balancer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
)

// This file proxies protocol upgrades (a WebSocket's handshake, or any
// request with Connection: Upgrade): the request goes to a gateway on a
// connection of its own, with its Upgrade header, through the same
// lifecycle as any request (admitted, retried on a failure to connect,
// counted, logged). When the gateway answers 101 Switching Protocols, the
// client's connection and the gateway's are joined into a tunnel that
// copies bytes both ways until either side closes, or neither sends
// anything for Config.StreamIdleTimeout. Any other answer goes to the
// client as usual. The event loops hand such requests to the goroutine
// engine, which serves them here.

// isUpgrade reports whether h asks to switch protocols.
func isUpgrade(h *fasthttp.RequestHeader) bool {
	return len(h.Peek("Upgrade")) > 0 && h.ConnectionUpgrade()
}

// maxUpgradeRefusal bounds the body of a gateway's answer to an upgrade
// that is not 101 (a 401, a 404): it is read whole, on the upgrade's own
// connection.
const maxUpgradeRefusal = 1 << 20

// serveUpgrade proxies the upgrade request of ctx, admitted as ex.
func (b *balancer) serveUpgrade(ex *exchange, ctx *fasthttp.RequestCtx, ip netip.Addr) {
	req := &ctx.Request
	if cl := req.Header.ContentLength(); cl > 0 || cl == -1 { // a length, or chunked
		ex.status = fasthttp.StatusBadRequest
		writeError(ctx, ex.status, apperr.Invalid, "an upgrade request carries no body", ex.requestID)
		ctx.SetConnectionClose()
		lingerClient(ctx)
		ex.end()
		return
	}
	proto := string(req.Header.Peek("Upgrade"))
	ex.prepare(req, ip, ctx.IsTLS()) // drops the hop-by-hop headers, Upgrade among them
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", proto)
	err := b.forwarder.forwardWith(ex, req, &ctx.Response, b.upgradeTrip)
	if err != nil {
		b.fail(ex, err)
		ex.end()
		return
	}
	if ex.tunnel == nil {
		// The gateway did not switch: its answer, as any other.
		ex.rewriteAnswer(&ctx.Response.Header, ex.closeAsked)
		ex.end()
		return
	}
	h := &ctx.Response.Header
	upgrade := string(h.Peek("Upgrade"))
	ex.rewriteAnswer(h, false)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", upgrade)
	head := h.AppendBytes(nil)
	gw := ex.tunnel
	ex.tunnel = nil
	// An open tunnel holds its gateway (least_connections sees it) but not
	// a place under MaxInFlight, which is for requests, not connections
	// that may live for hours.
	if ex.counted {
		b.inFlight.Add(-1)
		ex.counted = false
	}
	ex.streaming = true // the exchange ends with the tunnel
	// The client's connection under fasthttp's hijacked one, whose Close
	// does nothing (fasthttp closes the connection when the handler of
	// the hijack returns).
	under := ctx.Conn()
	if cc, ok := under.(interface{ tunnelFromNow() }); ok {
		cc.tunnelFromNow()
	}
	ex.ctx = nil // fasthttp reuses ctx once the handler returns
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(client net.Conn) { b.tunnels.run(b, ex, &tunnel{client: client, closer: under, gw: gw}, head) })
}

// upgradeTrip is the attempt of an upgrade request on bk (a roundTrip
// for forwarder.forwardWith): a connection of its own to the gateway, the
// request's header, the answer's header. On 101 the connection is kept in
// ex.tunnel; any other answer is read into resp and the connection
// closed.
func (b *balancer) upgradeTrip(bk *backend, req *fasthttp.Request, resp *fasthttp.Response, ex *exchange) error {
	conn, err := dialBackend(b.cfg, bk)
	if err != nil {
		return &dialError{err: err}
	}
	if t := b.cfg.ResponseHeaderTimeout; t > 0 {
		_ = conn.SetDeadline(time.Now().Add(t))
	}
	br := bufio.NewReaderSize(conn, maxAnswerHeaderBytes)
	_, err = conn.Write(req.Header.Header())
	if err == nil {
		err = resp.Header.Read(br)
	}
	if err == nil && resp.StatusCode() == fasthttp.StatusSwitchingProtocols {
		_ = conn.SetDeadline(time.Time{})
		ex.tunnel = &bufferedConn{Conn: conn, r: br}
		return nil
	}
	if err == nil {
		err = resp.ReadBody(br, maxUpgradeRefusal)
	}
	_ = conn.Close()
	return err
}

// dialBackend connects to bk for an upgrade: as the pool's clients do
// (Config.Dial or TCP, DialTimeout), with TLS for an https gateway.
func dialBackend(cfg Config, bk *backend) (net.Conn, error) {
	conn, err := dial(&net.Dialer{Timeout: cfg.DialTimeout}, cfg.Dial, backendAddr(bk.url))
	if err != nil || bk.url.Scheme != "https" {
		return conn, err
	}
	tc := tls.Client(conn, &tls.Config{ServerName: bk.url.Hostname(), MinVersion: tls.VersionTLS12})
	ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}

// bufferedConn is a connection whose reads go through r first: what the
// gateway sent after its 101, read with the header.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tunnels are the open tunnels of upgraded connections, so that a
// shutdown waits for them (as for requests in flight) and closes those
// left when its time is up.
type tunnels struct {
	mu   sync.Mutex
	open map[*tunnel]struct{}
	wg   sync.WaitGroup
	// closing is set when a shutdown starts waiting: a tunnel that would
	// open after it is closed at once (and the wait group never grows
	// while it is waited for).
	closing bool
}

// tunnel is one upgraded connection: the client's (read and written
// through client, closed through closer) and the gateway's.
type tunnel struct{ client, closer, gw net.Conn }

func (t *tunnel) close() {
	_ = t.closer.Close()
	_ = t.gw.Close()
}

// run writes head (the 101) to t's client, then copies bytes between its
// client and gateway both ways until one side closes or both are silent for
// StreamIdleTimeout; then it closes both and ends ex.
func (ts *tunnels) run(b *balancer, ex *exchange, t *tunnel, head []byte) {
	client, gw := t.client, t.gw
	ts.mu.Lock()
	if ts.closing {
		ts.mu.Unlock()
		t.close()
		ex.end()
		return
	}
	if ts.open == nil {
		ts.open = map[*tunnel]struct{}{}
	}
	ts.open[t] = struct{}{}
	ts.wg.Add(1)
	ts.mu.Unlock()
	defer func() {
		t.close()
		ts.mu.Lock()
		delete(ts.open, t)
		ts.mu.Unlock()
		ts.wg.Done()
		ex.end()
	}()
	if _, err := client.Write(head); err != nil {
		return
	}
	var last atomic.Int64 // unix nanoseconds of the last byte either way
	last.Store(time.Now().UnixNano())
	idle := b.cfg.StreamIdleTimeout
	done := make(chan error, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			if idle > 0 {
				_ = src.SetReadDeadline(time.Unix(0, last.Load()).Add(idle))
			}
			n, err := src.Read(buf)
			if n > 0 {
				last.Store(time.Now().UnixNano())
				if _, werr := dst.Write(buf[:n]); werr != nil {
					done <- werr
					return
				}
			}
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) && time.Since(time.Unix(0, last.Load())) < idle {
					continue // the other way was busy: not silent yet
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = fmt.Errorf("%w (%v)", errTunnelIdle, idle)
				}
				done <- err
				return
			}
		}
	}
	go pipe(gw, client)
	go pipe(client, gw)
	err := <-done
	t.close() // the other copy's read fails at once
	<-done
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		b.log.Debug("tunnel closed", "upstream", ex.backend.label, "err", err, "request_id", ex.requestID)
	}
}

// errTunnelIdle closes a tunnel on which nothing went either way for
// StreamIdleTimeout.
var errTunnelIdle = errors.New("nothing sent either way for --stream-idle-timeout")

// wait waits for the open tunnels to close, or ctx; then it closes those
// left and returns how many there were. Unlike a request, a tunnel open
// at a shutdown is no failure: a WebSocket lives as long as its client
// wants, and the balancer, which does not speak its protocol, can only
// give it the grace and then close it (the client reconnects).
func (ts *tunnels) wait(ctx context.Context) int {
	ts.mu.Lock()
	ts.closing = true
	ts.mu.Unlock()
	done := make(chan struct{})
	go func() { ts.wg.Wait(); close(done) }()
	// None open (the last one may be closing): no wait on ctx, which
	// may have ended already.
	ts.mu.Lock()
	open := len(ts.open)
	ts.mu.Unlock()
	if open == 0 {
		<-done
		return 0
	}
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	ts.mu.Lock()
	n := len(ts.open)
	for t := range ts.open {
		t.close()
	}
	ts.mu.Unlock()
	<-done
	return n
}
