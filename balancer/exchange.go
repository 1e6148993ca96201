package balancer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

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
