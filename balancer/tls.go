package balancer

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/net/http2"

	"github.com/scalelab/scalelab/balancer/internal/rawconn"
	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/certs"
	"github.com/scalelab/scalelab/internal/envflag"
)

// TLSConfig is the balancer's HTTPS: a listener of its own (Addr, :8443 by
// default) that terminates TLS with the certificate and key of two PEM
// files, and proxies what it decrypts as the plain listener does, with the
// same policies, health, retries, headers and limits (X-Forwarded-Proto
// says https). The files are read again when they change (certs.Reloader),
// without dropping a connection. TLS connections are served by the
// goroutine engine, whatever --engine says: the event loops read and write
// raw sockets.
type TLSConfig struct {
	// Addr is the HTTPS address, used when Listener is nil and CertFile is
	// set.
	Addr string
	// Listener, when set, is served instead of listening on Addr, as
	// Config.Listener is. Not a flag. Run owns it.
	Listener net.Listener
	// CertFile and KeyFile are the PEM files of the certificate (with its
	// chain) and its key. Both or neither: neither serves no HTTPS.
	CertFile, KeyFile string
	// Redirect makes the plain listener answer every request outside /-/
	// with 308 to the same URL on https (the host the client named, the
	// port of Addr): a site that is HTTPS only.
	Redirect bool
}

// Environment variables of TLSConfig.
const (
	envTLSAddr     = "SCALELAB_TLS_ADDR"
	envTLSCert     = "SCALELAB_TLS_CERT"
	envTLSKey      = "SCALELAB_TLS_KEY"
	envTLSRedirect = "SCALELAB_HTTPS_REDIRECT"
)

// certCheckInterval is how often the certificate files are looked at for
// a change: a stat of two files, cheap, and soon enough after a renewal.
const certCheckInterval = 2 * time.Second

// On reports whether HTTPS is served.
func (c TLSConfig) On() bool { return c.CertFile != "" }

func (c *TLSConfig) registerFlags(s *envflag.Set) {
	s.String(&c.Addr, "tls-addr", envTLSAddr, c.Addr, "HTTPS address of the balancer, with --tls-cert and --tls-key")
	s.String(&c.CertFile, "tls-cert", envTLSCert, c.CertFile,
		"PEM file of the HTTPS certificate and its chain (read again when it changes); with --tls-key")
	s.String(&c.KeyFile, "tls-key", envTLSKey, c.KeyFile, "PEM file of the HTTPS certificate's key; with --tls-cert")
	s.Bool(&c.Redirect, "https-redirect", envTLSRedirect, c.Redirect,
		"answer plain HTTP requests (outside /-/) with 308 to https, on the port of --tls-addr")
}

func (c TLSConfig) validate(bad func(string, ...any)) {
	if err := certs.Check(c.CertFile, c.KeyFile); err != nil {
		bad("%w", err)
	}
	if !c.On() {
		if c.Redirect {
			bad("--https-redirect needs HTTPS: set --tls-cert and --tls-key")
		}
		return
	}
	if c.Listener == nil {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			bad("--tls-addr: %q is not host:port", c.Addr)
		}
	}
}

// tlsClientConn is a client's TLS connection: the TLS layer over the raw
// socket, and the balancer's clientConn (framing, limits, lingering close)
// over what it decrypts. It shows fasthttp the TLS state, so that
// RequestCtx.IsTLS is true and the request goes on with X-Forwarded-Proto:
// https.
type tlsClientConn struct {
	*clientConn
	tc *tls.Conn
}

// Handshake runs the TLS handshake, for fasthttp (which may call it).
func (c tlsClientConn) Handshake() error { return c.tc.Handshake() }

// ConnectionState is the TLS state, for fasthttp's IsTLS.
func (c tlsClientConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// redirectToHTTPS answers a plain request with 308 to the same target on
// https at port. Without a Host to send the client to, it answers 400.
func redirectToHTTPS(ctx *fasthttp.RequestCtx, port string) {
	host := string(ctx.Host())
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" {
		writeError(ctx, fasthttp.StatusBadRequest, apperr.Invalid, "this address serves HTTPS only, and the request names no Host to redirect to", "")
		return
	}
	if port != "443" {
		host = net.JoinHostPort(host, port)
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	ctx.Response.Header.Set("Location", "https://"+host+string(ctx.RequestURI()))
	ctx.SetStatusCode(fasthttp.StatusPermanentRedirect)
	if len(ctx.Request.Header.Peek("Content-Length")) > 0 || ctx.Request.Header.ContentLength() == -1 {
		// A body the redirect does not read: close after the answer,
		// lingering, as for a refused body.
		ctx.SetConnectionClose()
		lingerClient(ctx)
	}
}

// portOf is the port of addr, for redirectToHTTPS.
func portOf(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return strconv.Itoa(ta.Port)
	}
	_, port, _ := net.SplitHostPort(addr.String())
	return port
}

// tlsFront accepts the HTTPS listener's connections. Each handshake runs
// on a goroutine of its own, under the header timeout, so that a client
// that stalls in it holds nobody up; then ALPN decides: h2 is served by
// h2 (h2.go), anything else goes to the goroutine engine through slow.
type tlsFront struct {
	b          *balancer
	cfg        *tls.Config
	slow       *handoffListener
	h2         *h2Server
	handshakes sync.WaitGroup
}

func newTLSFront(b *balancer, cfg *tls.Config, slow *handoffListener) *tlsFront {
	return &tlsFront{b: b, cfg: cfg, slow: slow, h2: b.h2}
}

// accept accepts connections from ln, under the caps on client
// connections, until ln is closed.
func (t *tlsFront) accept(ln net.Listener) error {
	return acceptEach(patientListener{Listener: ln, log: t.b.log, limits: t.b.limits}, func(c net.Conn, slot *connSlot) {
		t.handshakes.Go(func() { t.handshake(c, slot) })
	})
}

// handshake runs the TLS handshake of c and hands the connection on by
// the protocol it chose.
func (t *tlsFront) handshake(c net.Conn, slot *connSlot) {
	tc := tls.Server(rawconn.Wrap(c), t.cfg)
	_ = tc.SetDeadline(time.Now().Add(t.b.cfg.ClientHeaderTimeout))
	if err := tc.Handshake(); err != nil {
		t.b.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		_ = tc.Close()
		slot.release()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
		t.h2.serve(&tlsSlotConn{Conn: tc, slot: slot})
		return
	}
	t.slow.giveConn(tlsClientConn{clientConn: &clientConn{Conn: tc, slot: slot}, tc: tc})
}

// drain sends the HTTP/2 connections away; HTTP/1.1 ones are the goroutine
// engine's.
func (t *tlsFront) drain() { t.h2.drain() }

// wait waits for the handshakes under way (each bounded by the header
// timeout) and the HTTP/2 connections, or ctx.
func (t *tlsFront) wait(ctx context.Context) error {
	t.handshakes.Wait()
	return t.h2.wait(ctx)
}

// tlsSlotConn is a TLS connection that gives its place under the caps on
// client connections back when it closes. The HTTP/2 server sees its TLS
// state (the request's TLS field, hence X-Forwarded-Proto: https).
type tlsSlotConn struct {
	*tls.Conn
	slot *connSlot
}

func (c *tlsSlotConn) Close() error {
	c.slot.release()
	return c.Conn.Close()
}
