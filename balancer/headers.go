package balancer

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/scalelab/scalelab/internal/apperr"
)

// This file rewrites requests on their way to a gateway and answers on
// their way back (see "Headers" in doc.go), and makes the balancer's own
// error answers.

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
	ex.client = ip
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
