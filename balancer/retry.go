package balancer

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// This file is the retry policy of the lifecycle (exchange.go): which
// failed attempts are sent again, to which gateway, within which budget.

// forwarder sends a request to the backend the balancer picked and, when
// that fails, to other ready backends:
//
//   - A failure to connect is retried for any method: nothing of the
//     request left the balancer.
//   - A failure after the request was sent (reset, broken connection,
//     timeout waiting for headers) is retried only for an idempotent
//     request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE, or any method with an
//     Idempotency-Key header) whose body is at most replayLimit bytes. A
//     POST that reached a gateway is never sent twice.
//   - An answer is never retried, 5xx included: the gateway answered, and
//     its answer (perhaps streamed already) goes to the client.
//
// Each request is retried at most maxRetries times, each time on a backend
// it has not tried, and only while the retry budget allows.
type forwarder struct {
	rt         roundTripper
	pool       *pool
	budget     *retryBudget
	maxRetries atomic.Int32 // changed by a reload (reload.go)
	metrics    *metrics
	log        *slog.Logger
}

// roundTripper makes one attempt; upstream is the real one, tests use
// fakes.
type roundTripper interface {
	roundTrip(b *backend, req *fasthttp.Request, resp *fasthttp.Response, ex *exchange) error
}

// replayLimit is the largest request body a retry after a failed exchange
// sends again. Bodies are held in memory whole, so any could be; the limit
// keeps a large upload from being sent to several gateways (a failed
// connection is still retried: then nothing was sent).
const replayLimit = 64 << 10

// forward sends req, aimed by ex.aim, and retries as described above. It
// returns the error of the last attempt when no attempt got an answer;
// with nil, resp holds the answer and ex.backend the gateway that gave it.
func (f *forwarder) forward(ex *exchange, req *fasthttp.Request, resp *fasthttp.Response) error {
	return f.forwardWith(ex, req, resp, f.rt.roundTrip)
}

// forwardWith is forward with attempts made by trip instead of the
// forwarder's round tripper (an upgrade's: upgrade.go).
func (f *forwarder) forwardWith(ex *exchange, req *fasthttp.Request, resp *fasthttp.Response,
	trip func(*backend, *fasthttp.Request, *fasthttp.Response, *exchange) error) error {
	b := ex.backend
	for {
		start := f.starting(ex, req, b)
		err := trip(b, req, resp, ex)
		if err == nil {
			f.answered(ex, start, resp.StatusCode())
			return nil
		}
		var be *bodyError
		if errors.As(err, &be) {
			// The client's failure, not the gateway's: not counted against
			// it, not retried.
			b.inFlight.Add(-1)
			return err
		}
		if b = f.retry(ex, err); b == nil {
			return err
		}
	}
}

// starting records the start of an attempt of ex on b, aims req at b, and
// returns the time it starts. b's in-flight count is raised until the
// attempt fails or, when it gets an answer, until the exchange ends: the
// response body is still to be copied.
func (f *forwarder) starting(ex *exchange, req *fasthttp.Request, b *backend) time.Time {
	if ex.attempts == 0 {
		// Whether a failed attempt may be sent again (see forwarder). A
		// streamed body (body.go) is not in memory: once any of it was
		// sent it cannot be sent again. The loops take bodies up to
		// replayLimit only.
		ex.idempotent = isIdempotent(req)
		ex.replayable = ex.bodyRest == nil && len(req.Body()) <= replayLimit
	}
	ex.backend = b
	ex.tried[ex.attempts] = b
	ex.attempts++
	ex.aim(req, b)
	b.requests.Add(1)
	b.inFlight.Add(1)
	return time.Now()
}

// answered records that the attempt of ex begun at start got an answer
// with status: the exchange holds the backend, its latency is recorded,
// and the pool hears of it (a 5xx counts as a failure for ejection).
func (f *forwarder) answered(ex *exchange, start time.Time, status int) {
	b := ex.backend
	now := time.Now()
	b.latency.record(now, now.Sub(start))
	ex.holding = true
	f.pool.observe(b, status >= 500)
}

// retry records that the attempt of ex on ex.backend failed with err and
// returns the backend to try next, or nil when the request is not retried
// (see forwarder for when it is).
func (f *forwarder) retry(ex *exchange, err error) *backend {
	b := ex.backend
	b.inFlight.Add(-1)
	if ex.gone {
		// The client hung up: not the gateway's fault, nobody to retry for.
		return nil
	}
	b.errors.Add(1)
	b.metrics.errors.Inc()
	f.pool.observe(b, true)
	connect := isDialError(err)
	if !connect && (!ex.idempotent || !ex.replayable) {
		return nil
	}
	if ex.attempts > int(f.maxRetries.Load()) {
		return nil
	}
	next := f.pool.pickRetry(ex.tried[:ex.attempts])
	if next == nil {
		return nil
	}
	if !f.budget.allow(time.Now()) {
		f.metrics.retriesDenied.Inc()
		f.log.Warn("retry budget spent, not retrying", "upstream", b.label, "err", err, "request_id", ex.requestID)
		return nil
	}
	reason := retryAfterSend
	if connect {
		reason = retryConnect
	}
	f.metrics.retries[reason].Inc()
	f.log.Warn("retrying on another gateway", "upstream", b.label, "next", next.label,
		"reason", retryReasons[reason], "err", err, "request_id", ex.requestID)
	return next
}

// isIdempotent reports whether req may be sent twice: its method is
// idempotent by RFC 9110, or the client vouched for it with an
// Idempotency-Key (the header net/http's own transport honours too).
func isIdempotent(req *fasthttp.Request) bool {
	switch string(req.Header.Method()) {
	case "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE":
		return true
	}
	return len(req.Header.Peek("Idempotency-Key")) > 0 || len(req.Header.Peek("X-Idempotency-Key")) > 0
}

// budgetSlots is the length of the retry budget's window in seconds: one
// slot per second.
const budgetSlots = 10

// retryBudget caps retries at a share of recent requests, so that an outage
// is not multiplied by retries: with a 20 % budget, gateways that fail
// everything see at most 1.2 times the client traffic, not 1 + MaxRetries
// times. It is Finagle's RetryBudget idea on a 10 s sliding window of
// one-second slots: a retry is allowed while the retries of the window are
// below min + percent·requests/100.
//
// Counting a request is one atomic add on the current slot (plus a load of
// its second), so it stays on the hot path. The slots are cleared by
// whoever first uses them in a new second; a count racing with that may be
// lost, and two retries racing may both pass the check. The budget is a
// bound on orders of magnitude, not an exact quota.
type retryBudget struct {
	percent int64
	min     int64
	slots   [budgetSlots]budgetSlot
}

type budgetSlot struct {
	second   atomic.Int64 // the Unix second this slot counts
	requests atomic.Int64
	retries  atomic.Int64
}

func newRetryBudget(percent, min int) *retryBudget {
	return &retryBudget{percent: int64(percent), min: int64(min)}
}

// slot returns the slot of the second of now, cleared if it counted an
// older second.
func (b *retryBudget) slot(now time.Time) *budgetSlot {
	sec := now.Unix()
	s := &b.slots[sec%budgetSlots]
	if old := s.second.Load(); old != sec && s.second.CompareAndSwap(old, sec) {
		s.requests.Store(0)
		s.retries.Store(0)
	}
	return s
}

// request counts one client request.
func (b *retryBudget) request(now time.Time) { b.slot(now).requests.Add(1) }

// allow reports whether one more retry fits the budget, and if so counts
// it.
func (b *retryBudget) allow(now time.Time) bool {
	sec := now.Unix()
	var requests, retries int64
	for i := range b.slots {
		s := &b.slots[i]
		if sec-s.second.Load() < budgetSlots {
			requests += s.requests.Load()
			retries += s.retries.Load()
		}
	}
	if retries >= b.min+b.percent*requests/100 {
		return false
	}
	b.slot(now).retries.Add(1)
	return true
}
