package cachesvc

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/scalelab/scalelab/internal/auth"
	"github.com/scalelab/scalelab/internal/envflag"
)

// Config is the cache service's configuration.
type Config struct {
	// Addr is the HTTP address of the cache API.
	Addr string
	// Listener, when set, is served instead of listening on Addr.
	Listener net.Listener
	// TTL is how long an entry lives in the bucket.
	TTL time.Duration
	// MaxMB caps the bucket in MiB; the oldest entries go first when full.
	MaxMB int
	// Replicas is 1 on a single server and 3 on a cluster.
	Replicas int
	// ShutdownTimeout bounds in-flight HTTP requests on shutdown.
	ShutdownTimeout time.Duration
	// JWT verifies the tokens of the cache API's protected routes, by the
	// gateways' rules: writes, deletes and flushes need cache:write, reads
	// of a value cache:read. The secret comes only from the environment
	// (SCALELAB_JWT_SECRET, as for the gateways). Without it cachesvc
	// refuses to start rather than serve its writes to anyone.
	JWT auth.Keys
}

// DefaultConfig returns the defaults of DESIGN.md.
func DefaultConfig() Config {
	return Config{
		Addr: ":5004", TTL: 5 * time.Minute, MaxMB: 64, Replicas: 1, ShutdownTimeout: 10 * time.Second,
		JWT: auth.Keys{Issuer: auth.DefaultIssuer, Audience: auth.DefaultAudience},
	}
}

// RegisterFlags defines the cache service's flags on s and reads its
// token keys from the environment, as the gateway's do.
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.String(&c.Addr, "addr", "SCALELAB_ADDR", c.Addr, "HTTP address of the cache API")
	s.Duration(&c.TTL, "cache-ttl", "SCALELAB_CACHE_TTL", c.TTL, "time to live of cache entries")
	s.Int(&c.MaxMB, "cache-max-mb", "SCALELAB_CACHE_MAX_MB", c.MaxMB, "size cap of the cache bucket in MiB")
	s.Int(&c.Replicas, "replicas", "SCALELAB_REPLICAS", c.Replicas, "JetStream replicas of the cache bucket (3 on a cluster)")
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", "SCALELAB_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "grace period for in-flight requests")
	if s.Getenv != nil {
		c.JWT = auth.KeysFromEnv(s.Getenv)
	}
}

// Validate reports every bad setting at once.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" && c.Listener == nil {
		errs = append(errs, errors.New("cachesvc: --addr must not be empty"))
	}
	if c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("cachesvc: --cache-ttl must be at least 1s, got %v", c.TTL))
	}
	if c.MaxMB < 1 {
		errs = append(errs, fmt.Errorf("cachesvc: --cache-max-mb must be at least 1, got %d", c.MaxMB))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("cachesvc: --replicas must be 1..5, got %d", c.Replicas))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("cachesvc: --shutdown-timeout must not be negative, got %v", c.ShutdownTimeout))
	}
	if err := c.JWT.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("cachesvc: %w", err))
	}
	return errors.Join(errs...)
}
