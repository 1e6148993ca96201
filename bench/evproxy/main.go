// Command evproxy is an experiment of bench/lb.sh, not part of scalelab: a
// bare HTTP/1.1 reverse proxy with two interchangeable cores, so that one
// run can tell what the balancer's architecture costs per request.
//
//   - -engine gnet: event loops (gnet). Each loop owns its client
//     connections and its own idle gateway connections: a request is read,
//     rewritten, sent, and its answer read and written back on one OS
//     thread, with one epoll wait for many sockets, as an nginx worker
//     does. Nothing parks or wakes a goroutine per request.
//   - -engine fasthttp: a goroutine per client connection, as scalelab's
//     balancer has (fasthttp's server, and HostClient.Do to the gateways).
//
// Both do the same per-request work as the balancer's hot path: fasthttp
// parses and writes the headers, hop-by-hop and forwarding headers are
// dropped, X-Forwarded-For/-Host/-Proto and a random X-Request-ID are set,
// gateways are taken round robin over kept-alive connections. What the
// balancer has besides (health checks, retries, timeouts, other policies,
// metrics and latency histograms, drain) neither core has; and the gnet
// core passes on only answers that carry a Content-Length, and no TLS. It is
// a measurement of the core, not a product.
//
//	go run . -engine gnet -addr 127.0.0.1:18086 -backends 127.0.0.1:18080,127.0.0.1:18081
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
)

func main() {
	engine := flag.String("engine", "gnet", "the proxy's core: gnet (event loops) or fasthttp (a goroutine per connection)")
	addr := flag.String("addr", "127.0.0.1:18086", "address to listen on")
	list := flag.String("backends", "127.0.0.1:18080,127.0.0.1:18081", "gateways, comma-separated host:port")
	flag.Parse()
	var backends []*net.TCPAddr
	for _, b := range strings.Split(*list, ",") {
		a, err := net.ResolveTCPAddr("tcp", strings.TrimPrefix(b, "http://"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "evproxy:", err)
			os.Exit(2)
		}
		backends = append(backends, a)
	}
	var err error
	switch *engine {
	case "gnet":
		err = serveGnet(*addr, backends)
	case "fasthttp":
		err = serveFasthttp(*addr, backends)
	default:
		err = fmt.Errorf("unknown -engine %q: gnet or fasthttp", *engine)
	}
	fmt.Fprintln(os.Stderr, "evproxy:", err)
	os.Exit(1)
}
