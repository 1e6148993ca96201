package balancer

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"time"
)

// lookupFunc resolves a host name to its addresses. Run uses a
// net.Resolver; tests inject a fake, the one part of discovery that cannot
// run in-process.
type lookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// resolverLookup returns a lookupFunc over a net.Resolver of its own (Go's
// resolver, or the system's: whichever net picks for the platform).
func resolverLookup() lookupFunc {
	r := &net.Resolver{}
	return func(ctx context.Context, host string) ([]netip.Addr, error) {
		return r.LookupNetIP(ctx, "ip", host)
	}
}

// maxLookupTime bounds one resolution: a DNS server that does not answer
// must not hold the gateway list for longer than this.
const maxLookupTime = 5 * time.Second

// discoverer keeps the pool's backends equal to the addresses a DNS name
// resolves to. In a compose project the service name of the gateways
// resolves to one A record per replica, so `docker compose up --scale
// gateway=4` reaches the balancer within one interval, with no config edit.
type discoverer struct {
	host, port string
	interval   time.Duration
	lookup     lookupFunc
	pool       *pool
	log        *slog.Logger
}

// run resolves at once and then every interval until ctx ends. A failed or
// empty resolution keeps the last good set: a DNS hiccup must not empty
// the balancer. The first good set starts healthy; backends that appear
// later wait for a passing health check.
func (d *discoverer) run(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	var last []string
	for {
		lctx, cancel := context.WithTimeout(ctx, min(d.interval, maxLookupTime))
		addrs, err := d.lookup(lctx, d.host)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			d.log.Warn("discovery: resolve failed, keeping the last gateways", "host", d.host, "err", err,
				"backends", len(last))
		case len(addrs) == 0:
			d.log.Warn("discovery: no addresses, keeping the last gateways", "host", d.host, "backends", len(last))
		default:
			targets := d.targets(addrs)
			labels := make([]string, len(targets))
			for i, t := range targets {
				labels[i] = t.url.String()
			}
			if !slices.Equal(labels, last) {
				d.pool.set(ctx, targets, last == nil)
				d.log.Info("discovery: gateways", "host", d.host, "backends", labels)
				last = labels
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// targets returns one backend per distinct address, in a stable order, so
// that round robin keeps its sequence when DNS shuffles its answers.
func (d *discoverer) targets(addrs []netip.Addr) []target {
	addrs = slices.Clone(addrs)
	for i, a := range addrs {
		addrs[i] = a.Unmap()
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	addrs = slices.Compact(addrs)
	out := make([]target, 0, len(addrs))
	for _, a := range addrs {
		// Zones (fe80::1%eth0) are kept by String; JoinHostPort brackets
		// IPv6.
		u := &url.URL{Scheme: "http", Host: net.JoinHostPort(a.String(), d.port)}
		out = append(out, target{url: u, weight: 1})
	}
	return out
}
