package gateway

import (
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/scalelab/scalelab/internal/apperr"
	"github.com/scalelab/scalelab/internal/envflag"
)

// RateLimits are the gateway's request rate limits, each a token bucket
// per key: per client IP (before authentication, so unauthenticated floods
// are bounded too) and per token subject. Zero turns a limit off. They are
// per gateway: behind N gateways a client gets up to N times the rate.
type RateLimits struct {
	// PerIP is the sustained requests/s of one client IP; BurstIP the
	// requests it may send at once.
	PerIP   float64
	BurstIP int
	// PerSubject and BurstSubject are the same per token subject.
	PerSubject   float64
	BurstSubject int
	// Keys bounds the number of buckets kept (least recently used go).
	Keys int
}

// DefaultRateLimits bound abuse without getting in the way of a benchmark
// from one machine for its first seconds: the bursts absorb a test run,
// and benchmarks turn the limits off (0).
func DefaultRateLimits() RateLimits {
	return RateLimits{PerIP: 1000, BurstIP: 2000, PerSubject: 1000, BurstSubject: 2000, Keys: 100000}
}

// RegisterFlags defines the rate limit flags on s.
func (r *RateLimits) RegisterFlags(s *envflag.Set) {
	s.Func("rate-limit-ip", "SCALELAB_RATE_LIMIT_IP", "requests/s per client IP, 0: no limit (default "+ftoa(r.PerIP)+")", floatFlag(&r.PerIP))
	s.Int(&r.BurstIP, "rate-burst-ip", "SCALELAB_RATE_BURST_IP", r.BurstIP, "burst of requests per client IP")
	s.Func("rate-limit-subject", "SCALELAB_RATE_LIMIT_SUBJECT", "requests/s per token subject, 0: no limit (default "+ftoa(r.PerSubject)+")", floatFlag(&r.PerSubject))
	s.Int(&r.BurstSubject, "rate-burst-subject", "SCALELAB_RATE_BURST_SUBJECT", r.BurstSubject, "burst of requests per token subject")
}

// Validate reports every bad setting, prefixed with who.
func (r RateLimits) Validate(who string) []error {
	var errs []error
	check := func(name string, perSec float64, burst int) {
		if perSec < 0 || math.IsNaN(perSec) || math.IsInf(perSec, 0) {
			errs = append(errs, fmt.Errorf("%s: --rate-limit-%s must be >= 0, got %v", who, name, perSec))
		}
		if perSec > 0 && burst < 1 {
			errs = append(errs, fmt.Errorf("%s: --rate-burst-%s must be >= 1 with a limit, got %d", who, name, burst))
		}
	}
	check("ip", r.PerIP, r.BurstIP)
	check("subject", r.PerSubject, r.BurstSubject)
	if r.Keys < 1 {
		errs = append(errs, fmt.Errorf("%s: rate limit keys must be >= 1, got %d", who, r.Keys))
	}
	return errs
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func floatFlag(p *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return err
		}
		*p = f
		return nil
	}
}

// limiter holds one token bucket per key, the least recently used dropped
// past a bound so that a flood of distinct keys cannot exhaust memory (a
// dropped key starts again with a full bucket: the bound must exceed the
// number of active clients).
type limiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets *simplelru.LRU[string, *rate.Limiter]
}

// newLimiter returns nil when perSec is 0 (no limit).
func newLimiter(perSec float64, burst, keys int) *limiter {
	if perSec == 0 {
		return nil
	}
	buckets, _ := simplelru.NewLRU[string, *rate.Limiter](keys, nil)
	return &limiter{limit: rate.Limit(perSec), burst: burst, buckets: buckets}
}

// allow takes a token from key's bucket; when there is none, it says how
// long until there will be one.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	b, ok := l.buckets.Get(key)
	if !ok {
		b = rate.NewLimiter(l.limit, l.burst)
		l.buckets.Add(key, b)
	}
	l.mu.Unlock()
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// limited is the 429 of a rate limit, with Retry-After in whole seconds
// (at least 1: HTTP has no finer unit).
func limited(c echo.Context, what string, wait time.Duration) error {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	return apperr.New(apperr.RateLimited, "too many requests for this %s; retry in %ds", what, secs)
}

// limitByIP applies the per-IP limit to every request but the ops routes.
// The IP is echo's RealIP, which takes X-Forwarded-For only from the
// configured trusted proxies (Config.TrustedProxies), see clientIP.
func limitByIP(l *limiter) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if l == nil {
			return next
		}
		return func(c echo.Context) error {
			if ok, wait := l.allow(c.RealIP(), time.Now()); !ok {
				return limited(c, "client address", wait)
			}
			return next(c)
		}
	}
}

// limitBySubject applies the per-subject limit; it runs after authenticate.
func limitBySubject(l *limiter) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		if l == nil {
			return next
		}
		return func(c echo.Context) error {
			claims := claimsOf(c)
			if claims == nil {
				return next(c)
			}
			if ok, wait := l.allow(claims.Subject, time.Now()); !ok {
				return limited(c, "token subject", wait)
			}
			return next(c)
		}
	}
}
