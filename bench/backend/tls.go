package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"
)

// serveTLS answers over TLS until ctx ends, with the balancer's TLS stack
// (balancer/tls.go): a handshake per connection on its own goroutine, then
// fasthttp for HTTP/1.1 or x/net/http2 for h2, as ALPN decided.
func serveTLS(ctx context.Context, ln net.Listener, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load certificate: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	h1 := &fasthttp.Server{
		Handler: func(c *fasthttp.RequestCtx) {
			c.SetContentType("application/json")
			c.SetBodyString(body)
		},
		NoDefaultServerHeader: true,
		NoDefaultDate:         true,
		IdleTimeout:           120 * time.Second,
	}
	length := strconv.Itoa(len(body))
	h2 := &http2.Server{IdleTimeout: 120 * time.Second}
	h2opts := &http2.ServeConnOpts{Context: ctx, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		_, _ = io.WriteString(w, body)
	})}
	go func() {
		<-ctx.Done()
		_ = ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			tc := tls.Server(c, cfg)
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				_ = c.Close()
				return
			}
			if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
				h2.ServeConn(tc, h2opts)
				return
			}
			_ = h1.ServeConn(tc)
		}()
	}
}
