package balancer

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// roundRobin hands out backends in turn. next is lock-free: one atomic add
// per request, so the pick does not serialize concurrent requests.
type roundRobin struct {
	backends []*backend
	n        atomic.Uint64
}

// next returns the index of the next backend. Concurrent callers get
// distinct turns, so over k·N picks every backend is picked exactly N times.
func (p *roundRobin) next() int {
	return int((p.n.Add(1) - 1) % uint64(len(p.backends)))
}

// exchange is what the balancer knows about one client request while it is
// proxied. It travels in the request context from ServeHTTP through Rewrite,
// the transport and the error handler, all of which run on the handler's
// goroutine, so its fields need no locking.
type exchange struct {
	requestID string
	first     int      // index of the backend Rewrite picked
	base      url.URL  // the outbound URL before SetURL, for retries elsewhere
	backend   *backend // the backend tried last; nil until the transport runs
}

type exchangeKey struct{}

// exchangeFrom returns the exchange ServeHTTP put in ctx. Every request the
// proxy sees comes through ServeHTTP, so it is never nil there.
func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// statusClientClosed is nginx's 499 "client closed request": the status
// recorded (and nominally written) when the client went away before a
// gateway answered. It keeps departed clients out of the 5xx numbers.
const statusClientClosed = 499

// msgBadGateway is what a client is told when no gateway could serve it. It
// names no gateway: their addresses are internal and are in the log.
const msgBadGateway = "no gateway could serve the request"

// newProxy returns the reverse proxy over b.pool, sending through transport.
//
// FlushInterval stays 0 (buffer writes to the client): httputil.ReverseProxy
// already flushes after every write when the response is
// text/event-stream or has no Content-Length (streamed), see
// ReverseProxy.flushInterval in net/http/httputil, so server-sent events
// and long-poll streams are not held back.
func (b *balancer) newProxy(transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:        b.rewrite,
		Transport:      transport,
		ModifyResponse: modifyResponse,
		ErrorHandler:   b.handleError,
		BufferPool:     newBufferPool(),
		ErrorLog:       slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
	}
}

// rewrite picks the next gateway and aims the outbound request at it.
// ReverseProxy has already removed the client's Forwarded and X-Forwarded-*
// headers and hop-by-hop headers, so a client cannot spoof its address or
// strip the headers set here (which a Director could not guarantee).
func (b *balancer) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeFrom(pr.In.Context())
	ex.first = b.pool.next()
	ex.base = *pr.Out.URL
	// SetURL also clears Out.Host, so the gateway sees its own host name;
	// the client's is in X-Forwarded-Host.
	pr.SetURL(b.pool.backends[ex.first].url)
	pr.SetXForwarded()
	pr.Out.Header.Set(reqid.Header, ex.requestID)
}

// modifyResponse gives the client the request ID. A gateway normally echoes
// the one it was sent; if it did not, the balancer adds it (adding when one
// is there would send the client two).
func modifyResponse(res *http.Response) error {
	if res.Header.Get(reqid.Header) == "" {
		res.Header.Set(reqid.Header, exchangeFrom(res.Request.Context()).requestID)
	}
	return nil
}

// handleError answers a request that no gateway could serve: 502 with the
// house error body. It is the one place such a failure is logged.
func (b *balancer) handleError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r.Context())
	upstream := noBackend
	if ex.backend != nil {
		upstream = ex.backend.label
	}
	if r.Context().Err() != nil {
		// The client hung up while we waited; there is nobody to answer and
		// nothing the gateways did wrong.
		b.log.Debug("client went away", "upstream", upstream, "err", err, "request_id", ex.requestID)
		w.WriteHeader(statusClientClosed)
		return
	}
	b.log.Warn(msgBadGateway, "upstream", upstream, "err", err, "request_id", ex.requestID,
		"method", r.Method, "path", r.URL.Path)
	w.Header().Set(reqid.Header, ex.requestID)
	apperr.WriteCode(w, http.StatusBadGateway, apperr.Unavailable, msgBadGateway, ex.requestID)
}

// serveProxy proxies one request and records it.
func (b *balancer) serveProxy(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ex := &exchange{requestID: reqid.Or(r.Header.Get(reqid.Header))}
	sw := &statusWriter{ResponseWriter: w}
	// Deferred so that a response cut off half-way (the proxy aborts the
	// handler with http.ErrAbortHandler) is still counted.
	defer b.finish(sw, r, ex, start)
	b.proxy.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex)))
}

// finish records a proxied request in the metrics and, at debug level, in
// the access log.
func (b *balancer) finish(w *statusWriter, r *http.Request, ex *exchange, start time.Time) {
	d := time.Since(start)
	status := w.status
	if status == 0 {
		status = http.StatusOK // nothing written: net/http sends an empty 200
	}
	b.metrics.observe(ex.backend, status, d)
	// Checked first so that a busy balancer at info level does not build
	// attributes nobody will see.
	if !b.log.Enabled(r.Context(), slog.LevelDebug) {
		return
	}
	upstream := noBackend
	if ex.backend != nil {
		upstream = ex.backend.label
	}
	b.log.LogAttrs(r.Context(), slog.LevelDebug, "proxied",
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.String("upstream", upstream),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("request_id", ex.requestID),
	)
}

// statusWriter remembers the status written through it. Unwrap lets
// http.ResponseController (which the proxy uses to flush and, for upgrades,
// to hijack) reach the real writer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx responses other than 101 are interim; the final status follows.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bufferSize is the size of the buffers responses are copied through, the
// size io.Copy and the proxy would allocate per response otherwise.
const bufferSize = 32 << 10

// bufferPool recycles copy buffers across responses: without it every
// proxied response allocates (and the GC sweeps) 32 KiB.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any {
		buf := make([]byte, bufferSize)
		return &buf
	}}}
}

// Get implements httputil.BufferPool.
func (p *bufferPool) Get() []byte { return *p.pool.Get().(*[]byte) }

// Put implements httputil.BufferPool. Storing costs one small allocation
// (the pointer to the slice header), far less than a new buffer; buffers of
// another size are dropped.
func (p *bufferPool) Put(buf []byte) {
	if cap(buf) != bufferSize {
		return
	}
	buf = buf[:bufferSize]
	p.pool.Put(&buf)
}
