package main

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// hopByHop are the headers the balancer drops in both directions.
var hopByHop = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// prepare rewrites a request header as the balancer does: hop-by-hop
// and forwarding headers out, X-Forwarded-* and X-Request-ID in. The
// caller sets the Host.
func prepare(h *fasthttp.RequestHeader, ip []byte, requestID string) {
	var hop, fwd bool
	for k := range h.All() {
		switch {
		case isHopByHop(k):
			hop = true
		case string(k) == "Forwarded" || bytes.HasPrefix(k, []byte("X-Forwarded-")):
			fwd = true
		}
	}
	h.ResetConnectionClose()
	if hop {
		for _, name := range hopByHop {
			h.Del(name)
		}
	}
	if fwd {
		h.Del("Forwarded")
		h.Del("X-Forwarded-For")
		h.Del("X-Forwarded-Host")
		h.Del("X-Forwarded-Proto")
	}
	h.SetCanonical([]byte("X-Forwarded-For"), ip)
	h.SetCanonical([]byte("X-Forwarded-Host"), h.Host())
	h.Set("X-Forwarded-Proto", "http")
	h.Set("X-Request-Id", requestID)
}

func isHopByHop(key []byte) bool {
	for _, h := range hopByHop {
		if string(key) == h {
			return true
		}
	}
	return false
}

// prepareResponse rewrites an answer's header as the balancer does:
// hop-by-hop headers out, the client's Connection: close in, and the
// request ID when the gateway did not echo it.
func prepareResponse(h *fasthttp.ResponseHeader, requestID string, closeAsked bool) {
	for k := range h.All() {
		if isHopByHop(k) {
			for _, name := range hopByHop {
				h.Del(name)
			}
			break
		}
	}
	h.ResetConnectionClose()
	if closeAsked {
		h.SetConnectionClose()
	}
	if len(h.Peek("X-Request-Id")) == 0 {
		h.Set("X-Request-Id", requestID)
	}
}

// badGatewayBody is the answer to a request no gateway answered.
const badGatewayBody = `{"error":{"code":"unavailable","message":"no gateway could serve the request"}}` + "\n"
