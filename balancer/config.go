package balancer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/envflag"
)

// The balancing policies, the values of --policy.
const (
	PolicyRoundRobin         = "round_robin"
	PolicyWeightedRoundRobin = "weighted_round_robin"
	PolicyLeastConnections   = "least_connections"
	PolicyPowerOfTwo         = "p2c"
)

// The proxy engines, the values of --engine.
const (
	// EngineLoop serves client connections on event loops, one per core,
	// as nginx's workers do (see engine_loop.go); what the loops do not handle
	// goes to the goroutine engine.
	EngineLoop = "loop"
	// EngineGoroutine serves each client connection on a goroutine of its
	// own, with fasthttp's server.
	EngineGoroutine = "goroutine"
)

// engines lists the valid --engine values.
var engines = []string{EngineLoop, EngineGoroutine}

// policies lists the valid --policy values, in the order -h shows them.
var policies = []string{PolicyRoundRobin, PolicyWeightedRoundRobin, PolicyLeastConnections, PolicyPowerOfTwo}

// maxWeight bounds a --weights entry. The weighted policy precomputes one
// cycle of picks, whose length is the sum of the weights.
const maxWeight = 100

// maxEventLoops bounds --event-loops: a loop per core is the most that
// helps; this only catches a typo.
const maxEventLoops = 1024

// maxRetriesLimit bounds --max-retries: beyond a few attempts a request is
// better answered with an error than sent around every gateway.
const maxRetriesLimit = 5

// Config is the balancer's configuration.
type Config struct {
	// Addr is the address the balancer listens on, used when Listener is nil.
	Addr string
	// Listener, when set, is served instead of listening on Addr: `up` and
	// tests bind ports themselves so they know the real address. It is not a
	// flag. Run owns it from then on and closes it before returning.
	Listener net.Listener
	// TLS terminates HTTPS on a listener of its own (tls.go); its zero
	// value serves none.
	TLS TLSConfig
	// Dial, when set, connects to a gateway's host:port (as in its URL)
	// instead of a TCP dial, for proxied requests and health checks alike.
	// `up` sets it to reach its own gateways over Unix sockets: the same
	// HTTP, without loopback TCP (platform.GatewaySockets). It is not a
	// flag. Its errors count as failures to connect (see Retries).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Backends are the gateways' base URLs (http or https, with a host and
	// optionally a path prefix), in round-robin order. It is empty when
	// Discover is set: the two are exclusive.
	Backends []string
	// Weights are the weights of Backends, in the same order, for the
	// weighted_round_robin policy; empty means 1 each. Discovered gateways
	// always weigh 1.
	Weights []int
	// Discover, as host:port, makes the gateways the addresses host
	// resolves to, each on port, re-resolved every DiscoverInterval.
	Discover string
	// DiscoverInterval is how often Discover is resolved again.
	DiscoverInterval time.Duration
	// Policy picks the gateway of each request: one of the Policy*
	// constants.
	Policy string
	// Engine serves client connections: EngineLoop or EngineGoroutine.
	// Gateways reached over https are served by EngineGoroutine whatever
	// it says.
	Engine string
	// EventLoops is the number of event loops of EngineLoop; 0 means one
	// per P (runtime.GOMAXPROCS at start). An idle loop waits in
	// epoll_wait, a blocking system call that keeps its P until the
	// runtime's sysmon takes it back, up to 10 ms later. With as many loops
	// as Ps, every P can sit in such a wait, and no goroutine of the
	// process (an accept, a dial, or in `up` every other role) runs until
	// sysmon comes round: in `up` that put the front door's median latency
	// at 4-7 ms against 0.4 ms for a standalone balancer in front of the
	// same gateways. A process that runs other work beside the balancer
	// sets fewer loops than Ps (`up` does: platform.EventLoops).
	EventLoops int

	// DialTimeout bounds connecting to a gateway. It is what keeps a
	// gateway that silently drops packets from hanging clients; a gateway
	// that is down and refuses connections fails at once anyway.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a gateway's response headers
	// once the request is sent; zero means no limit. Keep it above the
	// slowest legitimate request.
	ResponseHeaderTimeout time.Duration
	// IdleConnTimeout is how long an unused connection to a gateway is kept
	// for reuse; zero means forever.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost is how many unused connections to each gateway are
	// kept for reuse; a connection that would be one more is closed. Too
	// few is a trap under load (Go's default of 2 was): every request above
	// that many concurrent ones opens a new connection and closes it after,
	// until the machine runs out of ephemeral ports (TIME_WAIT).
	MaxIdleConnsPerHost int
	// MaxInFlight caps the requests being proxied at once; past it the
	// balancer answers 503 at once rather than queue work the gateways
	// cannot take (and hold a goroutine and buffers per request). Zero
	// means no limit.
	MaxInFlight int

	// HealthPath is the path, relative to a gateway's URL, of its active
	// health check: any 2xx answer passes.
	HealthPath string
	// HealthInterval is the time between two checks of a gateway; zero
	// turns active checks off (every gateway then counts as healthy).
	HealthInterval time.Duration
	// HealthTimeout bounds one check, connection included.
	HealthTimeout time.Duration
	// HealthyThreshold is how many checks in a row must pass before an
	// unhealthy gateway gets traffic again.
	HealthyThreshold int
	// UnhealthyThreshold is how many checks in a row must fail before a
	// gateway gets no more traffic.
	UnhealthyThreshold int

	// EjectAfter is how many failed attempts in a row (connection errors,
	// broken exchanges, 5xx answers) eject a gateway; zero turns passive
	// ejection off.
	EjectAfter int
	// EjectBackoff is how long a first ejection lasts. Each ejection that
	// follows before the gateway has recovered lasts twice as long as the
	// one before, up to EjectBackoffMax.
	EjectBackoff time.Duration
	// EjectBackoffMax caps an ejection.
	EjectBackoffMax time.Duration

	// MaxRetries is how many other gateways a failed request may be sent
	// to. See doc.go for which failures are retried.
	MaxRetries int
	// RetryBudgetPercent caps retries at this share of the requests of the
	// last 10 s, so an outage is not multiplied by retries.
	RetryBudgetPercent int
	// RetryBudgetMin is how many retries every 10 s are allowed whatever
	// the share, so a quiet balancer can retry at all.
	RetryBudgetMin int

	// AdminAddr is the address of the admin listener, which serves every
	// /-/ route (see adminsrv.go); the public port (Addr) serves only
	// proxied traffic, /-/healthz and /-/readyz. It is a loopback address
	// by default: the reads on it need no token.
	AdminAddr string
	// AdminListener, when set, is served instead of listening on
	// AdminAddr, as Listener is for Addr. Not a flag. Run owns it.
	AdminListener net.Listener
	// AdminHosts are Host values (host:port) the admin listener answers
	// besides its own names (localhost, 127.0.0.1, [::1] and its address,
	// on its port): where it is reached through a port mapping, as compose
	// publishes it, the names clients use there. Any other Host is refused
	// (DNS rebinding).
	AdminHosts []string
	// Admin serves the state-changing routes on the admin listener, POST
	// /-/backends/drain and /-/backends/undrain, to tokens with scope admin
	// (verified with JWT). False removes them (404).
	Admin bool
	// JWT verifies the tokens of the state-changing admin routes, as the
	// gateways verify theirs: from the same environment (auth.KeysFromEnv).
	// Empty (no secret, no public keys): those routes refuse every
	// request. Not a flag.
	JWT auth.Keys
	// jwtAsked is set when the environment names JWT keys, so that one
	// that could not be read is reported, not taken for no keys.
	jwtAsked bool

	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after shutdown starts.
	ShutdownTimeout time.Duration

	// Dashboard, when set, is served under /-/dashboard (DashboardPath)
	// and run alongside the balancer. Nil: those paths answer 404 like any
	// unknown /-/ route. Not a flag.
	Dashboard Dashboard

	// Limits on client connections (see limits.go). They bound what a
	// client costs the balancer before it has sent anything worth
	// proxying.

	// MaxConns caps the client connections open at once; past it a new
	// connection is closed as soon as it is accepted. Zero means no limit.
	MaxConns int
	// MaxConnsPerIP caps the client connections open at once from one IP
	// address; past it a new one is closed as soon as it is accepted.
	// Zero means no limit.
	MaxConnsPerIP int
	// ClientHeaderTimeout bounds how long a client may take to send a
	// request's header block, from its first byte (or, on a new
	// connection, from the connection): past it the client gets 408 and
	// the connection is closed.
	ClientHeaderTimeout time.Duration
	// ClientBodyTimeout bounds how long a client may leave a request body
	// unfinished without sending any of it: a body that makes no progress
	// for that long is cut (408 when an answer can still be sent).
	ClientBodyTimeout time.Duration
	// StreamIdleTimeout bounds the silence of what lives past its
	// request: a streamed answer (server-sent events, a long download)
	// whose gateway sends nothing for that long is cut, and so is an
	// upgraded connection (WebSocket) on which neither side sends
	// anything. It replaces ResponseHeaderTimeout once an answer has
	// begun. Zero means no limit.
	StreamIdleTimeout time.Duration

	// ConfigFile, when set, is a JSON file of backends, weights, policy
	// and limits (reload.go), read at start over the flags' values and
	// again at each reload.
	ConfigFile string
	// Reload, when set, makes the balancer read ConfigFile again at each
	// receive (the balancer command sends on SIGHUP). Not a flag.
	Reload <-chan struct{}

	// AccessLog writes one JSON line per request to AccessLogOutput
	// (accesslog.go); AccessLogSample, when above 1, logs one request in
	// that many (and every 5xx).
	AccessLog       bool
	AccessLogSample int
	// AccessLogOutput is where the access log goes; nil: standard output.
	// Not a flag.
	AccessLogOutput io.Writer

	// envErr is a list from the environment that did not parse. envflag
	// reports the other variables through its Err, which lists cannot
	// reach, so Validate reports this one.
	envErr error
}

// DefaultConfig returns the defaults: :8000 in front of the lab's two
// gateways on :5000 and :5003, round robin, with health checks every 2 s.
func DefaultConfig() Config {
	return Config{
		Addr:                  ":8000",
		Backends:              []string{"http://127.0.0.1:5000", "http://127.0.0.1:5003"},
		DiscoverInterval:      5 * time.Second,
		Policy:                PolicyRoundRobin,
		Engine:                EngineLoop,
		DialTimeout:           2 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   256,
		MaxInFlight:           4096,
		HealthPath:            "/healthz",
		HealthInterval:        2 * time.Second,
		HealthTimeout:         time.Second,
		HealthyThreshold:      2,
		UnhealthyThreshold:    3,
		EjectAfter:            5,
		EjectBackoff:          5 * time.Second,
		EjectBackoffMax:       time.Minute,
		MaxRetries:            2,
		RetryBudgetPercent:    20,
		RetryBudgetMin:        20,
		AdminAddr:             "127.0.0.1:8001",
		Admin:                 true,
		ShutdownTimeout:       10 * time.Second,
		TLS:                   TLSConfig{Addr: ":8443"},

		MaxConns:            10000,
		MaxConnsPerIP:       2048,
		ClientHeaderTimeout: 10 * time.Second,
		ClientBodyTimeout:   10 * time.Second,
		StreamIdleTimeout:   5 * time.Minute,
		AccessLogSample:     1,
	}
}

// Environment variables read by RegisterFlags; the flag of the same name
// overrides each.
const (
	envAddr                  = "SCALELAB_ADDR"
	envBackends              = "SCALELAB_BACKENDS"
	envWeights               = "SCALELAB_WEIGHTS"
	envDiscover              = "SCALELAB_DISCOVER"
	envDiscoverInterval      = "SCALELAB_DISCOVER_INTERVAL"
	envPolicy                = "SCALELAB_POLICY"
	envEngine                = "SCALELAB_ENGINE"
	envEventLoops            = "SCALELAB_EVENT_LOOPS"
	envDialTimeout           = "SCALELAB_DIAL_TIMEOUT"
	envResponseHeaderTimeout = "SCALELAB_RESPONSE_HEADER_TIMEOUT"
	envMaxIdleConnsPerHost   = "SCALELAB_MAX_IDLE_CONNS_PER_HOST"
	envMaxInFlight           = "SCALELAB_MAX_INFLIGHT"
	envHealthPath            = "SCALELAB_HEALTH_PATH"
	envHealthInterval        = "SCALELAB_HEALTH_INTERVAL"
	envHealthTimeout         = "SCALELAB_HEALTH_TIMEOUT"
	envHealthyThreshold      = "SCALELAB_HEALTHY_THRESHOLD"
	envUnhealthyThreshold    = "SCALELAB_UNHEALTHY_THRESHOLD"
	envEjectAfter            = "SCALELAB_EJECT_AFTER"
	envEjectBackoff          = "SCALELAB_EJECT_BACKOFF"
	envEjectBackoffMax       = "SCALELAB_EJECT_BACKOFF_MAX"
	envMaxRetries            = "SCALELAB_MAX_RETRIES"
	envRetryBudget           = "SCALELAB_RETRY_BUDGET"
	envRetryBudgetMin        = "SCALELAB_RETRY_BUDGET_MIN"
	envAdmin                 = "SCALELAB_ADMIN"
	envAdminAddr             = "SCALELAB_ADMIN_ADDR"
	envAdminHosts            = "SCALELAB_ADMIN_HOSTS"
	envShutdownTimeout       = "SCALELAB_SHUTDOWN_TIMEOUT"
)

// Environment variables of the limits on client connections.
const (
	envMaxConns            = "SCALELAB_MAX_CONNS"
	envMaxConnsPerIP       = "SCALELAB_MAX_CONNS_PER_IP"
	envClientHeaderTimeout = "SCALELAB_CLIENT_HEADER_TIMEOUT"
	envClientBodyTimeout   = "SCALELAB_CLIENT_BODY_TIMEOUT"
	envStreamIdleTimeout   = "SCALELAB_STREAM_IDLE_TIMEOUT"
	envAccessLog           = "SCALELAB_ACCESS_LOG"
	envConfigFile          = "SCALELAB_BALANCER_CONFIG"
	envAccessLogSample     = "SCALELAB_ACCESS_LOG_SAMPLE"
)

// RegisterFlags defines the balancer's flags on s. The current values of c
// are the defaults, so call it on DefaultConfig() (or on a config the caller
// prepared, as `up` does). Values are checked by Validate, not here, so that
// every problem is reported at once; environment values that do not parse
// are reported by s.Err.
//
// --backends and --discover are exclusive. Setting --discover (or
// SCALELAB_DISCOVER) clears the default gateway list; setting both it and
// --backends (or SCALELAB_BACKENDS) is reported by Validate.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.Addr, "addr", envAddr, c.Addr, "HTTP address of the balancer")
	// Lists have no envflag type: their environment values replace the
	// defaults here, and their flags replace both when parsed.
	getenv := func(string) string { return "" }
	if s.Getenv != nil {
		getenv = s.Getenv
	}
	src := &listSource{c: c}
	if v := getenv(envBackends); v != "" {
		c.Backends, src.backendsSet = splitList(v), true
	}
	if v := getenv(envDiscover); v != "" {
		src.setDiscover(v)
	}
	if v := getenv(envWeights); v != "" {
		if err := src.setWeights(v); err != nil {
			c.envErr = fmt.Errorf("%s=%q: %w", envWeights, v, err)
		}
	}
	s.FS.Var(backendsFlag{src}, "backends",
		fmt.Sprintf("comma-separated base URLs of the gateways (env %s)", envBackends))
	s.FS.Var(weightsFlag{src}, "weights",
		fmt.Sprintf("comma-separated weights of the --backends, in order, for %s (env %s)", PolicyWeightedRoundRobin, envWeights))
	s.FS.Var(discoverFlag{src}, "discover",
		fmt.Sprintf("host:port whose DNS name lists the gateways, instead of --backends (env %s)", envDiscover))
	s.Duration(&c.DiscoverInterval, "discover-interval", envDiscoverInterval, c.DiscoverInterval,
		"how often --discover is resolved again")
	s.String(&c.Policy, "policy", envPolicy, c.Policy,
		"how a gateway is picked: "+strings.Join(policies, ", "))
	s.String(&c.Engine, "engine", envEngine, c.Engine,
		"how client connections are served: "+EngineLoop+" (event loops) or "+EngineGoroutine+" (a goroutine each)")
	s.Int(&c.EventLoops, "event-loops", envEventLoops, c.EventLoops,
		"event loops of the loop engine (0: one per GOMAXPROCS)")
	s.Duration(&c.DialTimeout, "dial-timeout", envDialTimeout, c.DialTimeout,
		"how long to wait for a gateway to accept a connection before trying the next")
	s.Duration(&c.ResponseHeaderTimeout, "response-header-timeout", envResponseHeaderTimeout, c.ResponseHeaderTimeout,
		"how long to wait for a gateway's response headers (0: no limit)")
	s.Int(&c.MaxIdleConnsPerHost, "max-idle-conns-per-host", envMaxIdleConnsPerHost, c.MaxIdleConnsPerHost,
		"idle connections kept open to each gateway for reuse")
	s.Int(&c.MaxInFlight, "max-inflight", envMaxInFlight, c.MaxInFlight,
		"requests proxied at once; past it 503 at once (0: no limit)")
	s.String(&c.HealthPath, "health-path", envHealthPath, c.HealthPath,
		"path of the active health check, relative to a gateway's URL")
	s.Duration(&c.HealthInterval, "health-interval", envHealthInterval, c.HealthInterval,
		"time between health checks of a gateway (0: no active checks)")
	s.Duration(&c.HealthTimeout, "health-timeout", envHealthTimeout, c.HealthTimeout,
		"time limit of one health check")
	s.Int(&c.HealthyThreshold, "healthy-threshold", envHealthyThreshold, c.HealthyThreshold,
		"passing checks in a row that readmit an unhealthy gateway")
	s.Int(&c.UnhealthyThreshold, "unhealthy-threshold", envUnhealthyThreshold, c.UnhealthyThreshold,
		"failing checks in a row that take a gateway out")
	s.Int(&c.EjectAfter, "eject-after", envEjectAfter, c.EjectAfter,
		"failed requests in a row (connection errors, 5xx) that eject a gateway (0: never)")
	s.Duration(&c.EjectBackoff, "eject-backoff", envEjectBackoff, c.EjectBackoff,
		"how long a first ejection lasts; it doubles for each ejection before recovery")
	s.Duration(&c.EjectBackoffMax, "eject-backoff-max", envEjectBackoffMax, c.EjectBackoffMax,
		"the longest an ejection lasts")
	s.Int(&c.MaxRetries, "max-retries", envMaxRetries, c.MaxRetries,
		"other gateways a failed request may be sent to")
	s.Int(&c.RetryBudgetPercent, "retry-budget", envRetryBudget, c.RetryBudgetPercent,
		"retries allowed, as a percentage of the requests of the last 10s")
	s.Int(&c.RetryBudgetMin, "retry-budget-min", envRetryBudgetMin, c.RetryBudgetMin,
		"retries allowed in any 10s, whatever the percentage")
	s.String(&c.AdminAddr, "admin-addr", envAdminAddr, c.AdminAddr,
		"address of the admin listener: every /-/ route (state, metrics, dashboard, drain); keep it on loopback")
	s.Func("admin-hosts", envAdminHosts,
		"comma-separated host:port values the admin listener also answers (a port mapping's), besides its own",
		func(v string) error {
			c.AdminHosts = splitList(v)
			return nil
		})
	s.Bool(&c.Admin, "admin", envAdmin, c.Admin,
		"serve POST /-/backends/drain and /-/backends/undrain on the admin listener, to tokens with scope admin")
	if s.Getenv != nil {
		c.JWT = auth.KeysFromEnv(s.Getenv)
		for _, env := range []string{auth.EnvSecret, auth.EnvSecretFile, auth.EnvJWKSFile} {
			c.jwtAsked = c.jwtAsked || s.Getenv(env) != ""
		}
	}
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", envShutdownTimeout, c.ShutdownTimeout,
		"grace period for in-flight requests on shutdown")
	c.registerLimitFlags(s)
	c.TLS.registerFlags(s)
}

// registerLimitFlags defines the flags of the limits on client
// connections.
func (c *Config) registerLimitFlags(s *envflag.Set) {
	s.Int(&c.MaxConns, "max-conns", envMaxConns, c.MaxConns,
		"client connections open at once; past it new ones are closed at once (0: no limit)")
	s.Int(&c.MaxConnsPerIP, "max-conns-per-ip", envMaxConnsPerIP, c.MaxConnsPerIP,
		"client connections open at once from one IP address; past it new ones are closed at once (0: no limit)")
	s.Duration(&c.ClientHeaderTimeout, "client-header-timeout", envClientHeaderTimeout, c.ClientHeaderTimeout,
		"time a client has to send a request's header block (408 past it)")
	s.String(&c.ConfigFile, "config", envConfigFile, c.ConfigFile,
		"JSON file of backends, weights, policy and limits, read at start and again on SIGHUP or POST /-/reload")
	s.Bool(&c.AccessLog, "access-log", envAccessLog, c.AccessLog,
		"write one JSON line per request to standard output (method, path, status, bytes, duration, gateway, retries, request id)")
	s.Int(&c.AccessLogSample, "access-log-sample", envAccessLogSample, c.AccessLogSample,
		"with --access-log: log one request in this many (every 5xx whatever it says)")
	s.Duration(&c.StreamIdleTimeout, "stream-idle-timeout", envStreamIdleTimeout, c.StreamIdleTimeout,
		"silence after which a streamed answer (events) or an upgraded connection (WebSocket) is cut (0: no limit)")
	s.Duration(&c.ClientBodyTimeout, "client-body-timeout", envClientBodyTimeout, c.ClientBodyTimeout,
		"time a request body may go without progress before it is cut (408)")
}

// Validate reports every bad setting at once, joined with errors.Join; each
// error names the flag, as in `balancer: --backends: "foo" is not an http(s)
// URL`.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("balancer: "+format, args...))
	}
	if c.envErr != nil {
		bad("%w", c.envErr)
	}
	if c.Addr == "" && c.Listener == nil {
		bad("--addr is required")
	}
	c.TLS.validate(bad)
	if c.AdminListener == nil {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			bad("--admin-addr: %q is not host:port", c.AdminAddr)
		}
	}
	for _, h := range c.AdminHosts {
		if host, _, err := net.SplitHostPort(h); err != nil || host == "" {
			bad("--admin-hosts: %q is not host:port", h)
		}
	}
	if c.jwtConfigured() {
		if err := c.JWT.Validate(); err != nil {
			bad("%w", err)
		}
	}
	switch {
	case c.Discover != "" && len(c.Backends) > 0:
		bad("--backends and --discover are exclusive: set one")
	case c.Discover == "" && len(c.Backends) == 0:
		bad("--backends: at least one gateway URL is required (or --discover)")
	}
	if c.Discover != "" {
		if err := checkDiscover(c.Discover); err != nil {
			bad("--discover: %w", err)
		}
		positive(bad, "--discover-interval", c.DiscoverInterval)
	}
	seen := make(map[string]bool, len(c.Backends))
	for _, raw := range c.Backends {
		u, err := parseBackend(raw)
		if err != nil {
			bad("--backends: %w", err)
			continue
		}
		// A duplicate would double that gateway's share and merge its
		// metrics with its twin's; it is almost surely a typo.
		if seen[u.String()] {
			bad("--backends: %q is listed twice", raw)
		}
		seen[u.String()] = true
	}
	if !slices.Contains(policies, c.Policy) {
		bad("--policy: %q is not one of %s", c.Policy, strings.Join(policies, ", "))
	}
	if c.EventLoops < 0 || c.EventLoops > maxEventLoops {
		bad("--event-loops: must be between 0 and %d, got %d", maxEventLoops, c.EventLoops)
	}
	if !slices.Contains(engines, c.Engine) {
		bad("--engine: %q is not one of %s", c.Engine, strings.Join(engines, ", "))
	}
	if len(c.Weights) > 0 {
		if c.Policy != PolicyWeightedRoundRobin {
			bad("--weights: only %s uses weights, --policy is %q", PolicyWeightedRoundRobin, c.Policy)
		}
		if len(c.Weights) != len(c.Backends) {
			bad("--weights: %d weights for %d --backends", len(c.Weights), len(c.Backends))
		}
		for _, w := range c.Weights {
			if w < 1 || w > maxWeight {
				bad("--weights: %d is not between 1 and %d", w, maxWeight)
			}
		}
	}
	positive(bad, "--dial-timeout", c.DialTimeout)
	notNegative(bad, "--response-header-timeout", c.ResponseHeaderTimeout)
	notNegative(bad, "IdleConnTimeout", c.IdleConnTimeout)
	// Zero would silently mean Go's default of 2: see MaxIdleConnsPerHost.
	atLeastOne(bad, "--max-idle-conns-per-host", c.MaxIdleConnsPerHost)
	notNegative(bad, "--health-interval", c.HealthInterval)
	if c.HealthInterval > 0 {
		if !strings.HasPrefix(c.HealthPath, "/") {
			bad("--health-path: must start with /, got %q", c.HealthPath)
		}
		positive(bad, "--health-timeout", c.HealthTimeout)
		atLeastOne(bad, "--healthy-threshold", c.HealthyThreshold)
		atLeastOne(bad, "--unhealthy-threshold", c.UnhealthyThreshold)
	}
	notNegative(bad, "--eject-after", c.EjectAfter)
	if c.EjectAfter > 0 {
		positive(bad, "--eject-backoff", c.EjectBackoff)
		if c.EjectBackoffMax < c.EjectBackoff {
			bad("--eject-backoff-max: must be at least --eject-backoff (%v), got %v", c.EjectBackoff, c.EjectBackoffMax)
		}
	}
	if c.MaxInFlight < 0 {
		bad("--max-inflight: must be >= 0, got %d", c.MaxInFlight)
	}
	if c.MaxRetries < 0 || c.MaxRetries > maxRetriesLimit {
		bad("--max-retries: must be between 0 and %d, got %d", maxRetriesLimit, c.MaxRetries)
	}
	if c.RetryBudgetPercent < 0 || c.RetryBudgetPercent > 100 {
		bad("--retry-budget: must be a percentage between 0 and 100, got %d", c.RetryBudgetPercent)
	}
	notNegative(bad, "--retry-budget-min", c.RetryBudgetMin)
	positive(bad, "--shutdown-timeout", c.ShutdownTimeout)
	errs = append(errs, c.validateLimits()...)
	return errors.Join(errs...)
}

// positive, notNegative and atLeastOne report, through Validate's bad, a
// setting out of the most common ranges, in the same words for every flag.
func positive[T int | time.Duration](bad func(string, ...any), flag string, v T) {
	if v <= 0 {
		bad("%s: must be positive, got %v", flag, v)
	}
}

func notNegative[T int | time.Duration](bad func(string, ...any), flag string, v T) {
	if v < 0 {
		bad("%s: must not be negative, got %v", flag, v)
	}
}

func atLeastOne(bad func(string, ...any), flag string, v int) {
	if v < 1 {
		bad("%s: must be at least 1, got %d", flag, v)
	}
}

// jwtConfigured reports whether JWT keys were given: then they must be
// valid, and the state-changing admin routes verify tokens with them.
func (c Config) jwtConfigured() bool {
	return c.jwtAsked || len(c.JWT.Secret) > 0 || len(c.JWT.PublicKeys) > 0
}

// validateLimits checks the limits on client connections.
func (c Config) validateLimits() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("balancer: "+format, args...))
	}
	if c.MaxConns < 0 {
		bad("--max-conns: must be >= 0, got %d", c.MaxConns)
	}
	if c.MaxConnsPerIP < 0 {
		bad("--max-conns-per-ip: must be >= 0, got %d", c.MaxConnsPerIP)
	}
	if c.MaxConns > 0 && c.MaxConnsPerIP > c.MaxConns {
		bad("--max-conns-per-ip: %d is over --max-conns (%d)", c.MaxConnsPerIP, c.MaxConns)
	}
	positive(bad, "--client-header-timeout", c.ClientHeaderTimeout)
	positive(bad, "--client-body-timeout", c.ClientBodyTimeout)
	notNegative(bad, "--stream-idle-timeout", c.StreamIdleTimeout)
	positive(bad, "--access-log-sample", c.AccessLogSample)
	return errs
}

// checkDiscover checks a --discover value: a host name (or address) and a
// numeric port.
func checkDiscover(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", hostport)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number between 1 and 65535", hostport, port)
	}
	return nil
}

// parseBackend parses one gateway base URL. It must be absolute, http or
// https, with a host; a path is kept as a prefix of every proxied path. A
// query or fragment would be merged into (or dropped from) every request,
// which nobody means, so they are refused.
func parseBackend(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", raw)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("%q: a gateway URL has no query or fragment", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q: a gateway URL has no user info", raw)
	}
	return u, nil
}

// parseBackends parses every URL of list; it is used after Validate, so the
// first error is enough.
func parseBackends(list []string) ([]*url.URL, error) {
	urls := make([]*url.URL, 0, len(list))
	for _, raw := range list {
		u, err := parseBackend(raw)
		if err != nil {
			return nil, fmt.Errorf("balancer: --backends: %w", err)
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// listSource is shared by the flags that set the gateway list, so that
// --discover clears the default --backends but never ones that were set.
type listSource struct {
	c           *Config
	backendsSet bool
}

func (s *listSource) setDiscover(v string) {
	s.c.Discover = v
	if v != "" && !s.backendsSet {
		s.c.Backends = nil
	}
}

func (s *listSource) setWeights(v string) error {
	var ws []int
	for _, item := range splitList(v) {
		w, err := strconv.Atoi(item)
		if err != nil {
			return fmt.Errorf("%q is not an integer", item)
		}
		ws = append(ws, w)
	}
	s.c.Weights = ws
	return nil
}

// backendsFlag is the flag.Value of --backends: a comma-separated list whose
// value replaces the default (it does not append to it).
type backendsFlag struct{ s *listSource }

func (f backendsFlag) String() string {
	if f.s == nil {
		return ""
	}
	return strings.Join(f.s.c.Backends, ",")
}

func (f backendsFlag) Set(v string) error {
	f.s.c.Backends, f.s.backendsSet = splitList(v), true
	return nil
}

// weightsFlag is the flag.Value of --weights.
type weightsFlag struct{ s *listSource }

func (f weightsFlag) String() string {
	if f.s == nil {
		return ""
	}
	items := make([]string, len(f.s.c.Weights))
	for i, w := range f.s.c.Weights {
		items[i] = strconv.Itoa(w)
	}
	return strings.Join(items, ",")
}

func (f weightsFlag) Set(v string) error { return f.s.setWeights(v) }

// discoverFlag is the flag.Value of --discover.
type discoverFlag struct{ s *listSource }

func (f discoverFlag) String() string {
	if f.s == nil {
		return ""
	}
	return f.s.c.Discover
}

func (f discoverFlag) Set(v string) error {
	f.s.setDiscover(v)
	return nil
}

// splitList splits a comma-separated list, trimming spaces and dropping
// empty items, so that "a, b," is [a b].
func splitList(v string) []string {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
