package balancer

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// newTransport returns the transport to the gateways. Every timeout is
// explicit: a gateway that is down, blackholed or stuck must cost a client a
// bounded wait, never a hang.
func newTransport(cfg Config) *http.Transport {
	dialer := &net.Dialer{
		Timeout:   cfg.DialTimeout,
		KeepAlive: 30 * time.Second, // notice gateways that vanish without a FIN
	}
	return &http.Transport{
		// Proxy is nil on purpose: an HTTP_PROXY meant for the outside world
		// must not capture traffic to the gateways.
		Proxy:       nil,
		DialContext: dialer.DialContext,
		// Gateways speak HTTP/1.1 in clear; HTTP/2 over TLS would multiplex
		// everything onto one connection per gateway, which suits a proxy
		// less than a pool of connections.
		ForceAttemptHTTP2: false,
		// MaxIdleConns caps idle connections over all gateways; with
		// discovery their number is not known up front, and zero means no
		// cap. MaxIdleConnsPerHost is what bounds them.
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   cfg.MaxIdleConnsPerHost,
		IdleConnTimeout:       cfg.IdleConnTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: 1 * time.Second,
		// Without this the transport asks for gzip on behalf of clients
		// that did not, and unzips the answer: CPU spent for nothing, and
		// the client no longer gets the gateway's headers as they were.
		DisableCompression: true,
	}
}

// replayLimit is the largest request body a retry after a failed exchange
// can send again. The body is kept in memory as it is sent, so larger
// bodies are not retried once sent (a failed connection is still retried:
// then the body was not read at all).
const replayLimit = 64 << 10

// retryTransport sends a request to the backend the proxy picked and, when
// that fails, to other ready backends:
//
//   - A failure to connect is retried for any method: nothing of the
//     request left the balancer.
//   - A failure after the request was sent (reset, broken connection,
//     timeout waiting for headers) is retried only for an idempotent
//     request (GET, HEAD, PUT, DELETE, OPTIONS, TRACE, or any method with an
//     Idempotency-Key header) whose body can be sent again (see
//     replayLimit). A POST that reached a gateway is never sent twice.
//   - An answer is never retried, 5xx included: the gateway answered, and
//     its answer (perhaps streamed already) goes to the client.
//
// Each request is retried at most maxRetries times, each time on a backend
// it has not tried, and only while the retry budget allows.
type retryTransport struct {
	next       http.RoundTripper
	pool       *pool
	budget     *retryBudget
	maxRetries int
	metrics    *metrics
	log        *slog.Logger
}

// RoundTrip implements http.RoundTripper. It returns the error of the last
// attempt when no attempt got an answer.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeFrom(req.Context())
	idempotent := isIdempotent(req)
	var body *replayBody
	if req.Body != nil && req.Body != http.NoBody {
		limit := 0
		if idempotent {
			limit = replayLimit
		}
		body = newReplayBody(req.Body, limit)
		// A shallow copy, as a RoundTripper must not change its request.
		r2 := new(http.Request)
		*r2 = *req
		r2.Body = body
		req = r2
	}
	out, b := req, ex.backend
	for {
		ex.tried[ex.attempts] = b
		ex.attempts++
		res, err := b.roundTrip(t.next, out)
		if err == nil {
			ex.holding = true
			t.pool.observe(b, res.StatusCode >= 500)
			return res, nil
		}
		if req.Context().Err() != nil {
			// The client hung up: not the gateway's fault, nobody to retry for.
			return nil, err
		}
		t.pool.observe(b, true)
		connect := isDialError(err)
		if !connect && !idempotent {
			return nil, err
		}
		if body != nil && !body.replayable() {
			return nil, err
		}
		if ex.attempts > t.maxRetries {
			return nil, err
		}
		next := t.pool.pickRetry(ex.tried[:ex.attempts])
		if next == nil {
			return nil, err
		}
		if !t.budget.allow(time.Now()) {
			t.metrics.retriesDenied.Inc()
			t.log.Warn("retry budget spent, not retrying", "upstream", b.label, "err", err, "request_id", ex.requestID)
			return nil, err
		}
		reason := retryAfterSend
		if connect {
			reason = retryConnect
		}
		t.metrics.retries[reason].Inc()
		t.log.Warn("retrying on another gateway", "upstream", b.label, "next", next.label,
			"reason", retryReasons[reason], "err", err, "request_id", ex.requestID)
		out = retarget(req, ex.base, next.url)
		if body != nil {
			out.Body = body.replay()
		}
		ex.backend, b = next, next
	}
}

// roundTrip makes one attempt on b and keeps b's counters. On success b's
// in-flight count stays raised until the exchange ends (see
// balancer.finish): the response body is still to be copied.
func (b *backend) roundTrip(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	b.requests.Add(1)
	b.inFlight.Add(1)
	start := time.Now()
	res, err := next.RoundTrip(req)
	if err != nil {
		b.inFlight.Add(-1)
		// A client that hung up is not the gateway's fault.
		if req.Context().Err() == nil {
			b.errors.Add(1)
			b.metrics.errors.Inc()
		}
		return nil, err
	}
	now := time.Now()
	b.latency.record(now, now.Sub(start))
	return res, nil
}

// isIdempotent reports whether req may be sent twice: its method is
// idempotent by RFC 9110, or the client vouched for it with an
// Idempotency-Key (the header net/http's own transport honours too).
func isIdempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions, http.MethodTrace:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// isDialError reports whether err is a failure to connect: refused, timed
// out, no route, unresolvable name.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retarget returns a copy of req aimed at target, built from base, the
// outbound URL before Rewrite called SetURL, so that a gateway's path prefix
// is applied exactly as SetURL does for the first attempt.
func retarget(req *http.Request, base url.URL, target *url.URL) *http.Request {
	out := req.Clone(req.Context())
	out.URL = &base
	// ProxyRequest.SetURL touches only Out: reusing it keeps the path
	// joining and the Host header rule identical to the first attempt.
	(&httputil.ProxyRequest{Out: out}).SetURL(target)
	return out
}

// errBodyReplaced is what an attempt that outlived its RoundTrip reads from
// a request body that a retry took over.
var errBodyReplaced = errors.New("balancer: request body handed to a retry")

// replayBody passes a request body through, keeping up to limit bytes of
// it, so that a retry can send it again: replay returns a reader that
// yields the kept bytes and then the rest of the body.
//
// The transport may still be reading the body of a failed attempt (its
// writing goroutine can outlive RoundTrip), so only the newest reader may
// read; the others get errBodyReplaced. Reads hold the lock, which makes a
// replay wait for a read in progress rather than share the client's
// connection with it.
type replayBody struct {
	s   *replayState
	off int // bytes of s.kept this reader has returned
}

type replayState struct {
	mu      sync.Mutex
	src     io.ReadCloser
	limit   int
	kept    []byte
	spoiled bool        // bytes were read that kept does not hold
	reader  *replayBody // the reader allowed to read
}

func newReplayBody(src io.ReadCloser, limit int) *replayBody {
	s := &replayState{src: src, limit: limit}
	s.reader = &replayBody{s: s}
	return s.reader
}

func (r *replayBody) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reader != r {
		return 0, errBodyReplaced
	}
	if r.off < len(s.kept) {
		n := copy(p, s.kept[r.off:])
		r.off += n
		return n, nil
	}
	n, err := s.src.Read(p)
	if n > 0 && !s.spoiled {
		if len(s.kept)+n <= s.limit {
			s.kept = append(s.kept, p[:n]...)
			r.off += n
		} else {
			s.spoiled, s.kept = true, nil
		}
	}
	return n, err
}

// Close does nothing: the transport closes a body after a failed attempt,
// and a retry may still need it. The proxy closes the client's body itself
// when the request is done.
func (r *replayBody) Close() error { return nil }

// replayable reports whether everything read so far can be read again.
func (r *replayBody) replayable() bool {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return !r.s.spoiled
}

// replay returns a reader of the whole body, from its start, and retires
// every earlier reader.
func (r *replayBody) replay() *replayBody {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	next := &replayBody{s: r.s}
	r.s.reader = next
	return next
}
