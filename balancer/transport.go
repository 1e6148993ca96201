package balancer

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// backend is one gateway and its counters. The counters are atomics, read by
// GET /-/balancer while requests update them.
type backend struct {
	url   *url.URL
	label string // url.String(): the backend label in metrics and logs

	requests atomic.Int64 // attempts sent, including failed and retried ones
	errors   atomic.Int64 // attempts that failed (see metrics.backendErrors)
	inFlight atomic.Int64 // attempts whose response body is not yet closed

	metrics backendMetrics
}

// newTransport returns the transport to the gateways. Every timeout is
// explicit: a gateway that is down, blackholed or stuck must cost a client a
// bounded wait, never a hang.
func newTransport(cfg Config, backends int) *http.Transport {
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
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          cfg.MaxIdleConnsPerHost * backends,
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

// retryTransport sends a request to the gateway Rewrite picked and, when
// that gateway cannot be connected to, to the next ones in turn.
//
// Only connection failures are retried: then nothing of the request has
// left the balancer, so sending it elsewhere cannot do anything twice, even
// for a POST. Any later failure (a timeout waiting for headers, a reset
// connection) may have happened after the gateway acted, and is returned to
// the proxy's ErrorHandler as is. This is a cheap stand-in for health
// checking: every request that picks a dead gateway pays one refused
// connection (or, for a blackholed one, up to DialTimeout).
type retryTransport struct {
	next     http.RoundTripper
	backends []*backend
	log      *slog.Logger
}

// RoundTrip implements http.RoundTripper. It returns the last attempt's
// error when no gateway could be connected to, or the first error that is
// not a connection failure.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeFrom(req.Context())
	var body *unreadBody
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		// A shallow copy, as a RoundTripper must not change its request.
		r2 := new(http.Request)
		*r2 = *req
		body = &unreadBody{rc: req.Body}
		r2.Body = body
		req = r2
	}
	for i := 0; ; i++ {
		b := t.backends[(ex.first+i)%len(t.backends)]
		ex.backend = b
		res, err := b.roundTrip(t.next, req)
		if err == nil {
			return res, nil
		}
		if i == len(t.backends)-1 || !retryable(req, body, err) {
			return nil, err
		}
		t.log.Warn("gateway unreachable, trying the next one",
			"upstream", b.label, "err", err, "request_id", ex.requestID)
		next := t.backends[(ex.first+i+1)%len(t.backends)]
		if req, err = retarget(req, ex.base, next.url); err != nil {
			return nil, err
		}
	}
}

// roundTrip makes one attempt on b and keeps b's counters.
func (b *backend) roundTrip(next http.RoundTripper, req *http.Request) (*http.Response, error) {
	b.requests.Add(1)
	b.inFlight.Add(1)
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
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The proxy needs the body of an upgrade response to be the raw
		// io.ReadWriteCloser connection, so it is not wrapped; an upgraded
		// connection (a WebSocket) is not counted as in flight.
		b.inFlight.Add(-1)
		return res, nil
	}
	res.Body = &inFlightBody{ReadCloser: res.Body, b: b}
	return res, nil
}

// retryable reports whether a failed attempt may be sent to another gateway:
// the connection was never made (so nothing was sent), the client is still
// waiting, and the request body, if any, can be sent again.
func retryable(req *http.Request, body *unreadBody, err error) bool {
	if req.Context().Err() != nil || !isDialError(err) {
		return false
	}
	return body == nil || !body.read.Load()
}

// isDialError reports whether err is a failure to connect: refused, timed
// out, no route, unresolvable name.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retarget returns a copy of req aimed at target, built from base, the
// outbound URL before Rewrite called SetURL, so that a gateway's path prefix
// is applied exactly as SetURL does for the first attempt. It returns an
// error only if the request body cannot be obtained again.
func retarget(req *http.Request, base url.URL, target *url.URL) (*http.Request, error) {
	out := req.Clone(req.Context())
	out.URL = &base
	// ProxyRequest.SetURL touches only Out: reusing it keeps the path
	// joining and the Host header rule identical to the first attempt.
	(&httputil.ProxyRequest{Out: out}).SetURL(target)
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		out.Body = body
	}
	return out, nil
}

// unreadBody passes a request body through and remembers whether anything
// tried to read it. The http.Transport reads a body only after it has a
// connection, so after a dial error the body is untouched and can be sent to
// the next gateway as it is, without buffering it.
type unreadBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *unreadBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

// Close does nothing: the transport closes a body after a failed attempt,
// and the next attempt still needs it. The proxy closes the client's body
// itself when the request is done.
func (b *unreadBody) Close() error { return nil }

// inFlightBody counts its attempt out of backend.inFlight when closed. The
// proxy closes every response body, also when copying it fails.
type inFlightBody struct {
	io.ReadCloser
	b      *backend
	closed atomic.Bool
}

func (r *inFlightBody) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.b.inFlight.Add(-1)
	}
	return r.ReadCloser.Close()
}
