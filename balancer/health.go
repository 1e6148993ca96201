package balancer

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// checker runs the active health checks: GET <backend><path> every
// interval, 2xx passes. Each check opens a new connection (keep-alives
// off), because connecting is what a dead or overloaded gateway fails
// first, and a pooled connection would hide it.
type checker struct {
	client    *http.Client
	path      string
	interval  time.Duration
	rise      int // passes in a row that make an unhealthy backend healthy
	fall      int // failures in a row that make a healthy backend unhealthy
	userAgent string
}

// newChecker returns the checker of cfg, or nil when active checks are
// off.
func newChecker(cfg Config) *checker {
	if cfg.HealthInterval == 0 {
		return nil
	}
	dialer := &net.Dialer{Timeout: cfg.HealthTimeout}
	dialContext := dialer.DialContext
	if cfg.Dial != nil {
		dialContext = func(ctx context.Context, _, addr string) (net.Conn, error) { return cfg.Dial(ctx, addr) }
	}
	return &checker{
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:                 nil,
				DialContext:           dialContext,
				DisableKeepAlives:     true,
				DisableCompression:    true,
				TLSHandshakeTimeout:   cfg.HealthTimeout,
				ResponseHeaderTimeout: cfg.HealthTimeout,
			},
			Timeout: cfg.HealthTimeout,
			// A redirect is an answer, not a reason to go elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		path:      cfg.HealthPath,
		interval:  cfg.HealthInterval,
		rise:      cfg.HealthyThreshold,
		fall:      cfg.UnhealthyThreshold,
		userAgent: "scalelab-balancer-health",
	}
}

// run checks b at once and then every interval until ctx ends, and tells
// p when the verdict changes. A backend that starts unhealthy (discovered
// after start) is admitted on its first passing check: it has no failures
// on record. One that became unhealthy needs rise passes in a row.
func (c *checker) run(ctx context.Context, p *pool, b *backend) {
	target := b.url.JoinPath(c.path)
	if c.path == "/" || c.path == "" {
		target = b.url
	}
	fresh := !b.healthy.Load()
	passes, fails := 0, 0
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		err := c.check(ctx, target)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			passes, fails = passes+1, 0
			if !b.healthy.Load() && (fresh || passes >= c.rise) {
				fresh = false
				p.setHealthy(b, true, nil)
			}
		} else {
			passes, fails = 0, fails+1
			if b.healthy.Load() && fails >= c.fall {
				p.setHealthy(b, false, err)
			}
		}
		b.metrics.checks(err == nil).Inc()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check makes one check; it returns nil when it passed.
func (c *checker) check(ctx context.Context, target *url.URL) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return fmt.Errorf("health check %s: %w", target, err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	res, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("health check %s: %w", target, err)
	}
	// Bounded: a check's answer is small, and a huge one is not worth
	// reading to the end (the connection is not reused anyway).
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	_ = res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("health check %s: status %d", target, res.StatusCode)
	}
	return nil
}
