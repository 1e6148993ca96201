package main

import (
	"crypto/rand"
	"net"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// serveFasthttp serves on addr with the goroutine-per-connection core.
func serveFasthttp(addr string, backends []*net.TCPAddr) error {
	clients := make([]*fasthttp.HostClient, len(backends))
	for i, b := range backends {
		clients[i] = &fasthttp.HostClient{
			Addr:                      b.String(),
			MaxConns:                  1 << 16,
			MaxIdemponentCallAttempts: 1,
			DisablePathNormalizing:    true,
			NoDefaultUserAgentHeader:  true,
		}
	}
	var next atomic.Uint64
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			requestID := rand.Text()
			closeAsked := ctx.Request.Header.ConnectionClose()
			var ipBuf [64]byte
			prepare(&ctx.Request.Header, appendIP(ipBuf[:0], ctx.RemoteIP()), requestID)
			hc := clients[next.Add(1)%uint64(len(clients))]
			ctx.Request.Header.SetHost(hc.Addr)
			if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Response.Reset()
				ctx.SetStatusCode(fasthttp.StatusBadGateway)
				ctx.SetContentType("application/json")
				ctx.SetBodyString(badGatewayBody)
				ctx.Response.Header.Set("X-Request-Id", requestID)
				return
			}
			prepareResponse(&ctx.Response.Header, requestID, closeAsked)
		},
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
	}
	return srv.ListenAndServe(addr)
}

// appendIP appends ip in text form to dst.
func appendIP(dst []byte, ip net.IP) []byte {
	b, _ := ip.AppendText(dst)
	return b
}
