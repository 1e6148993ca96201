package balancer

import (
	"context"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// The states of a backend, as GET /-/balancer and the metrics name them.
// Only a healthy backend gets new requests.
const (
	stateHealthy   = "healthy"   // passes its checks, not ejected, not draining
	stateUnhealthy = "unhealthy" // failed its active checks (or has not passed one yet)
	stateEjected   = "ejected"   // failed requests in a row; out until its back-off ends
	stateDraining  = "draining"  // an operator drained it; in-flight requests finish
)

// states lists every state, for the metrics.
var states = [...]string{stateHealthy, stateUnhealthy, stateEjected, stateDraining}

// backend is one gateway: its address, its state and its counters. The
// state and counters are atomics: requests read them on the hot path while
// health checks, ejections and the admin routes change them.
type backend struct {
	url    *url.URL
	label  string       // url.String(): the backend label in metrics, logs and admin URLs
	weight atomic.Int32 // changed by a reload (reload.go)
	// prefix is url's path, escaped, which every proxied path goes under;
	// usually empty.
	prefix string
	// client holds the connections to the backend.
	client *fasthttp.HostClient

	healthy  atomic.Bool // the active checks' verdict; always true when they are off
	ejected  atomic.Bool // passively ejected until readmit fires
	draining atomic.Bool // drained by an operator
	removed  atomic.Bool // no longer discovered; kept only by in-flight requests

	// Passive ejection: fails counts failed attempts in a row; ejections
	// counts ejections since the backend last recovered, for the back-off;
	// streak counts successes in a row while ejections > 0.
	fails     atomic.Int32
	ejections atomic.Int32
	streak    atomic.Int32

	requests atomic.Int64 // attempts sent, including failed and retried ones
	errors   atomic.Int64 // attempts that failed (see metrics.backendErrors)
	inFlight atomic.Int64 // attempts whose response body is not yet closed

	latency latencyHist
	metrics backendMetrics

	// Guarded by pool.mu.
	readmit   *time.Timer        // ends the current ejection
	stopCheck context.CancelFunc // stops the active checks
}

// state returns the backend's state for display; the most telling wins.
func (b *backend) state() string {
	switch {
	case b.draining.Load():
		return stateDraining
	case b.ejected.Load():
		return stateEjected
	case !b.healthy.Load():
		return stateUnhealthy
	}
	return stateHealthy
}

// retired reports whether the backend is no longer discovered: a
// connection to it is not kept for another request.
func (b *backend) retired() bool { return b.removed.Load() }

// available reports whether the backend may get new requests.
func (b *backend) available() bool {
	return b.healthy.Load() && !b.ejected.Load() && !b.draining.Load() && !b.removed.Load()
}

// readySet is an immutable snapshot of the backends that may get new
// requests, with what the policy precomputed over them. Picking only loads
// the current set, so the hot path takes no lock; any change of state
// builds a new set.
type readySet struct {
	backends []*backend
	// cycle is one full cycle of smooth weighted round robin over
	// backends (weighted_round_robin only).
	cycle []*backend
	// policy picks from this set: in the snapshot, so that a reload can
	// change it without a lock on the hot path.
	policy picker
}

// poolConfig is what a pool needs of Config.
type poolConfig struct {
	ejectAfter      int32
	ejectBackoff    time.Duration
	ejectBackoffMax time.Duration
	// newClient makes a backend's connection pool; nil in tests that send
	// no requests.
	newClient func(*url.URL) *fasthttp.HostClient
}

// backoff returns how long the k-th ejection in a row lasts: the base
// back-off, doubled for each earlier one, capped.
func (c poolConfig) backoff(k int32) time.Duration {
	d := c.ejectBackoff
	for i := int32(1); i < k && d < c.ejectBackoffMax; i++ {
		d *= 2
	}
	return min(d, c.ejectBackoffMax)
}

// pool holds the backends and decides which are ready.
type pool struct {
	cfg     poolConfig
	policy  picker
	metrics *metrics
	health  *checker // nil when active checks are off
	log     *slog.Logger

	ready atomic.Pointer[readySet]
	// all is the current backends, in order, for GET /-/balancer and the
	// metrics; it is replaced, never changed in place.
	all atomic.Pointer[[]*backend]
	// retryTurn spreads retries whose failed backend left the ready set.
	retryTurn atomic.Uint64

	mu      sync.Mutex     // serializes changes of state
	checks  sync.WaitGroup // the active check goroutines
	stopped bool           // guarded by mu: close was called
}

func newPool(cfg poolConfig, policy picker, m *metrics, health *checker, log *slog.Logger) *pool {
	p := &pool{cfg: cfg, policy: policy, metrics: m, health: health, log: log}
	p.ready.Store(&readySet{policy: policy})
	p.all.Store(&[]*backend{})
	return p
}

// target is a backend the pool should have: its URL and weight.
type target struct {
	url    *url.URL
	weight int
}

// set makes targets the pool's backends. A backend whose URL is still
// there keeps its state and counters; a new one starts healthy when
// initial (the first set: nothing else could take the traffic) or when
// active checks are off, and otherwise waits for one passing check. A
// backend that is gone gets no new requests; the ones it has in flight
// finish. ctx bounds the active checks of new backends.
func (p *pool) set(ctx context.Context, targets []target, initial bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	old := *p.all.Load()
	byLabel := make(map[string]*backend, len(old))
	for _, b := range old {
		byLabel[b.label] = b
	}
	next := make([]*backend, 0, len(targets))
	for _, t := range targets {
		label := t.url.String()
		if b, ok := byLabel[label]; ok {
			delete(byLabel, label)
			b.weight.Store(int32(t.weight)) // a reload may change it
			next = append(next, b)
			continue
		}
		b := &backend{url: t.url, label: label, prefix: t.url.EscapedPath(),
			metrics: p.metrics.forBackend(label)}
		b.weight.Store(int32(t.weight))
		if p.cfg.newClient != nil {
			b.client = p.cfg.newClient(t.url)
		}
		b.healthy.Store(initial || p.health == nil)
		next = append(next, b)
		if p.health != nil {
			cctx, cancel := context.WithCancel(ctx)
			b.stopCheck = cancel
			p.checks.Go(func() { p.health.run(cctx, p, b) })
		}
		if !initial {
			p.log.Info("backend added", "upstream", label, "state", b.state())
		}
	}
	for _, b := range old {
		if _, gone := byLabel[b.label]; !gone {
			continue
		}
		p.retire(b)
		p.log.Info("backend removed", "upstream", b.label, "in_flight", b.inFlight.Load())
	}
	p.all.Store(&next)
	p.rebuild()
}

// retire stops everything the pool runs for b; the caller holds p.mu.
func (p *pool) retire(b *backend) {
	b.removed.Store(true)
	if b.stopCheck != nil {
		b.stopCheck()
	}
	if b.readmit != nil {
		b.readmit.Stop()
	}
	if b.client != nil {
		// Connections in use go back to the pool when their requests
		// finish and are closed after IdleConnTimeout.
		b.client.CloseIdleConnections()
	}
	p.metrics.forget(b.label)
}

// close stops the active checks and pending readmissions and waits for the
// checks to return. The pool takes no more changes after it.
func (p *pool) close() {
	p.mu.Lock()
	p.stopped = true
	for _, b := range *p.all.Load() {
		if b.stopCheck != nil {
			b.stopCheck()
		}
		if b.readmit != nil {
			b.readmit.Stop()
		}
	}
	p.mu.Unlock()
	p.checks.Wait()
	for _, b := range *p.all.Load() {
		if b.client != nil {
			b.client.CloseIdleConnections()
		}
	}
}

// rebuild publishes a new ready set; the caller holds p.mu.
func (p *pool) rebuild() {
	var ready []*backend
	for _, b := range *p.all.Load() {
		if b.available() {
			ready = append(ready, b)
		}
	}
	set := &readySet{backends: ready, policy: p.policy}
	if _, ok := p.policy.(*weightedRoundRobin); ok {
		set.cycle = smoothWeightedCycle(ready)
	}
	p.ready.Store(set)
}

// pick returns the backend for a new request, or nil if none is ready.
func (p *pool) pick() *backend {
	set := p.ready.Load()
	if len(set.backends) == 0 {
		return nil
	}
	return set.policy.pick(set)
}

// setPolicy makes policy the pool's from the next pick on.
func (p *pool) setPolicy(policy picker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.policy = policy
	p.rebuild()
}

// pickRetry returns a ready backend not in tried for a retry after
// tried[len(tried)-1] failed, or nil if there is none. It takes the next
// one in order after the backend that failed, so retries of a dead
// backend's requests spread like its requests would have.
func (p *pool) pickRetry(tried []*backend) *backend {
	ready := p.ready.Load().backends
	n := len(ready)
	if n == 0 {
		return nil
	}
	start := slices.Index(ready, tried[len(tried)-1]) + 1
	if start == 0 {
		// The failed backend already left the set.
		start = int(p.retryTurn.Add(1) % uint64(n))
	}
	for i := range n {
		if b := ready[(start+i)%n]; !slices.Contains(tried, b) {
			return b
		}
	}
	return nil
}

// byLabel returns the current backend labelled label, or nil.
func (p *pool) byLabel(label string) *backend {
	for _, b := range *p.all.Load() {
		if b.label == label {
			return b
		}
	}
	return nil
}

// setHealthy records an active check verdict that changed; cause is the
// last check's error when it failed.
func (p *pool) setHealthy(b *backend, healthy bool, cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.removed.Load() || b.healthy.Load() == healthy {
		return
	}
	b.healthy.Store(healthy)
	if healthy {
		// A backend back from the dead starts with a clean record.
		b.fails.Store(0)
	}
	p.rebuild()
	if healthy {
		p.log.Info("backend healthy", "upstream", b.label)
	} else {
		p.log.Warn("backend unhealthy", "upstream", b.label, "err", cause)
	}
}

// setDraining drains or undrains b. It reports whether that changed
// anything.
func (p *pool) setDraining(b *backend, draining bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.draining.Load() == draining {
		return false
	}
	b.draining.Store(draining)
	p.rebuild()
	return true
}

// observe records the outcome of one attempt on b for passive ejection:
// failed is a connection error, a broken exchange or a 5xx answer. A
// healthy backend's successes only read atomics, so the hot path does not
// bounce cache lines between cores.
func (p *pool) observe(b *backend, failed bool) {
	if p.cfg.ejectAfter == 0 {
		return
	}
	if !failed {
		if b.fails.Load() != 0 {
			b.fails.Store(0)
		}
		if b.ejections.Load() != 0 && b.streak.Add(1) >= p.cfg.ejectAfter {
			// Recovered: the next ejection starts from the base back-off.
			b.ejections.Store(0)
			b.streak.Store(0)
		}
		return
	}
	b.streak.Store(0)
	if b.fails.Add(1) >= p.cfg.ejectAfter {
		p.eject(b)
	}
}

// eject takes b out for its back-off period, unless it is the last ready
// backend: when every backend fails, the problem is most likely shared (a
// dependency of all the gateways), and the gateways' own answers tell the
// client more than the balancer's 503 would. The active checks still take
// out a backend that is really down.
func (p *pool) eject(b *backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b.ejected.Load() || b.removed.Load() || p.stopped {
		return
	}
	others := false
	for _, r := range p.ready.Load().backends {
		if r != b {
			others = true
			break
		}
	}
	if !others {
		return
	}
	k := b.ejections.Add(1)
	backoff := p.cfg.backoff(k)
	b.ejected.Store(true)
	b.fails.Store(0)
	b.streak.Store(0)
	b.readmit = time.AfterFunc(backoff, func() { p.readmit(b) })
	p.rebuild()
	b.metrics.ejections.Inc()
	p.log.Warn("backend ejected", "upstream", b.label, "ejections", k, "backoff", backoff.String())
}

// readmit ends b's ejection.
func (p *pool) readmit(b *backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !b.ejected.Load() || p.stopped {
		return
	}
	b.ejected.Store(false)
	p.rebuild()
	p.log.Info("backend readmitted", "upstream", b.label, "state", b.state())
}
