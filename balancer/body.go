package balancer

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
)

// Request bodies on the goroutine engine. fasthttp's server, left to
// itself, reads a body whole before the handler runs, into a buffer it
// sizes by the Content-Length: a client that sends the header of an 8 MiB
// POST and stalls would cost 8 MiB. With StreamRequestBody it reads the
// header and at most 8 KiB of the body (under the header timeout), and
// the handler reads the rest:
//
//   - takeBody reads up to replayLimit bytes into the exchange, as they
//     come. A body that ends there is the request's whole body, held in
//     memory as before, and may be sent again on a retry.
//   - A larger body streams: its first replayLimit bytes, then the rest
//     as the client sends it, copied to the gateway by the write of the
//     request (see clientBody). Nothing is allocated by the size the
//     client announces, and such a request is never sent twice once any
//     of it was sent (it was not before either: see replayLimit).
//
// Every read of a body waits at most Config.ClientBodyTimeout for bytes,
// and a body past maxRequestBody, announced or counted, is refused (413).

// errBodyTooLarge fails a body past maxRequestBody.
var errBodyTooLarge = errors.New("the request body is too large")

// clientBody is the rest of a request body, read from the client as the
// request is written to a gateway. It bounds each read by timeout and the
// whole body by maxRequestBody, and keeps the failure of a read, so that
// a broken or slow upload is told from a failing gateway.
type clientBody struct {
	src     io.Reader // fasthttp's stream of the body
	conn    net.Conn  // the client connection, whose read deadline it sets
	timeout time.Duration
	read    int   // bytes read of the body, what takeBody held included
	err     error // the failed read, if one failed
	eof     bool  // the body was read to its end
}

func (b *clientBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.conn != nil {
		if err := b.conn.SetReadDeadline(time.Now().Add(b.timeout)); err != nil {
			b.err = err
			return 0, err
		}
	}
	n, err := b.src.Read(p)
	b.read += n
	if b.read > maxRequestBody {
		// Not a byte past the limit goes on.
		n -= b.read - maxRequestBody
		b.read = maxRequestBody
		err = errBodyTooLarge
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, err
}

// bodyError is a request that failed because of its body: the client
// sent it too slowly, broke it off, or sent too much. It is the client's
// failure, not the gateway's: it is answered with a 4xx and never retried.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "read the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// status returns the status and message a body error is answered with.
func (e *bodyError) status() (int, string) {
	var ne net.Error
	switch {
	case errors.Is(e.err, errBodyTooLarge):
		return fasthttp.StatusRequestEntityTooLarge, "the request body is too large"
	case errors.Is(e.err, os.ErrDeadlineExceeded) || errors.As(e.err, &ne) && ne.Timeout():
		return fasthttp.StatusRequestTimeout, "the request body was not sent in time"
	}
	return fasthttp.StatusBadRequest, "the request body could not be read"
}

// takeBody reads the start of the body of ctx's request (see above): the
// whole body, up to replayLimit bytes, goes back into the request; a
// larger one makes ex.bodyRest the stream of the rest, and the request's
// body that stream, its first bytes included. It returns a *bodyError
// when the body is too large or could not be read.
func (ex *exchange) takeBody(ctx *fasthttp.RequestCtx, timeout time.Duration) error {
	req := &ctx.Request
	size := req.Header.ContentLength() // -1: chunked
	if size > maxRequestBody {
		return &bodyError{err: errBodyTooLarge}
	}
	stream := req.BodyStream()
	if stream == nil || size == 0 {
		return nil // no body, or one read whole already
	}
	body := &ex.clientBody
	*body = clientBody{src: stream, conn: ctx.Conn(), timeout: timeout}
	buf := ex.reqBody[:0]
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= replayLimit {
				break // larger: it streams
			}
			// Grown as bytes come, never by the announced size.
			buf = slices.Grow(buf, min(max(2*cap(buf), 4<<10), replayLimit)-len(buf))
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			ex.reqBody = buf
			req.SetBody(buf) // whole: it may be sent again
			return nil
		}
		if err != nil {
			ex.reqBody = buf
			return &bodyError{err: err}
		}
	}
	ex.reqBody = buf
	ex.bodyRest = body
	req.SetBodyStream(io.MultiReader(&ex.bodyHead, body), size)
	ex.bodyHead.Reset(buf)
	return nil
}

// unreadBody reports whether the gateway answered before the streamed
// body of ex was read to its end (an early 413, say). The rest is not
// read: the client connection is closed after the answer.
func (ex *exchange) unreadBody() bool {
	return ex.bodyRest != nil && !ex.bodyRest.eof
}

// refuseBody answers a request whose body failed (see bodyError), and
// closes the connection: what is left of the body is not read.
func (b *balancer) refuseBody(ex *exchange, be *bodyError) {
	ctx := ex.ctx
	status, msg := be.status()
	if len(ex.uri) == 0 { // for the log: the request was not prepared
		ex.uri = append(ex.uri, ctx.Request.Header.RequestURI()...)
	}
	b.log.Debug("request body refused", "status", status, "err", be.err, "request_id", ex.requestID)
	ex.status = status
	ctx.Response.Reset()
	writeError(ctx, status, apperr.CodeForStatus(status), msg, ex.requestID)
	ctx.SetConnectionClose()
	lingerClient(ctx) // the client may still be sending
}

// opsBodyLimit bounds the body of a request to the balancer's own routes,
// which fasthttpadaptor reads whole: they take none worth the name.
const opsBodyLimit = 64 << 10

// opsBodyTooLarge reports whether the request of ctx, to a /-/ route, has
// a body that must not be read whole: over opsBodyLimit, or chunked (of
// unknown size). It answers such a request with 413.
func opsBodyTooLarge(ctx *fasthttp.RequestCtx) bool {
	size := ctx.Request.Header.ContentLength()
	if size <= opsBodyLimit && size != -1 {
		return false
	}
	status := fasthttp.StatusRequestEntityTooLarge
	writeError(ctx, status, apperr.CodeForStatus(status), "the request body is too large", "")
	ctx.SetConnectionClose()
	lingerClient(ctx)
	return true
}
