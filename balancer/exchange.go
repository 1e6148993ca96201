package balancer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// This file is the lifecycle of a proxied request, shared by both engines:
// an exchange is admitted (request ID, MaxInFlight, a gateway picked, the
// retry budget counting it), makes one attempt after another (retry.go
// decides whether a failed one is retried, and where), gets its answer,
// and ends (end is its one release: in-flight counts, metrics, the log, the
// pool of exchanges). The engines are I/O around it: engine_goroutine.go
// reads and writes through fasthttp's server, engine_loop.go through the
// event loops; neither touches the pool, the retry budget or a gateway's
// health. On the loops, each client connection is in one connState at a
// time, and step is the only way from one to the next.

// connState is where a client connection on an event loop is in the
// lifecycle of its requests. The zero value is stIdle.
type connState uint8

const (
	// stIdle: no request is in; the connection waits for the next one
	// (clientIdleTimeout).
	stIdle connState = iota
	// stHead: part of a request's header is in, or a new connection has
	// sent nothing yet (Config.ClientHeaderTimeout).
	stHead
	// stBody: a request's header is in, its body is not all in
	// (Config.ClientBodyTimeout from the last progress).
	stBody
	// stBlocked: requests are in, but the answers to earlier ones are not
	// yet sent (maxPendingOutput); the sweep resumes the connection.
	stBlocked
	// stPending: a request is whole and its exchange admitted or refused;
	// no attempt has begun.
	stPending
	// stDialing: the current attempt waits for a new gateway connection.
	stDialing
	// stWaiting: the request went to a gateway; its answer has not begun
	// (Config.ResponseHeaderTimeout).
	stWaiting
	// stReading: the answer's header is in, its body is arriving; the loop
	// passes it on whole.
	stReading
	// stStreaming: a goroutine streams the answer, and then takes the
	// connection off the loop (see streamAnswer).
	stStreaming
	// stClosing: the connection closes once what was written has gone.
	stClosing
	// stAway: the connection left the loop for the goroutine engine (or is
	// leaving it); its close on the loop is bookkeeping only.
	stAway
	// stClosed: the connection is closed.
	stClosed
	numConnStates
)

var connStateNames = [numConnStates]string{"idle", "head", "body", "blocked", "pending", "dialing",
	"waiting", "reading", "streaming", "closing", "away", "closed"}

func (s connState) String() string { return enumName(connStateNames[:], s, "connState") }

// enumName is the name of v among names, or kind(v) when it has none.
func enumName[T ~uint8](names []string, v T, kind string) string {
	if int(v) < len(names) {
		return names[v]
	}
	return kind + "(" + strconv.Itoa(int(v)) + ")"
}

// reads reports whether a connection in state s reads its next request:
// none is at a gateway, and it is neither closing nor leaving.
func (s connState) reads() bool { return s <= stBlocked }

// connEvent is what moves a client connection from one connState to the
// next (see step).
type connEvent uint8

const (
	evBytes      connEvent = iota // part of a request's header came
	evHeader                      // a request's header is in, and not all of its body (again: progress)
	evBacklog                     // a request is in, but earlier answers are still to be sent
	evRequest                     // a request is whole: its exchange begins
	evDial                        // an attempt needs a new gateway connection
	evSend                        // an attempt's request went to a gateway
	evAnswerHead                  // the gateway's answer header came
	evStream                      // the answer is streamed off the loop
	evAnswered                    // an answer (the gateway's or the balancer's own) was written
	evClosing                     // the connection is to close once its output is out
	evHandOff                     // the connection goes to the goroutine engine
	evClosed                      // the connection closed
	numConnEvents
)

var connEventNames = [numConnEvents]string{"bytes", "header", "backlog", "request", "dial", "send",
	"answer-head", "stream", "answered", "closing", "hand-off", "closed"}

func (e connEvent) String() string { return enumName(connEventNames[:], e, "connEvent") }

// transitions is the lifecycle of a client connection on the loops: the
// state each event leads to from each state. An event missing from a
// state's row cannot happen there; step refuses it.
var transitions = [numConnStates]map[connEvent]connState{
	stIdle: {evBytes: stHead, evHeader: stBody, evBacklog: stBlocked, evRequest: stPending,
		evClosing: stClosing, evHandOff: stAway, evClosed: stClosed},
	stHead: {evHeader: stBody, evBacklog: stBlocked, evRequest: stPending,
		evClosing: stClosing, evHandOff: stAway, evClosed: stClosed},
	stBody: {evHeader: stBody, evBacklog: stBlocked, evRequest: stPending,
		evClosing: stClosing, evHandOff: stAway, evClosed: stClosed},
	stBlocked: {evBytes: stHead, evHeader: stBody, evRequest: stPending,
		evHandOff: stAway, evClosed: stClosed},
	stPending:   {evDial: stDialing, evSend: stWaiting, evAnswered: stIdle},
	stDialing:   {evDial: stDialing, evSend: stWaiting, evAnswered: stIdle, evClosed: stClosed},
	stWaiting:   {evDial: stDialing, evSend: stWaiting, evAnswerHead: stReading, evAnswered: stIdle, evClosed: stClosed},
	stReading:   {evStream: stStreaming, evAnswered: stIdle, evClosed: stClosed},
	stStreaming: {evHandOff: stAway, evClosed: stClosed},
	stClosing:   {evClosed: stClosed},
	stAway:      {evClosed: stClosed},
	stClosed:    {},
}

// errTransition is an event that cannot happen in the state it came in: a
// bug in an engine.
var errTransition = errors.New("balancer: no such transition")

// transitionError is the errTransition of one state and event.
type transitionError struct {
	s connState
	e connEvent
}

func (e transitionError) Error() string {
	return errTransition.Error() + ": " + e.e.String() + " in state " + e.s.String()
}

func (e transitionError) Unwrap() error { return errTransition }

// stepTable is transitions as an array, for the hot path (a step per
// event of every request): numConnStates where there is no transition.
var stepTable = func() (t [numConnStates][numConnEvents]connState) {
	for s := range t {
		for e := range t[s] {
			next, ok := transitions[s][connEvent(e)]
			if !ok {
				next = numConnStates
			}
			t[s][e] = next
		}
	}
	return t
}()

// step is the transition function of the lifecycle: the state that event
// e leads to from s, or errTransition when e cannot happen in s.
func step(s connState, e connEvent) (connState, error) {
	if s < numConnStates && e < numConnEvents {
		if next := stepTable[s][e]; next != numConnStates {
			return next, nil
		}
	}
	return s, transitionError{s: s, e: e} // off the hot path: step inlines
}

// exchange is what the balancer knows about one client request while it is
// proxied, from serveProxy (or an event loop's serve) until the gateway's
// response body has been copied to the client (see end). Only the goroutine
// serving the request, or the event loop, uses it. Exchanges are pooled:
// end puts one back.
type exchange struct {
	b *balancer
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
	// overloaded: admit refused the request past MaxInFlight; it is
	// counted in metrics.overloaded, not as a request.
	overloaded bool
	// closeAsked: the client sent Connection: close. prepare takes it off
	// the request (the gateway connection stays open) and the answer
	// carries it.
	closeAsked bool
	// gone is set once the client was found to have hung up.
	gone bool
	// client is the client's address and bodyBytes the bytes of the
	// answer's body sent to it, for the access log.
	client    netip.Addr
	bodyBytes int64
	// Whether a failed attempt may be sent again (see forwarder).
	idempotent, replayable bool

	// What only one engine's exchanges use.
	serverSide
	loopSide
}

// serverSide is what an exchange on the goroutine engine keeps besides.
type serverSide struct {
	ctx *fasthttp.RequestCtx
	// streaming is set when the answer's body is copied after the
	// handler returns, through body.
	streaming bool
	body      upstreamBody
	// The request body (see body.go): reqBody holds it whole, or its first
	// replayLimit bytes when bodyRest streams the rest from the client
	// (bodyRest is then &clientBody, and bodyHead reads reqBody).
	reqBody    []byte
	bodyRest   *clientBody
	clientBody clientBody
	bodyHead   bytes.Reader
	// tunnel is the gateway's connection of an upgrade it answered with
	// 101 (upgrade.go), until the tunnel takes it.
	tunnel net.Conn
}

// loopSide is what an exchange on the event loops keeps besides.
type loopSide struct {
	// headerDeadline is when the current attempt's answer must have begun
	// (see sent); zero before the request is out and once it has.
	headerDeadline time.Time
	// peer is the client's connection while a goroutine streams the answer
	// to it off the event loops (see streamAnswer).
	peer net.Conn
}

// exchanges recycles exchanges: one per request would be the largest
// allocation of the hot path.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// newExchange returns a clean exchange for ctx, keeping the buffers of a
// recycled one.
func newExchange(b *balancer, ctx *fasthttp.RequestCtx) *exchange {
	ex := exchanges.Get().(*exchange)
	uri, target, method, reqBody := ex.uri[:0], ex.target[:0], ex.method[:0], ex.reqBody[:0]
	*ex = exchange{b: b, start: time.Now(), uri: uri, target: target, method: method,
		serverSide: serverSide{ctx: ctx, reqBody: reqBody}}
	return ex
}

// admit starts the lifecycle of a request with header h: its ID (h's or
// a new one), its place under MaxInFlight, the gateway of its first
// attempt (ex.backend), and its count in the retry budget. It returns
// false when the request is refused at once, with 503: the balancer is
// over MaxInFlight, or no gateway is ready (there is nothing to wait
// for). The engine then writes refusal's answer and ends ex.
func (ex *exchange) admit(h *fasthttp.RequestHeader) bool {
	b := ex.b
	ex.status = fasthttp.StatusServiceUnavailable // until an answer or a failure says otherwise
	if !ex.begin(h) {
		ex.overloaded = true
		return false
	}
	if ex.backend = b.pool.pick(); ex.backend == nil {
		return false
	}
	b.budget.request(ex.start)
	return true
}

// refusal makes resp the answer to a request admit refused.
func (ex *exchange) refusal(resp *fasthttp.Response) {
	if ex.overloaded {
		setOverloaded(resp, ex.requestID)
		return
	}
	setError(resp, ex.status, apperr.Unavailable, msgNoBackend, ex.requestID)
}

// startAttempt starts an attempt of ex's request req on bk: ex.backend
// after admit, or the backend attemptFailed returned. It returns when the
// attempt started, for gotAnswer.
func (ex *exchange) startAttempt(req *fasthttp.Request, bk *backend) time.Time {
	ex.headerDeadline = time.Time{} // set by sent
	return ex.b.forwarder.starting(ex, req, bk)
}

// sent records that the current attempt's request went out at now (on an
// event loop): its answer must begin by Config.ResponseHeaderTimeout.
func (ex *exchange) sent(now time.Time) {
	if t := ex.b.cfg.ResponseHeaderTimeout; t > 0 {
		ex.headerDeadline = now.Add(t)
	}
}

// gotAnswer records that the attempt started at start got an answer with
// status: its gateway is held until end, and the wait for the header is
// over.
func (ex *exchange) gotAnswer(start time.Time, status int) {
	ex.b.forwarder.answered(ex, start, status)
	ex.headerDeadline = time.Time{}
}

// attemptFailed records that the current attempt failed with err, and
// returns the backend to try next, or nil when the request is answered
// with ex.status instead (502). An attempt whose answer had begun
// (holding) is not retried: nothing of it was sent to the client yet, and
// the client is told that it broke.
func (ex *exchange) attemptFailed(err error) *backend {
	if ex.holding {
		ex.failed(err)
		ex.status = fasthttp.StatusBadGateway
		return nil
	}
	if next := ex.b.forwarder.retry(ex, err); next != nil {
		return next
	}
	ex.failed(err)
	return nil
}

// forward makes the attempts of ex's request req on the goroutine engine,
// one after another, into resp (see forwarder.forward).
func (ex *exchange) forward(req *fasthttp.Request, resp *fasthttp.Response) error {
	return ex.b.forwarder.forward(ex, req, resp)
}

// abandon ends ex, whose client hung up while an attempt was under way:
// the attempt's gateway is released (nothing is retried for a client
// that left), and the request is recorded as 499.
func (ex *exchange) abandon() {
	ex.gone = true
	if !ex.holding {
		ex.b.forwarder.retry(ex, errClientGone) // releases the backend; no retry for a gone client
	}
	ex.failed(errClientGone)
	ex.end()
}

// begin takes the request ID from h or makes one, and counts ex against
// MaxInFlight. It returns false when the balancer is over MaxInFlight.
func (ex *exchange) begin(h *fasthttp.RequestHeader) bool {
	b := ex.b
	ex.method = append(ex.method[:0], h.Method()...)
	if v := h.Peek(requestIDKey); len(v) > 0 {
		ex.requestID = reqid.Or(string(v))
	} else {
		ex.requestID = reqid.New()
	}
	if max := b.maxInFlight.Load(); max > 0 {
		if b.inFlight.Add(1) > max {
			b.inFlight.Add(-1)
			b.metrics.overloaded.Inc()
			return false
		}
		ex.counted = true
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

// end ends an exchange, whatever became of it: the one place it is
// released. It releases the backend's in-flight count,
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
	if !ex.overloaded { // counted in metrics.overloaded instead
		b.metrics.observe(ex.backend, ex.status, d)
	}
	if b.access != nil {
		if ex.ctx != nil && !ex.streaming {
			ex.bodyBytes = int64(len(ex.ctx.Response.Body()))
		}
		b.access.log(ex, d)
	}
	// Checked first so that a busy balancer at info level does not build
	// attributes nobody will see.
	if !ex.overloaded && b.log.Enabled(context.Background(), slog.LevelDebug) {
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
	ex.client, ex.bodyBytes = netip.Addr{}, 0
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
