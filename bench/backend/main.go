// Command backend is the trivial gateway stand-in of bench/lb.sh: it
// answers every request with the same small JSON body, so that a benchmark
// of the proxies in front of it measures the proxies. It is not part of
// scalelab.
//
//	go run ./bench/backend -addr 127.0.0.1:18081
//
// With -front it is instead the in-process two-hop ceiling of
// bench/cache/run.sh: `up`'s front door, scalelab's balancer, in front of
// two of these servers in the same process (front.go).
//
//	go run ./bench/backend -addr 127.0.0.1:18082 -front
//
// With -tls-cert and -tls-key it is instead the Go TLS ceiling of
// bench/lb.sh (TLS=1): it terminates TLS as the balancer does (crypto/tls,
// a goroutine per connection, fasthttp for HTTP/1.1 and
// golang.org/x/net/http2 for h2 by ALPN) and answers itself. No proxy
// built on those libraries can be faster than it; its rows show how much
// of the gap to nginx and HAProxy is theirs.
//
//	go run ./bench/backend -addr 127.0.0.1:18091 -tls-cert cert.pem -tls-key key.pem
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// body is what every request gets: about the size of a cached /data
// answer's head.
const body = `{"cached":true,"data":"Fetched fresh data from DB","served_by":"bench-backend"}` + "\n"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:18081", "address to listen on")
	certFile := fs.String("tls-cert", "", "PEM certificate: serve HTTPS (HTTP/1.1 and h2) instead, as the Go TLS ceiling")
	keyFile := fs.String("tls-key", "", "PEM key of -tls-cert")
	front := fs.Bool("front", false, "serve -addr through scalelab's balancer in this process, as `up`'s front door serves its gateways: the two-hop ceiling of bench/cache/run.sh")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	if *certFile != "" {
		return serveTLS(ctx, ln, *certFile, *keyFile)
	}
	handler := trivialHandler()
	if *front {
		return serveFront(ctx, ln, handler)
	}
	srv := newServer(handler)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// trivialHandler answers every request with body.
func trivialHandler() http.Handler {
	length := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Set directly, skipping canonicalization: the keys are canonical.
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{length}
		_, _ = io.WriteString(w, body)
	})
}

// newServer is the trivial server's http.Server, with handler.
func newServer(handler http.Handler) *http.Server {
	return &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second}
}
