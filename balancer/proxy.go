package balancer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// exchange is what the balancer knows about one client request while it is
// proxied, from serveProxy (or an event loop's serve) until the gateway's
// response body has been copied to the client (see end). Only the goroutine
// serving the request, or the event loop, uses it. Exchanges are pooled:
// end puts one back.
type exchange struct {
	b   *balancer
	ctx *fasthttp.RequestCtx // nil on an event loop
	// peer is the client's connection while a goroutine streams the answer
	// to it off the event loops (see streamAnswer).
	peer net.Conn
	// method is the request's method, for the log.
	method    []byte
	start     time.Time
	requestID string
	// uri is the request target as the client sent it (path and query),
	// which every attempt aims at its gateway (see aim).
	uri     []byte
	target  []byte   // scratch for a target under a gateway's path prefix
	backend *backend // the backend of the last attempt; nil if none was ready
	// holding is set when an attempt on backend got an answer: its
	// in-flight count then includes this exchange until end.
	holding  bool
	attempts int
	tried    [maxRetriesLimit + 1]*backend
	status   int  // the status the client gets
	counted  bool // counted in balancer.inFlight
	// closeAsked: the client sent Connection: close. prepare takes it off
	// the request (the gateway connection stays open) and respond or fail
	// puts it on the answer.
	closeAsked bool
	// gone is set once the client was found to have hung up.
	gone bool
	// streaming is set when the answer's body is copied after the
	// handler returns, through body.
	streaming bool
	body      upstreamBody
	// Whether a failed attempt may be sent again (see forwarder), and, on
	// an event loop, when the current attempt's answer must have begun.
	idempotent, replayable bool
	headerDeadline         time.Time
	// The request body on the goroutine engine (see body.go): reqBody
	// holds it whole, or its first replayLimit bytes when bodyRest streams
	// the rest from the client (bodyRest is then &clientBody, and bodyHead
	// reads reqBody).
	reqBody    []byte
	bodyRest   *clientBody
	clientBody clientBody
	bodyHead   bytes.Reader
}

// exchanges recycles exchanges: one per request would be the largest
// allocation of the hot path.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// newExchange returns a clean exchange for ctx, keeping the buffers of a
// recycled one.
func newExchange(b *balancer, ctx *fasthttp.RequestCtx) *exchange {
	ex := exchanges.Get().(*exchange)
	uri, target, method, reqBody := ex.uri[:0], ex.target[:0], ex.method[:0], ex.reqBody[:0]
	*ex = exchange{b: b, ctx: ctx, start: time.Now(), uri: uri, target: target, method: method, reqBody: reqBody}
	return ex
}

// begin starts ex for a request with header h: it takes the request ID
// from h or makes one, and counts ex against MaxInFlight. It returns false
// when the balancer is over MaxInFlight; the caller answers 503 with
// msgOverloaded and recycles ex.
func (ex *exchange) begin(h *fasthttp.RequestHeader) bool {
	b := ex.b
	ex.method = append(ex.method[:0], h.Method()...)
	if v := h.Peek(requestIDKey); len(v) > 0 {
		ex.requestID = reqid.Or(string(v))
	} else {
		ex.requestID = reqid.New()
	}
	if max := int64(b.cfg.MaxInFlight); max > 0 {
		ex.counted = true
		if b.inFlight.Add(1) > max {
			b.inFlight.Add(-1)
			b.metrics.overloaded.Inc()
			return false
		}
	}
	return true
}

// clientGone reports whether the client has closed its connection (or
// found so before). It costs a system call: the gateway connection calls
// it only when a read has waited clientCheckInterval.
func (ex *exchange) clientGone() bool {
	if ex.gone {
		return true
	}
	conn := ex.peer
	if ex.ctx != nil {
		conn = ex.ctx.Conn()
	}
	if conn != nil && peerClosed(conn) {
		ex.gone = true
	}
	return ex.gone
}

// requestIDKey is reqid.Header in canonical form, the form fasthttp stores
// header names in.
const requestIDKey = "X-Request-Id"

// statusClientClosed is nginx's 499 "client closed request": the status
// recorded (and nominally written) when the client went away before a
// gateway answered. It keeps departed clients out of the 5xx numbers.
const statusClientClosed = 499

// msgBadGateway is what a client is told when no gateway could serve it. It
// names no gateway: their addresses are internal and are in the log.
const msgBadGateway = "no gateway could serve the request"

// msgNoBackend is what a client is told when no gateway is ready at all.
const msgNoBackend = "no gateway is available"

// msgOverloaded is the message of the 503 past MaxInFlight.
const msgOverloaded = "the balancer has too many requests in flight; retry shortly"

// clientCheckInterval is how often a request that waits for its gateway
// checks whether its client is still there (see gatewayConn). Requests
// answered sooner, nearly all, never check.
const clientCheckInterval = 250 * time.Millisecond

// serveProxy proxies one request and records it. With no ready backend it
// answers 503 at once: there is nothing to wait for.
func (b *balancer) serveProxy(ctx *fasthttp.RequestCtx) {
	ex := newExchange(b, ctx)
	req := &ctx.Request
	if !ex.begin(&req.Header) {
		setOverloaded(&ctx.Response, ex.requestID)
		exchanges.Put(ex)
		return
	}
	ex.backend = b.pool.pick()
	if ex.backend == nil {
		ex.status = fasthttp.StatusServiceUnavailable
		writeError(ctx, ex.status, apperr.Unavailable, msgNoBackend, ex.requestID)
		ex.end()
		return
	}
	b.budget.request(ex.start)
	var ip netip.Addr
	if addr, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		ip = addr.Unmap()
	}
	// The body's start (or all of it) is read before the request goes
	// out, so that a gateway connection is not held for a client that
	// has sent nothing yet.
	err := ex.takeBody(ctx, b.cfg.ClientBodyTimeout)
	if err == nil {
		ex.prepare(req, ip, ctx.IsTLS())
		err = b.forwarder.forward(ex, req, &ctx.Response)
	}
	if err != nil {
		var be *bodyError
		if errors.As(err, &be) {
			b.refuseBody(ex, be)
			ex.end()
			return
		}
		if ex.unreadBody() {
			ex.closeAsked = true // what is left of the body is not read
		}
		b.fail(ex, err)
		return
	}
	if ex.unreadBody() {
		ex.closeAsked = true
		if cc, ok := ctx.Conn().(*clientConn); ok {
			cc.lingerOnClose()
		}
	}
	b.respond(ex)
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
		ex.end()
		return
	}
	size := -1 // no known length: chunked to the client, flushed as it comes
	if ex.body.size > 0 {
		size = int(ex.body.size)
	}
	ctx.Response.SetBodyStream(&ex.body, size)
}

// rewriteAnswer turns a gateway's answer header into the client's: the
// hop-by-hop headers go, Connection: close is the client's (closing), and
// the request ID is there. It records the answer's status as ex's.
func (ex *exchange) rewriteAnswer(h *fasthttp.ResponseHeader, closing bool) {
	stripResponseHopByHop(h)
	// The gateway's Connection: close is about its connection, not the
	// client's.
	h.ResetConnectionClose()
	if closing {
		h.SetConnectionClose()
	}
	if len(h.Peek(requestIDKey)) == 0 {
		// A gateway normally echoes the ID it was sent; if it did not, the
		// balancer adds it (adding when one is there would send the client
		// two).
		h.Set(requestIDKey, ex.requestID)
	}
	ex.status = h.StatusCode()
}

// failed records that no gateway could serve ex, the last attempt
// failing with err, and returns the status the client gets: 502, or 499
// when the client hung up. It is the one place such a failure is logged.
func (ex *exchange) failed(err error) int {
	b := ex.b
	if ex.gone {
		// The client hung up while we waited; there is nobody to answer and
		// nothing the gateways did wrong.
		b.log.Debug("client went away", "upstream", ex.backend.label, "err", err, "request_id", ex.requestID)
		ex.status = statusClientClosed
		return ex.status
	}
	b.log.Warn(msgBadGateway, "upstream", ex.backend.label, "attempts", ex.attempts, "err", err,
		"request_id", ex.requestID, "method", string(ex.method), "path", string(ex.path()))
	ex.status = fasthttp.StatusBadGateway
	return ex.status
}

// fail answers a request that no gateway could serve: 502 with the house
// error body.
func (b *balancer) fail(ex *exchange, err error) {
	ctx := ex.ctx
	if ex.failed(err) == statusClientClosed {
		ctx.Response.Reset()
		ctx.SetStatusCode(statusClientClosed)
		ctx.SetConnectionClose()
		ex.end()
		return
	}
	// A failed attempt may have left part of a gateway's header.
	ctx.Response.Reset()
	writeError(ctx, ex.status, apperr.Unavailable, msgBadGateway, ex.requestID)
	if ex.closeAsked {
		ctx.SetConnectionClose()
	}
	ex.end()
}

// end ends an exchange: it releases the backend's in-flight count,
// records the request in the metrics and, at debug level, in the access
// log, and recycles the exchange.
func (ex *exchange) end() {
	b := ex.b
	if ex.counted {
		b.inFlight.Add(-1)
	}
	if ex.holding {
		ex.backend.inFlight.Add(-1)
	}
	d := time.Since(ex.start)
	b.metrics.observe(ex.backend, ex.status, d)
	// Checked first so that a busy balancer at info level does not build
	// attributes nobody will see.
	if b.log.Enabled(context.Background(), slog.LevelDebug) {
		upstream := noBackend
		if ex.backend != nil {
			upstream = ex.backend.label
		}
		b.log.LogAttrs(context.Background(), slog.LevelDebug, "proxied",
			slog.String("method", string(ex.method)),
			slog.String("path", string(ex.path())),
			slog.Int("status", ex.status),
			slog.String("upstream", upstream),
			slog.Int("attempts", ex.attempts),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
			slog.String("request_id", ex.requestID),
		)
	}
	ex.peer = nil
	ex.ctx, ex.b, ex.backend, ex.tried = nil, nil, nil, [maxRetriesLimit + 1]*backend{}
	ex.body = upstreamBody{}
	ex.bodyRest, ex.clientBody = nil, clientBody{}
	ex.bodyHead.Reset(nil)
	exchanges.Put(ex)
}

// path returns the path of the request target, for the log.
func (ex *exchange) path() []byte {
	p := ex.uri
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return p
}

// cause returns err, or errClientGone with it when the client hung up.
func (ex *exchange) cause(err error) error {
	if ex.gone {
		return errors.Join(errClientGone, err)
	}
	return err
}

// Canonical header names, as fasthttp stores them.
const (
	hdrConnection      = "Connection"
	hdrForwarded       = "Forwarded"
	hdrXForwardedFor   = "X-Forwarded-For"
	hdrXForwardedHost  = "X-Forwarded-Host"
	hdrXForwardedProto = "X-Forwarded-Proto"
	hdrTE              = "Te"
	hdrExpect          = "Expect"
)

// hopByHop are the headers that concern one connection, not the request
// (RFC 9110 section 7.6.1, and the ones httputil.ReverseProxy removes):
// they are dropped in both directions, like the headers a Connection header
// names.
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHopByHop(key []byte) bool {
	for _, h := range hopByHop {
		if string(key) == h {
			return true
		}
	}
	return false
}

// prepare turns the client's request into the one sent to the gateways,
// in place: hop-by-hop headers, and any Forwarded or X-Forwarded-* header
// the client sent, are dropped (so a client can neither spoof its address
// nor strip the headers set here); X-Forwarded-For, -Host and -Proto and
// X-Request-ID are set, from the client's address ip and whether it came
// over TLS. aim then sets the Host header and the target for each attempt.
func (ex *exchange) prepare(req *fasthttp.Request, ip netip.Addr, tls bool) {
	h := &req.Header
	ex.uri = append(ex.uri[:0], h.RequestURI()...)
	if len(ex.uri) > 0 && ex.uri[0] != '/' && ex.uri[0] != '*' {
		// Absolute form (GET http://host/path): the gateway gets the path.
		u := req.URI()
		u.DisablePathNormalizing = true
		ex.uri = append(ex.uri[:0], u.RequestURI()...)
	}
	// The client's Connection: close is for its own connection (see
	// closeAsked); the gateway connection stays open.
	if h.ConnectionClose() {
		ex.closeAsked = true
		h.ResetConnectionClose()
	}
	// One pass finds what needs removing; most requests have none of it.
	var hop, fwd, trailers bool
	var named []string // headers the Connection header names
	for k, v := range h.All() {
		switch {
		case isHopByHop(k):
			hop = true
			switch string(k) {
			case hdrConnection:
				for tok := range strings.SplitSeq(string(v), ",") {
					if tok = strings.TrimSpace(tok); tok != "" {
						named = append(named, tok)
					}
				}
			case hdrTE:
				trailers = trailers || bytes.Contains(bytes.ToLower(v), []byte("trailers"))
			}
		case string(k) == hdrExpect:
			// The balancer has read the body already (and answered any
			// 100-continue); the gateway must not wait to send one.
			hop = true
		case isForwarded(k):
			fwd = true
		}
	}
	if hop {
		for _, name := range named {
			h.Del(name)
		}
		for _, name := range hopByHop {
			h.Del(name)
		}
		h.Del(hdrExpect)
		if trailers {
			// The one hop-by-hop value that is passed on, as
			// httputil.ReverseProxy does: the client accepts trailers.
			h.Set(hdrTE, "trailers")
		}
	}
	if fwd {
		dropForwarded(h)
	}
	var ipBuf [64]byte
	h.SetCanonical([]byte(hdrXForwardedFor), ip.AppendTo(ipBuf[:0]))
	h.SetCanonical([]byte(hdrXForwardedHost), h.Host())
	proto := "http"
	if tls {
		proto = "https"
	}
	h.Set(hdrXForwardedProto, proto)
	h.Set(requestIDKey, ex.requestID)
}

// xForwardedPrefix starts the name of every X-Forwarded-* header.
const xForwardedPrefix = "X-Forwarded-"

// isForwarded reports whether a header named key says where a request
// came from, for a proxy: Forwarded or any X-Forwarded-*, in any case. A
// client may send any of them (X-Forwarded-Host, -Port, -Ssl, -Prefix...)
// and some framework behind a gateway may believe it, so none is passed
// on. It is called for every header of every request, so it looks at the
// first byte before comparing the rest.
func isForwarded(key []byte) bool {
	switch {
	case len(key) == 0:
		return false
	case key[0]|0x20 == 'f':
		return bytes.EqualFold(key, []byte(hdrForwarded))
	case key[0]|0x20 == 'x':
		return len(key) >= len(xForwardedPrefix) && bytes.EqualFold(key[:len(xForwardedPrefix)], []byte(xForwardedPrefix))
	}
	return false
}

// dropForwarded removes every header of h that isForwarded, all of its
// lines. fasthttp deletes by name only, so it deletes the first such name
// it finds until none is left; DelBytes copies the name before deleting,
// so the name may point into h. Each pass deletes at least one header, so
// h.Len() passes are enough (the bound only guards against a name that
// DelBytes would normalize into another). No allocation: this runs on the
// event loops.
func dropForwarded(h *fasthttp.RequestHeader) {
	for range h.Len() {
		var name []byte
		for k := range h.All() {
			if isForwarded(k) {
				name = k
				break
			}
		}
		if name == nil {
			return
		}
		h.DelBytes(name)
	}
}

// aim points req at b: its Host header becomes b's host (the client's is in
// X-Forwarded-Host) and its target the client's, under b's path prefix if
// it has one (joined as httputil.ProxyRequest.SetURL joins them).
func (ex *exchange) aim(req *fasthttp.Request, b *backend) {
	req.Header.SetHost(b.url.Host)
	if b.prefix == "" {
		req.SetRequestURIBytes(ex.uri)
		return
	}
	ex.target = joinTarget(ex.target[:0], b.prefix, ex.uri)
	req.SetRequestURIBytes(ex.target)
}

// joinTarget appends prefix joined with target (path and query) to dst,
// with exactly one slash between them.
func joinTarget(dst []byte, prefix string, target []byte) []byte {
	path, query := target, []byte(nil)
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	aslash := strings.HasSuffix(prefix, "/")
	bslash := len(path) > 0 && path[0] == '/'
	dst = append(dst, prefix...)
	switch {
	case aslash && bslash:
		dst = append(dst, path[1:]...)
	case !aslash && !bslash:
		dst = append(dst, '/')
		dst = append(dst, path...)
	default:
		dst = append(dst, path...)
	}
	return append(dst, query...)
}

// stripResponseHopByHop removes the hop-by-hop headers of a gateway's
// answer, and the ones its Connection header names.
func stripResponseHopByHop(h *fasthttp.ResponseHeader) {
	var hop bool
	var named []string
	for k, v := range h.All() {
		if !isHopByHop(k) {
			continue
		}
		hop = true
		if string(k) == hdrConnection {
			for tok := range strings.SplitSeq(string(v), ",") {
				if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "close") {
					named = append(named, tok)
				}
			}
		}
	}
	if !hop {
		return
	}
	for _, name := range named {
		h.Del(name)
	}
	// Connection: close and the framing are the server's to decide (see
	// respond).
	for _, name := range hopByHop {
		h.Del(name)
	}
}

// writeError answers with the house error body, as apperr.WriteCode does
// for net/http, and the request ID.
func writeError(ctx *fasthttp.RequestCtx, status int, code apperr.Code, msg, requestID string) {
	setError(&ctx.Response, status, code, msg, requestID)
}

// setError makes resp the house error answer.
func setError(resp *fasthttp.Response, status int, code apperr.Code, msg, requestID string) {
	body, _ := json.Marshal(apperr.Body{Error: apperr.BodyError{Code: code, Message: msg, RequestID: requestID}})
	h := &resp.Header
	h.SetContentType("application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if requestID != "" {
		h.Set(requestIDKey, requestID)
	}
	resp.SetStatusCode(status)
	resp.SetBody(append(body, '\n'))
}

// setOverloaded makes resp the 503 past MaxInFlight.
func setOverloaded(resp *fasthttp.Response, requestID string) {
	resp.Header.Set("Retry-After", "1")
	setError(resp, fasthttp.StatusServiceUnavailable, apperr.Unavailable, msgOverloaded, requestID)
}

// bufferSize is the size of the buffers request and response bodies are
// written through.
const bufferSize = 32 << 10

// maxHeaderBytes bounds a request's header (431 past it), as nginx's
// default buffers do (4 × 8 KiB). fasthttp's server reads a header into one
// buffer of this size, held by every request it reads on the goroutine
// engine: with 64 KiB, 1,000 clients that send a header and stall cost
// about 80 MiB; with 32 KiB, half.
const maxHeaderBytes = 32 << 10

// maxAnswerHeaderBytes bounds a gateway answer's header. The gateways are
// trusted, their answers few at a time: it stays at net/http's old
// MaxHeaderBytes.
const maxAnswerHeaderBytes = 64 << 10

// maxRequestBody bounds a request body. The balancer reads a body whole
// before it sends it on (so that a retry can send it again); the gateways
// take at most 64 KiB (task.MaxPayloadBytes), so this leaves ample room.
const maxRequestBody = 8 << 20
