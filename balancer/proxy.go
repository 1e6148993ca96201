package balancer

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/reqid"
)

// exchange is what the balancer knows about one client request while it is
// proxied. It is the request's context from ServeHTTP on, through Rewrite,
// the transport and the error handler, all of which run on the handler's
// goroutine, so its fields need no locking.
//
// Being the context itself (the client request's context, embedded, plus a
// Value that answers exchangeKey) saves the allocation of a
// context.WithValue on every request; it changes nothing else about the
// context: cancellation and deadlines are the embedded one's.
type exchange struct {
	context.Context
	requestID string
	base      url.URL  // the outbound URL before SetURL, for retries elsewhere
	backend   *backend // the backend of the last attempt; nil if none was ready
	// holding is set when an attempt on backend got an answer: its
	// in-flight count then includes this exchange until finish.
	holding  bool
	attempts int
	tried    [maxRetriesLimit + 1]*backend
	// w is embedded here rather than allocated on its own: one allocation
	// per request fewer.
	w statusWriter
}

type exchangeKey struct{}

// Value implements context.Context: exchangeKey is the exchange itself.
func (ex *exchange) Value(key any) any {
	if key == (exchangeKey{}) {
		return ex
	}
	return ex.Context.Value(key)
}

// exchangeFrom returns the exchange ServeHTTP made the request's context (or
// an ancestor of it: the proxy derives the outbound request's context from
// it). Every request the proxy sees comes through ServeHTTP, so it is never
// nil there.
func exchangeFrom(ctx context.Context) *exchange {
	ex, _ := ctx.Value(exchangeKey{}).(*exchange)
	return ex
}

// requestIDKey is reqid.Header in canonical form. Headers are read and set
// with it directly: http.Header's Get and Set canonicalize their key, which
// for a key that is not canonical already, like "X-Request-ID", allocates
// on every call, on the hot path.
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

// newProxy returns the reverse proxy, sending through transport.
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

// rewrite aims the outbound request at the backend serveProxy picked.
// ReverseProxy has already removed the client's Forwarded and X-Forwarded-*
// headers and hop-by-hop headers, so a client cannot spoof its address or
// strip the headers set here (which a Director could not guarantee).
func (b *balancer) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeFrom(pr.In.Context())
	ex.base = *pr.Out.URL
	// SetURL also clears Out.Host, so the gateway sees its own host name;
	// the client's is in X-Forwarded-Host.
	pr.SetURL(ex.backend.url)
	pr.SetXForwarded()
	pr.Out.Header[requestIDKey] = []string{ex.requestID}
}

// modifyResponse gives the client the request ID. A gateway normally echoes
// the one it was sent; if it did not, the balancer adds it (adding when one
// is there would send the client two).
func modifyResponse(res *http.Response) error {
	if v := res.Header[requestIDKey]; len(v) == 0 || v[0] == "" {
		res.Header[requestIDKey] = []string{exchangeFrom(res.Request.Context()).requestID}
	}
	return nil
}

// handleError answers a request that no gateway could serve: 502 with the
// house error body. It is the one place such a failure is logged.
func (b *balancer) handleError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r.Context())
	if r.Context().Err() != nil {
		// The client hung up while we waited; there is nobody to answer and
		// nothing the gateways did wrong.
		b.log.Debug("client went away", "upstream", ex.backend.label, "err", err, "request_id", ex.requestID)
		w.WriteHeader(statusClientClosed)
		return
	}
	b.log.Warn(msgBadGateway, "upstream", ex.backend.label, "attempts", ex.attempts, "err", err,
		"request_id", ex.requestID, "method", r.Method, "path", r.URL.Path)
	w.Header()[requestIDKey] = []string{ex.requestID}
	apperr.WriteCode(w, http.StatusBadGateway, apperr.Unavailable, msgBadGateway, ex.requestID)
}

// serveProxy proxies one request and records it. With no ready backend it
// answers 503 at once: there is nothing to wait for.
func (b *balancer) serveProxy(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ex := &exchange{Context: r.Context()}
	if v := r.Header[requestIDKey]; len(v) > 0 {
		ex.requestID = reqid.Or(v[0])
	} else {
		ex.requestID = reqid.New()
	}
	if max := int64(b.cfg.MaxInFlight); max > 0 {
		defer b.inFlight.Add(-1)
		if b.inFlight.Add(1) > max {
			b.metrics.overloaded.Inc()
			w.Header()[requestIDKey] = []string{ex.requestID}
			w.Header().Set("Retry-After", "1")
			apperr.WriteCode(w, http.StatusServiceUnavailable, apperr.Unavailable, msgOverloaded, ex.requestID)
			return
		}
	}
	ex.w.ResponseWriter = w
	ex.backend = b.pool.pick()
	// Deferred so that a response cut off half-way (the proxy aborts the
	// handler with http.ErrAbortHandler) is still counted.
	defer b.finish(r, ex, start)
	if ex.backend == nil {
		ex.w.Header()[requestIDKey] = []string{ex.requestID}
		apperr.WriteCode(&ex.w, http.StatusServiceUnavailable, apperr.Unavailable, msgNoBackend, ex.requestID)
		return
	}
	b.budget.request(start)
	b.proxy.ServeHTTP(&ex.w, r.WithContext(ex))
}

// finish ends an exchange: it releases the backend's in-flight count and
// records the request in the metrics and, at debug level, in the access
// log.
func (b *balancer) finish(r *http.Request, ex *exchange, start time.Time) {
	if ex.holding {
		ex.backend.inFlight.Add(-1)
	}
	d := time.Since(start)
	status := ex.w.status
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
		slog.Int("attempts", ex.attempts),
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
// proxied response allocates (and the GC sweeps) 32 KiB. It pools pointers
// to arrays: a slice converts to one and back without allocating, where
// pooling the slice itself would box its header on every Put.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { return new([bufferSize]byte) }}}
}

// Get implements httputil.BufferPool.
func (p *bufferPool) Get() []byte { return p.pool.Get().(*[bufferSize]byte)[:] }

// Put implements httputil.BufferPool; buffers of another size are dropped.
func (p *bufferPool) Put(buf []byte) {
	if cap(buf) != bufferSize {
		return
	}
	p.pool.Put((*[bufferSize]byte)(buf[:bufferSize]))
}
