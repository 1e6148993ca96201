package gateway

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/envflag"
	"github.com/scalelab/scalelab/internal/task"
)

// Config is the gateway's configuration.
type Config struct {
	// ID names this gateway in X-Served-By and logs.
	ID string
	// Addr is the HTTP address.
	Addr string
	// Listener, when set, is served instead of listening on Addr.
	Listener net.Listener
	// JWT holds the token key and expected claims. The secret comes only
	// from the environment (SCALELAB_JWT_SECRET), never from a flag.
	JWT auth.Keys
	// RequestTimeout bounds each call to a service over NATS.
	RequestTimeout time.Duration
	// Cache selects and tunes the cache tiers of the cached routes.
	Cache cache.Config
	// Limits are the per-IP and per-subject request rate limits.
	Limits RateLimits
	// Logins throttle failed logins per user name and per client address.
	Logins LoginLimits
	// BcryptSlots is how many bcrypt compares of POST /auth/token run at
	// once; 0 is DefaultBcryptSlots of GOMAXPROCS when Run starts. A
	// command that raised GOMAXPROCS (`up`, for the balancer's event
	// loops) sets it from the cores instead, so that bcrypt stays on half
	// of them. Not a flag.
	BcryptSlots int
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// (the balancer's addresses). From any other peer the header is
	// ignored and the peer is the client, for the per-IP limit and the
	// login throttle. None by default.
	TrustedProxies []netip.Prefix
	// ShutdownTimeout bounds in-flight requests on shutdown.
	ShutdownTimeout time.Duration
	// Provision is how the TASKS stream and tasks bucket are expected to
	// be sized; their provisioner (admin) sizes them, and Run warns when
	// they differ (task.Open).
	Provision task.ProvisionConfig
	// TokenTTL is the lifetime of the tokens POST /auth/token issues; they
	// cannot be revoked, so it is short and capped at a day.
	TokenTTL time.Duration
	// InjectLatency delays every API request by this much (not the health
	// checks: the gateway stays healthy, only slow). It is for breaking
	// things on purpose: a slow instance behind the balancer, as in
	// `scalelab bench balance`. Zero, the default, adds nothing.
	InjectLatency time.Duration
	// TaskIndex, when set, is the index of task records this gateway
	// lists from and streams events from (GET /tasks, the event
	// streams), shared with the other gateways of its process
	// (StartTaskIndex). Nil: the gateway follows the tasks bucket itself.
	// Not a flag: `up` sets it.
	TaskIndex *TaskIndex

	// dummyHash, when set, replaces the package's dummyHash for unknown
	// users. Tests only: one that checks a login's answers, not its
	// timing, uses a hash at the cheapest cost, since at the real cost
	// each compare takes seconds under -race, which on a loaded machine
	// outlasted the test client's timeout.
	dummyHash string
}

// DefaultConfig returns the defaults of DESIGN.md.
func DefaultConfig() Config {
	return Config{
		Addr:            ":5000",
		JWT:             auth.Keys{Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience},
		RequestTimeout:  5 * time.Second,
		Cache:           cache.DefaultConfig(),
		Limits:          DefaultRateLimits(),
		Logins:          DefaultLoginLimits(),
		ShutdownTimeout: 10 * time.Second,
		Provision:       task.DefaultProvisionConfig(),
		TokenTTL:        time.Hour,
	}
}

// RegisterFlags defines the gateway's flags on s and reads its secrets from
// the environment.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.ID, "id", "SCALELAB_ID", c.ID, "gateway id shown in X-Served-By and logs")
	s.String(&c.Addr, "addr", "SCALELAB_ADDR", c.Addr, "HTTP address")
	s.Duration(&c.RequestTimeout, "request-timeout", "SCALELAB_REQUEST_TIMEOUT", c.RequestTimeout, "timeout of each service call over NATS")
	c.Cache.RegisterFlags(s)
	c.Limits.RegisterFlags(s)
	s.Func("trusted-proxies", "SCALELAB_TRUSTED_PROXIES",
		"comma-separated CIDRs of the proxies (the balancer) whose X-Forwarded-For names the client (default none: the peer is the client)",
		func(v string) error {
			p, err := ParseTrustedProxies(v)
			if err != nil {
				return err
			}
			c.TrustedProxies = p
			return nil
		})
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", "SCALELAB_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "grace period for in-flight requests")
	c.Provision.RegisterFlags(s)
	s.Duration(&c.TokenTTL, "token-ttl", "SCALELAB_TOKEN_TTL", c.TokenTTL, "lifetime of tokens from POST /auth/token (at most 24h)")
	s.Duration(&c.InjectLatency, "inject-latency", "SCALELAB_INJECT_LATENCY", c.InjectLatency, "delay added to every API request, to demonstrate a slow gateway (0: none)")
	if s.Getenv != nil {
		c.JWT = auth.KeysFromEnv(s.Getenv)
	}
}

// Validate reports every bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("gateway: --id must not be empty"))
	}
	if c.Addr == "" && c.Listener == nil {
		errs = append(errs, errors.New("gateway: --addr must not be empty"))
	}
	if err := c.JWT.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("gateway: %w", err))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("gateway: --request-timeout must be positive, got %v", c.RequestTimeout))
	}
	if err := c.Cache.Validate("gateway"); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Limits.Validate("gateway")...)
	errs = append(errs, c.Logins.Validate("gateway")...)
	if c.BcryptSlots < 0 {
		errs = append(errs, fmt.Errorf("gateway: bcrypt slots must not be negative, got %d", c.BcryptSlots))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("gateway: --shutdown-timeout must not be negative, got %v", c.ShutdownTimeout))
	}
	if err := c.Provision.Validate("gateway"); err != nil {
		errs = append(errs, err)
	}
	if c.TokenTTL <= 0 || c.TokenTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("gateway: --token-ttl must be positive and at most 24h, got %v", c.TokenTTL))
	}
	if c.InjectLatency < 0 || c.InjectLatency > 10*time.Second {
		errs = append(errs, fmt.Errorf("gateway: --inject-latency must be 0..10s, got %v", c.InjectLatency))
	}
	return errors.Join(errs...)
}
