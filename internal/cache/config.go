package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/scalelab/scalelab/internal/envflag"
)

// Mode selects the tiers a process uses.
type Mode string

// The modes of --cache: the lab's experiment with and without a cache is
// one flag.
const (
	// ModeOff reads the database on every request (no cache, no
	// singleflight): the baseline.
	ModeOff Mode = "off"
	// ModeKV uses the shared KV bucket only.
	ModeKV Mode = "kv"
	// ModeKVLocal adds the in-process near-cache in front of KV.
	ModeKVLocal Mode = "kv+local"
)

// Config tunes a Cache.
type Config struct {
	// Mode is off, kv or kv+local.
	Mode Mode
	// TTL is the life of a cached value in KV; each entry gets TTL minus up
	// to Jitter of it, at random.
	TTL time.Duration
	// Jitter is the fraction of TTL (0..0.5) taken off at random.
	Jitter float64
	// NegativeTTL is the life of a cached "not found".
	NegativeTTL time.Duration
	// LocalTTL bounds the life of an L1 entry; the KV watch removes it
	// sooner when the key changes or expires.
	LocalTTL time.Duration
	// LocalEntries bounds L1; the least recently used entry goes first.
	LocalEntries int
	// Timeout bounds one KV operation; past it the cache is skipped and
	// the database read.
	Timeout time.Duration
	// LeaseTTL is how long a fill lease lives if its holder never fills it
	// (it crashed): at most this long, other processes wait, then load
	// for themselves.
	LeaseTTL time.Duration
	// ConfirmTimeout bounds how long Invalidate waits for every process
	// holding an L1 to confirm.
	ConfirmTimeout time.Duration
}

// refreshAfter is the age past which a KV hit reloads its key in the
// background (see Cache.refreshAhead). A hot key is read from KV at least
// every LocalTTL (each time its L1 entry ends), so starting refreshes
// LocalTTL before the shortest entry life ends leaves at least one read to
// start one in time; a tenth of that life more is left for the load. It is
// never under a quarter of that life, so that a LocalTTL near TTL does not
// turn every L1 miss into a database load. With the defaults: 18.6 s of a
// 54-60 s life.
func (c Config) refreshAfter() time.Duration {
	shortest := time.Duration((1 - c.Jitter) * float64(c.TTL))
	window := shortest / 10
	if c.Mode == ModeKVLocal {
		window += c.LocalTTL
	}
	return max(shortest-window, shortest/4)
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Mode:           ModeKVLocal,
		TTL:            time.Minute,
		Jitter:         0.1,
		NegativeTTL:    5 * time.Second,
		LocalTTL:       30 * time.Second,
		LocalEntries:   10000,
		Timeout:        500 * time.Millisecond,
		LeaseTTL:       5 * time.Second,
		ConfirmTimeout: time.Second,
	}
}

// RegisterFlags defines the cache flags of a process that reads through
// the cache (the gateway).
func (c *Config) RegisterFlags(s *envflag.Set) {
	s.Func("cache", "SCALELAB_CACHE", "cache tiers: off, kv or kv+local (default "+string(c.Mode)+")", func(v string) error {
		c.Mode = Mode(v)
		return nil
	})
	s.Duration(&c.TTL, "cache-entry-ttl", "SCALELAB_CACHE_ENTRY_TTL", c.TTL, "time to live of a cached value (minus jitter)")
	s.Duration(&c.NegativeTTL, "cache-negative-ttl", "SCALELAB_CACHE_NEGATIVE_TTL", c.NegativeTTL, "time to live of a cached not-found")
	s.Duration(&c.LocalTTL, "cache-local-ttl", "SCALELAB_CACHE_LOCAL_TTL", c.LocalTTL, "longest life of a near-cache entry")
	s.Int(&c.LocalEntries, "cache-local-entries", "SCALELAB_CACHE_LOCAL_ENTRIES", c.LocalEntries, "size bound of the near-cache")
	s.Duration(&c.Timeout, "cache-timeout", "SCALELAB_CACHE_TIMEOUT", c.Timeout, "timeout of a cache operation before falling back to the database")
}

// Validate reports every bad setting at once, prefixed with who.
func (c Config) Validate(who string) error {
	var errs []error
	switch c.Mode {
	case ModeOff, ModeKV, ModeKVLocal:
	default:
		errs = append(errs, fmt.Errorf("%s: --cache must be off, kv or kv+local, got %q", who, c.Mode))
	}
	if c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("%s: --cache-entry-ttl must be at least 1s, got %v", who, c.TTL))
	}
	if c.Jitter < 0 || c.Jitter > 0.5 {
		errs = append(errs, fmt.Errorf("%s: cache jitter must be 0..0.5, got %v", who, c.Jitter))
	}
	if c.NegativeTTL < time.Second {
		errs = append(errs, fmt.Errorf("%s: --cache-negative-ttl must be at least 1s, got %v", who, c.NegativeTTL))
	}
	if c.LocalTTL <= 0 {
		errs = append(errs, fmt.Errorf("%s: --cache-local-ttl must be positive, got %v", who, c.LocalTTL))
	}
	if c.LocalEntries < 1 {
		errs = append(errs, fmt.Errorf("%s: --cache-local-entries must be at least 1, got %d", who, c.LocalEntries))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("%s: --cache-timeout must be positive, got %v", who, c.Timeout))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("%s: cache lease TTL must be at least 1s, got %v", who, c.LeaseTTL))
	}
	if c.ConfirmTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s: cache confirm timeout must be positive, got %v", who, c.ConfirmTimeout))
	}
	return errors.Join(errs...)
}
