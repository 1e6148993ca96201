package balancer

import (
	"errors"
	"net/netip"

	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
)

// This file is the goroutine engine's side of the lifecycle (exchange.go):
// fasthttp's server reads a request on the connection's goroutine, calls
// serveProxy, and writes what it leaves in the response, a streamed body
// included. Every request on the goroutine engine, and every connection
// the event loops hand over (handoff.go), is served here.

// serveProxy proxies one request and records it. With no ready backend it
// answers 503 at once: there is nothing to wait for. The exchange ends in
// one place, here, unless its answer streams: then the server's close of
// the body ends it (upstreamBody.Close).
func (b *balancer) serveProxy(ctx *fasthttp.RequestCtx) {
	ex := newExchange(b, ctx)
	req := &ctx.Request
	if !ex.admit(&req.Header) {
		ex.refusal(&ctx.Response)
		ex.end()
		return
	}
	var ip netip.Addr
	if addr, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		ip = addr.Unmap()
	}
	if isUpgrade(&req.Header) {
		b.serveUpgrade(ex, ctx, ip)
		return
	}
	// The body's start (or all of it) is read before the request goes
	// out, so that a gateway connection is not held for a client that
	// has sent nothing yet.
	err := ex.takeBody(ctx, b.cfg.ClientBodyTimeout)
	if err == nil {
		ex.prepare(req, ip, ctx.IsTLS())
		err = ex.forward(req, &ctx.Response)
	}
	var be *bodyError
	switch {
	case errors.As(err, &be):
		b.refuseBody(ex, be)
	case err != nil:
		if ex.unreadBody() {
			ex.closeAsked = true // what is left of the body is not read
		}
		b.fail(ex, err)
	default:
		if ex.unreadBody() {
			ex.closeAsked = true
			lingerClient(ctx)
		}
		b.respond(ex)
	}
	if !ex.streaming {
		ex.end()
	}
}

// respond gives the client the gateway's answer, which roundTrip read
// into the client's response: its headers but the hop-by-hop ones, the
// request ID, and its body.
//
// A body that did not come whole with the headers is streamed: the server
// copies ex.body after the handler returns, and flushes a body of unknown
// length (sent chunked: server-sent events, long polls) after every read,
// so that a stream is not held back; a body of known length goes through
// the write buffer. The exchange then ends when the server closes ex.body.
func (b *balancer) respond(ex *exchange) {
	ctx := ex.ctx
	ex.rewriteAnswer(&ctx.Response.Header, ex.closeAsked)
	if !ex.streaming {
		return
	}
	size := -1 // no known length: chunked to the client, flushed as it comes
	if ex.body.size > 0 {
		size = int(ex.body.size)
	}
	ctx.Response.SetBodyStream(&ex.body, size)
}

// fail answers a request that no gateway could serve: 502 with the house
// error body, or 499 when its client hung up.
func (b *balancer) fail(ex *exchange, err error) {
	ctx := ex.ctx
	// A failed attempt may have left part of a gateway's header.
	ctx.Response.Reset()
	if ex.failed(err) == statusClientClosed {
		ctx.SetStatusCode(statusClientClosed)
		ctx.SetConnectionClose()
		return
	}
	writeError(ctx, ex.status, apperr.Unavailable, msgBadGateway, ex.requestID)
	if ex.closeAsked {
		ctx.SetConnectionClose()
	}
}
