// Package balancer is scalelab's front door: an HTTP reverse proxy on :8000
// that spreads requests over the API gateways, keeps track of which of them
// are healthy, and finds them in DNS when they are scaled out.
//
// The lab's balancer answered every request with a 307 redirect, so clients
// talked to the gateways directly and the gateways had to be reachable from
// outside. This one is a real proxy: the client's connection ends here, and
// the balancer opens (and reuses) its own connections to the gateways.
//
// It serves and proxies with github.com/valyala/fasthttp rather than
// net/http and httputil.ReverseProxy, which the house style names: with
// them the balancer spent about three times nginx's CPU per request, almost
// all of it in net/http (see bench/README.md). fasthttp.Server reads and
// writes requests in buffers it reuses; per gateway a fasthttp.HostClient
// keeps the connection pool, and upstream.roundTrip writes each request and
// reads its answer on the handler's goroutine. The /-/ routes stay net/http
// handlers, served through fasthttpadaptor; health checks use net/http.
// Client and gateway sockets read and write through balancer/internal/rawconn: raw
// system calls that the Go scheduler does not hand off, and on gateway
// connections each request held until the read of its answer, which sends
// it and waits without first trying a read that would find nothing. Both
// cut the balancer's CPU per request by about a tenth (bench/README.md).
// What was left between it and nginx was the goroutine per connection
// itself: with the same work per request, an event-loop core costs about a
// quarter less CPU (bench/evproxy, measured in bench/README.md). Hence the
// two engines below.
//
// # Engines
//
// --engine (SCALELAB_ENGINE) chooses how client connections are served:
//
//   - loop (default): event loops, one per core (github.com/panjf2000/gnet),
//     as nginx's workers do; --event-loops sets another number. An idle
//     loop waits in epoll_wait holding its P, so a process that runs other
//     work beside the balancer runs fewer loops than Ps (`up` does; see
//     Config.EventLoops). Each loop owns its client connections and its
//     own idle connections to every gateway, and serves the ready sockets
//     one epoll_wait returns in turn, where a goroutine per connection
//     would park and wake two goroutines per request. The loops proxy the
//     common request: HTTP/1.1 in origin form, outside /-/, without
//     Upgrade, Expect or a chunked body, with a body of at most 64 KiB
//     (a larger one moves once its first 64 KiB are in, so that a client
//     that stalls after the header costs only what it sent). An
//     answer whose body is at most 1 MiB is passed on whole; a larger,
//     chunked or close-delimited one is streamed by a goroutine, which
//     writes as it reads (a slow client slows its gateway down rather than
//     filling memory). Any other request (/-/, a large upload, one that does
//     not parse), and a connection whose answer was streamed, moves to the
//     goroutine engine, connection and all: its socket and the bytes read
//     of it change hands, and nothing is lost or reordered. A timeout sweep
//     on each loop every 50 ms enforces the response header timeout and the
//     client timeouts (see Client limits, and 120 s idle).
//   - goroutine: fasthttp's server, a goroutine per connection. It is also
//     the engine of gateways reached over https.
//
// HTTPS (--tls-cert, --tls-key; tls.go) is a listener of its own,
// --tls-addr (:8443). Each handshake runs on a goroutine of its own under
// the header timeout (tlsFront); ALPN then gives an HTTP/1.1 connection to
// the goroutine engine, the TLS layer between the raw socket and the
// balancer's client connection, and an h2 one to the HTTP/2 server
// (h2.go). The plain port speaks HTTP/2 too, to a connection whose first
// bytes are the HTTP/2 preface (h2c with prior knowledge; either engine
// hands it over). HTTP/2's framing is golang.org/x/net/http2's; each
// stream becomes a fasthttp request served by the same handler as every
// other, so policies, health, retries, limits and headers are the same.
// The certificate is read again when its files change (internal/certs).
//
// Both share everything else: the policies, health checks, ejection,
// retries and their budget, the rewriting of requests and answers, the
// metrics and GET /-/balancer. The tests run once per engine.
//
// # Lifecycle
//
// Every proxied request, on either engine, is one exchange (exchange.go),
// which owns each of its steps: admit (request ID, --max-inflight, the
// gateway picked, the retry budget), an attempt, the answer or the
// failure, a retry (retry.go decides whether and where), and end, the one
// place it is released (in-flight counts, metrics, the debug log). The
// engines are I/O layers that call it, and never touch the pool, the
// retry budget or a gateway's health: engine_goroutine.go over fasthttp's
// server, engine_loop.go over the event loops. On the loops each client
// connection is in one state at a time (connState: idle, head, body,
// blocked, pending, dialing, waiting, reading, streaming, closing, away,
// closed), and one transition function (step) takes it from one to the
// next; an event its state cannot have is refused and the connection
// closed. The client side of a connection is in clientconn.go, the
// gateway side (the fasthttp pool's connections, and the loops' own idle
// ones) in upstreamconn.go, the rewriting of headers in headers.go.
//
// # Routes
//
// Everything under /-/ belongs to the balancer; every other path, with any
// method, is proxied unchanged to a gateway (so a gateway's own /healthz
// stays reachable through the balancer). The public port (--addr, :8000)
// serves only the two probes of /-/, which say no more than ok or not
// (compose's health check reads /-/readyz there), and answers 404 for the
// rest of /-/. Every /-/ route is on the admin listener (--admin-addr,
// SCALELAB_ADMIN_ADDR, 127.0.0.1:8001 by default), bound at start like
// the public port:
//
//	GET  /-/healthz                      the process is alive (public port too)
//	GET  /-/readyz                       at least one gateway is ready, 503 otherwise (public port too)
//	GET  /-/metrics                      Prometheus metrics, scalelab_balancer_*
//	GET  /-/balancer                     the policy and every gateway: state, in flight, totals, p50/p99
//	POST /-/backends/drain?url=<gw>      stop sending the gateway new requests (token with scope admin)
//	POST /-/backends/undrain?url=<gw>    send it requests again (token with scope admin)
//	POST /-/reload                       read --config again (token with scope admin; reload.go)
//	GET  /-/dashboard                    the live dashboard, when Config.Dashboard is set (404 otherwise)
//
// GET /-/balancer answers {"policy","discover","ready","backends":[{"url",
// "state","weight","in_flight","requests","errors","p50_ms","p99_ms"}]}.
// state is healthy, unhealthy (failing its checks), ejected (failing
// requests) or draining; only healthy gateways get new requests. requests
// and errors count attempts since start; p50_ms and p99_ms are the time to
// a gateway's response headers over the last 30 to 60 s (see latencyHist).
//
// On the admin listener (adminsrv.go), every request must name the
// listener in its Host header: localhost, 127.0.0.1 or [::1] on its port,
// its own address, the host of --admin-addr, or one of --admin-hosts
// (SCALELAB_ADMIN_HOSTS, for a port mapping such as compose's); any other
// Host gets 421 (code forbidden), so a web page that rebinds its DNS name
// to 127.0.0.1 reads nothing. Reads (GET, HEAD) need no token: keep the
// listener on loopback. Every other request is refused with 403 from
// another site (an Origin that is not the listener's, or Sec-Fetch-Site
// other than same-origin or none), and needs Authorization: Bearer <jwt>
// with scope admin, verified as the gateways verify tokens, from the same
// environment (SCALELAB_JWT_SECRET, SCALELAB_JWT_SECRET_FILE,
// SCALELAB_JWT_JWKS_FILE, issuer and audience): 401 without a token or
// with one that does not verify, 403 without the scope. Without keys those
// routes refuse every request (403). --admin=false (SCALELAB_ADMIN)
// removes them (404).
//
// # Policies
//
// --policy (SCALELAB_POLICY) picks the gateway of each request among the
// healthy ones:
//
//   - round_robin (default): in turn, exactly: over k·N requests each of N
//     gateways gets k.
//   - weighted_round_robin: nginx's smooth weighted round robin, with
//     --weights 3,1 (SCALELAB_WEIGHTS) giving one integer from 1 to 100 per
//     --backends URL, in the same order. Over each cycle every gateway gets
//     exactly its share, interleaved. Discovered gateways weigh 1.
//   - least_connections: the one with the fewest requests in flight.
//   - p2c: the less busy of two drawn at random ("power of two choices").
//
// Picking takes no lock: the healthy gateways are an immutable snapshot,
// rebuilt whenever one changes state, and a pick is an atomic load plus one
// atomic add (round robin; weighted round robin indexes a precomputed
// cycle) or a few atomic loads (least_connections, p2c).
//
// # Health
//
// Active checks: every --health-interval (2s) the balancer sends GET
// --health-path (/healthz, relative to the gateway URL) on a new connection;
// a 2xx within --health-timeout (1s) passes. --unhealthy-threshold (3)
// failures in a row take a gateway out; --healthy-threshold (2) passes in a
// row bring it back. --health-interval=0 turns active checks off.
//
// Passive ejection: --eject-after (5) failed attempts in a row (a
// connection error, a broken exchange or a 5xx answer) eject a gateway for
// --eject-backoff (5s); each ejection before it has served --eject-after
// requests in a row again lasts twice as long as the one before, up to
// --eject-backoff-max (1m). Ejection never takes out the last healthy
// gateway: when all of them fail, the cause is most likely shared (NATS is
// down), and their own 5xx answers tell the client more. The active checks
// still take out gateways that are really down. --eject-after=0 turns
// passive ejection off.
//
// With no healthy gateway, a request is answered at once with 503 and the
// house error body, code unavailable; it never waits.
//
// # Retries
//
// A request whose gateway fails is sent to another healthy one, at most
// --max-retries (2) times, each time to a gateway it has not tried:
//
//   - when the connection could not be made, whatever the method: nothing
//     of the request was sent;
//   - when the exchange broke after the request was sent (reset, closed,
//     timed out waiting for headers), only if the request is idempotent
//     (GET, HEAD, PUT, DELETE, OPTIONS, TRACE, or it carries an
//     Idempotency-Key) and its body, if any, is at most 64 KiB (a larger
//     upload is not sent to a second gateway: it is streamed, see
//     Bodies, and is not in memory to send again). A POST that reached a
//     gateway is never sent twice.
//
// A request whose body the client broke off, sent too slowly or made too
// large is the client's failure: it is answered 4xx (see Bodies), never
// retried, and not held against the gateway.
//
// An answer is never retried, 5xx included. Retries are capped by a budget:
// in any 10 s, at most --retry-budget (20) percent of the requests plus
// --retry-budget-min (20) may be retried, so that an outage is not
// multiplied by retries. A request that cannot be served gets 502, code
// unavailable.
//
// # Discovery
//
// The gateways are either --backends (SCALELAB_BACKENDS), a static
// comma-separated list of URLs, or --discover host:port (SCALELAB_DISCOVER):
// every --discover-interval (5s) the balancer resolves host (A and AAAA,
// with Go's net.Resolver, at most 5 s per lookup) and makes the gateways
// http://<address>:<port>, one per address. In a compose project the
// service name resolves to one address per replica, so
//
//	docker compose up --scale gateway=4
//
// with SCALELAB_DISCOVER=gateway:5000 needs no config edit. A gateway that
// appears is checked first and gets traffic after one passing check; one
// that disappears gets no new requests and finishes those in flight, and
// its metrics series are dropped. A failed or empty lookup keeps the last
// good set. Until the first lookup succeeds the balancer is not ready. The
// two are exclusive: setting --discover clears the default --backends, and
// setting both is an error.
//
// # Draining
//
// SIGTERM (handled by main) stops accepting connections and lets in-flight
// requests finish within --shutdown-timeout; health checks keep running
// until they have. One gateway is drained with POST
// /-/backends/drain?url=<its URL as listed in GET /-/balancer> on the admin
// listener, with a token of scope admin: it gets no
// new requests, in-flight ones finish, and its in_flight in GET /-/balancer
// shows when it is idle and can be stopped. POST /-/backends/undrain
// reverses it.
//
// # Headers
//
//   - X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Proto are set by the
//     balancer. Every Forwarded and X-Forwarded-* header a client sent
//     (X-Forwarded-Port, -Ssl, -Prefix, any name with that prefix, in any
//     case, every line of it) is dropped first, on both engines, never
//     passed on: the gateways are behind the balancer, so the balancer is
//     the only party that knows the client's address.
//   - X-Request-ID is passed on when the client sent a sane one (at most 128
//     token characters) and generated otherwise. The gateway receives it and
//     the client gets it back on the response, also on the balancer's own
//     error responses.
//   - The Host header sent to a gateway is the gateway's own host; the
//     client's is in X-Forwarded-Host.
//   - Server-sent events and other streamed responses are flushed as they
//     come: an answer without a Content-Length goes to the client chunked,
//     flushed after every read from the gateway.
//   - Hop-by-hop headers (Connection and the headers it names, Keep-Alive,
//     Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE but
//     "TE: trailers", Trailer, Transfer-Encoding, Upgrade) are dropped in
//     both directions, and so are Expect and trailers, except on an
//     upgrade (upgrade.go): a request with Connection: Upgrade (a
//     WebSocket) keeps its Upgrade, and once the gateway answers 101 the
//     two connections are joined in a tunnel, bytes copied both ways until
//     a side closes or both are silent for --stream-idle-timeout.
//   - Once an answer's headers are in, its body is bounded by
//     --stream-idle-timeout (silence), not by the response header timeout:
//     server-sent events live as long as they talk.
//
// # Bodies
//
// Nothing is allocated by the size a client announces. A request body of
// at most 64 KiB is read whole, as it comes, before it is sent on (so that
// a retry can send it again); a larger one is streamed: its first 64 KiB
// are read, then the request goes to a gateway and the rest of the body
// follows as the client sends it (body.go). A body is at most 8 MiB,
// announced or counted (chunked): past it the client gets 413 (code
// too_large; a streamed body is cut there, and its gateway sees the
// connection close); a header over 32 KiB gets 431 (code invalid), both
// with the house error body; the connection is then closed after a linger
// (see clientConn), so that the client, still sending, reads the answer
// rather than a reset. The gateways take 64 KiB at most: a gateway that answers
// 413 before it has the whole body and closes the connection has its
// answer passed on (the write that fails after it is not a 502). A
// response body that comes with the headers (any small answer) is passed
// on whole; a larger or streamed one is copied as it comes.
//
// # Client limits
//
// What a client can make the balancer hold is bounded:
//
//   - --max-conns (10000) client connections in all, --max-conns-per-ip
//     (2048) from one address; past either a new connection is closed as
//     soon as it is accepted, before anything is read (limits.go).
//   - --client-header-timeout (10s): a request's header block must be in
//     within it of its first byte, and a new connection must send its
//     first request within it; past it, 408 (code timeout) and the
//     connection closes.
//   - --client-body-timeout (10s): a body that makes no progress for that
//     long is cut: 408, and a streamed body's gateway connection closes.
//   - A request waiting on a loop holds the bytes it sent; one on the
//     goroutine engine a 32 KiB header buffer besides. 1,000 clients that
//     send the header of an 8 MiB POST and stall cost the balancer under
//     64 MiB (TestStalledUploadsBoundedMemory measures it).
//
// # Framing
//
// Both engines frame requests with one framer (framing.go) before
// fasthttp parses them, and refuse with 400 what could be framed two
// ways: a line of the request line, header block or chunked framing that
// ends in a bare LF, an obs-fold, Transfer-Encoding with Content-Length,
// a Transfer-Encoding other than chunked, and more than one
// Content-Length. FuzzEnginesFrameAlike sends the same bytes to both
// engines and compares what reaches the gateways.
//
// # Transport
//
// Connections to the gateways are TCP connections, or whatever
// Config.Dial makes (`scalelab up`: Unix sockets to its own gateways). They
// are kept alive and reused, up to
// --max-idle-conns-per-host (256) idle ones per gateway (too few would open
// and close a connection for most requests under load), the most recently
// used first; dials time out after --dial-timeout (2s), response headers
// after --response-header-timeout (30s), idle connections after 90 s. A
// pooled connection that has been idle for 50 ms or more is checked (a
// non-blocking read) before use, so that one the gateway closed meanwhile
// is not used: a request sent on it would fail after being sent, which a
// POST cannot recover from. One idle for less is used unchecked; if the
// gateway closed it in that window, the request fails like any request
// broken after sending (see Retries).
//
// While a request waits for its gateway, the balancer looks every 250 ms
// whether the client is still connected (on the event loops, it sees the
// close at once); if it has gone, the gateway connection is closed (the
// gateway sees its request cancelled) and the request is recorded with
// status 499, not as a gateway error. On the event loops a connection that
// the gateway closes while idle is dropped as soon as the close arrives,
// with no check before use.
//
// Layer: roles (docs/ARCHITECTURE.md). It may import internal/ and, in its
// tests, other roles as fixtures; it must not import platform/, cli or
// natsconf, nor another role except a client API allowed in layout_test.go
// (roleClients).
package balancer
