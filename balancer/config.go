package balancer

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/scalelab/scalelab/internal/envflag"
)

// Config is the balancer's configuration.
type Config struct {
	// Addr is the address the balancer listens on, used when Listener is nil.
	Addr string
	// Listener, when set, is served instead of listening on Addr: `up` and
	// tests bind ports themselves so they know the real address. It is not a
	// flag. Run owns it from then on and closes it before returning.
	Listener net.Listener
	// Backends are the gateways' base URLs (http or https, with a host and
	// optionally a path prefix), in round-robin order.
	Backends []string
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
	// kept for reuse. Go's default of 2 is a trap under load: every request
	// above two concurrent ones opens a new connection and closes it after,
	// until the machine runs out of ephemeral ports (TIME_WAIT).
	MaxIdleConnsPerHost int
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after shutdown starts.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the defaults: :8000 in front of the lab's two
// gateways on :5000 and :5003.
func DefaultConfig() Config {
	return Config{
		Addr:                  ":8000",
		Backends:              []string{"http://127.0.0.1:5000", "http://127.0.0.1:5003"},
		DialTimeout:           2 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   256,
		ShutdownTimeout:       10 * time.Second,
	}
}

// Environment variables read by RegisterFlags; the flag of the same name
// overrides each.
const (
	envAddr                  = "SCALELAB_ADDR"
	envBackends              = "SCALELAB_BACKENDS"
	envDialTimeout           = "SCALELAB_DIAL_TIMEOUT"
	envResponseHeaderTimeout = "SCALELAB_RESPONSE_HEADER_TIMEOUT"
	envMaxIdleConnsPerHost   = "SCALELAB_MAX_IDLE_CONNS_PER_HOST"
	envShutdownTimeout       = "SCALELAB_SHUTDOWN_TIMEOUT"
)

// RegisterFlags defines the balancer's flags on s. The current values of c
// are the defaults, so call it on DefaultConfig() (or on a config the caller
// prepared, as `up` does). Values are checked by Validate, not here, so that
// every problem is reported at once; environment values that do not parse
// are reported by s.Err.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.Addr, "addr", envAddr, c.Addr, "HTTP address of the balancer")
	// Backends is a list, which envflag has no type for: the environment
	// value replaces the default here, and the flag replaces both when it is
	// parsed.
	if s.Getenv != nil {
		if v := s.Getenv(envBackends); v != "" {
			c.Backends = splitList(v)
		}
	}
	s.FS.Var((*backendList)(&c.Backends), "backends",
		fmt.Sprintf("comma-separated base URLs of the gateways (env %s)", envBackends))
	s.Duration(&c.DialTimeout, "dial-timeout", envDialTimeout, c.DialTimeout,
		"how long to wait for a gateway to accept a connection before trying the next")
	s.Duration(&c.ResponseHeaderTimeout, "response-header-timeout", envResponseHeaderTimeout, c.ResponseHeaderTimeout,
		"how long to wait for a gateway's response headers (0: no limit)")
	s.Int(&c.MaxIdleConnsPerHost, "max-idle-conns-per-host", envMaxIdleConnsPerHost, c.MaxIdleConnsPerHost,
		"idle connections kept open to each gateway for reuse")
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", envShutdownTimeout, c.ShutdownTimeout,
		"grace period for in-flight requests on shutdown")
}

// Validate reports every bad setting at once, joined with errors.Join; each
// error names the flag, as in `balancer: --backends: "foo" is not an http(s)
// URL`.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("balancer: "+format, args...))
	}
	if c.Addr == "" && c.Listener == nil {
		bad("--addr is required")
	}
	if len(c.Backends) == 0 {
		bad("--backends: at least one gateway URL is required")
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
	if c.DialTimeout <= 0 {
		bad("--dial-timeout: must be positive, got %v", c.DialTimeout)
	}
	if c.ResponseHeaderTimeout < 0 {
		bad("--response-header-timeout: must not be negative, got %v", c.ResponseHeaderTimeout)
	}
	if c.IdleConnTimeout < 0 {
		bad("IdleConnTimeout: must not be negative, got %v", c.IdleConnTimeout)
	}
	// Zero would silently mean Go's default of 2: see MaxIdleConnsPerHost.
	if c.MaxIdleConnsPerHost < 1 {
		bad("--max-idle-conns-per-host: must be at least 1, got %d", c.MaxIdleConnsPerHost)
	}
	if c.ShutdownTimeout <= 0 {
		bad("--shutdown-timeout: must be positive, got %v", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
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

// backendList is the flag.Value of --backends: a comma-separated list whose
// value replaces the default (it does not append to it).
type backendList []string

func (l *backendList) String() string { return strings.Join(*l, ",") }

func (l *backendList) Set(v string) error {
	*l = splitList(v)
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
