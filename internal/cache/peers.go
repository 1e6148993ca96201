package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/internal/natsconn"
)

// ServiceName is the micro service every Cache registers, one instance per
// process: `nats micro ls` lists them, `nats micro stats cache-client`
// shows each one's hits and misses per tier.
const ServiceName = "cache-client"

// serviceVersion is the version the micro service announces.
const serviceVersion = "1.0.0"

// SubjectInvalidate is where invalidations are broadcast. Its endpoint has
// no queue group: every process gets every invalidation.
const SubjectInvalidate = "cache.client.invalidate"

// peerViewTTL is how long a membership view is trusted before Broadcast
// pings again. A process younger than this may be missed by a broadcast;
// its KV watch still removes the key within milliseconds.
const peerViewTTL = 2 * time.Second

// pingStall ends a ping's collection once no reply came for this long.
const pingStall = 50 * time.Millisecond

// pingRecheck bounds the second ping of known processes that did not
// answer the first in time.
const pingRecheck = 250 * time.Millisecond

// Invalidation is the body of a broadcast: keys to drop from L1, or all.
type Invalidation struct {
	Keys  []string `json:"keys,omitempty"`
	Flush bool     `json:"flush,omitempty"`
}

// confirmation answers an Invalidation.
type confirmation struct {
	ID string `json:"id"`
}

// serve registers the process's cache-client service.
func (c *Cache) serve() (micro.Service, error) {
	svc, err := micro.AddService(c.nc, micro.Config{
		Name:        ServiceName,
		Version:     serviceVersion,
		Description: "a process's cache tiers: invalidations and per-tier stats",
		Metadata:    map[string]string{"id": c.id, "mode": string(c.cfg.Mode)},
		// Every instance must see every invalidation.
		QueueGroupDisabled: true,
		StatsHandler:       func(*micro.Endpoint) any { return c.Stats() },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: add micro service: %w", err)
	}
	err = svc.AddEndpoint("invalidate", micro.HandlerFunc(func(req micro.Request) {
		var in Invalidation
		if err := json.Unmarshal(req.Data(), &in); err != nil {
			_ = req.Error("400", "invalidation must be JSON {\"keys\":[...]} or {\"flush\":true}", nil)
			return
		}
		c.drop(in)
		_ = req.RespondJSON(confirmation{ID: svc.Info().ID})
	}), micro.WithEndpointSubject(SubjectInvalidate))
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("cache: add invalidate endpoint: %w", err)
	}
	return svc, nil
}

// drop applies an invalidation to L1.
func (c *Cache) drop(in Invalidation) {
	if c.l1 == nil {
		return
	}
	if in.Flush {
		c.l1.purge()
		return
	}
	for _, k := range in.Keys {
		c.l1.invalidate(k, 0)
	}
}

// Invalidator broadcasts invalidations to every cache-client instance and
// waits for each to confirm. It keeps a view of the instances, refreshed
// by pinging the service when older than peerViewTTL.
type Invalidator struct {
	nc      *nats.Conn
	timeout time.Duration
	log     *slog.Logger
	viewTTL time.Duration // peerViewTTL; a test sets 0 to ping every time

	mu        sync.Mutex
	peers     map[string]bool
	refreshed time.Time
	// gone holds, for each process that stopped answering (a ping or a
	// broadcast), until when its near-cache may still serve: LocalLease
	// after it was missed. A broadcast is not done before then.
	gone map[string]time.Time
}

// NewInvalidator returns an Invalidator that waits up to timeout for
// confirmations.
func NewInvalidator(nc *nats.Conn, timeout time.Duration, log *slog.Logger) *Invalidator {
	return &Invalidator{nc: nc, timeout: timeout, log: log.With("component", "cache"), viewTTL: peerViewTTL}
}

// ErrUnconfirmed is returned (wrapped) by Broadcast when some instance did
// not confirm in time.
var ErrUnconfirmed = errors.New("cache: invalidation not confirmed by every process")

// Broadcast sends in to every instance and waits until all it knows of
// have confirmed, or the timeout passes.
//
// A process that stopped answering since it was last seen may still serve
// from its near-cache until its lease runs out (LocalLease after it was
// missed); Broadcast returns nil only once that has passed, waiting for it
// with the caller's ctx.
func (b *Invalidator) Broadcast(ctx context.Context, in Invalidation) error {
	outer := ctx
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	peers, err := b.view(ctx)
	if err != nil {
		return err
	}
	data, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("cache: encode invalidation: %w", err)
	}
	replies, err := natsconn.Gather(ctx, b.nc, SubjectInvalidate, data, natsconn.GatherOptions{
		Enough:  func(got int) bool { return got >= len(peers) },
		Service: ServiceName,
	})
	missing := maps.Clone(peers)
	var learned []string
	for _, r := range replies {
		var cf confirmation
		if json.Unmarshal(r.Data, &cf) == nil && cf.ID != "" {
			delete(missing, cf.ID)
			if !peers[cf.ID] {
				learned = append(learned, cf.ID)
			}
		}
	}
	// A process that confirmed without being in the view (it missed the
	// last ping, or started since) is waited for from now on.
	if len(learned) > 0 {
		b.mu.Lock()
		for _, id := range learned {
			if b.peers != nil {
				b.peers[id] = true
			}
			delete(b.gone, id)
		}
		b.mu.Unlock()
	}
	if len(missing) == 0 {
		return b.outwait(outer)
	}
	// Forget them: a process that died is not waited for again; one that
	// is alive comes back with the next ping. Until its lease has run out,
	// though, it may still serve from its near-cache.
	b.mu.Lock()
	for id := range missing {
		b.depart(id)
	}
	b.mu.Unlock()
	ids := slices.Sorted(maps.Keys(missing))
	why := fmt.Sprintf("within %v", b.timeout)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		why = err.Error()
	}
	return fmt.Errorf("%w: no answer from %s (%s)", ErrUnconfirmed, strings.Join(ids, ", "), why)
}

// view returns the known instances, pinging them when the view is stale.
func (b *Invalidator) view(ctx context.Context) (map[string]bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peers != nil && time.Since(b.refreshed) < b.viewTTL {
		return maps.Clone(b.peers), nil
	}
	subject, err := micro.ControlSubject(micro.PingVerb, ServiceName, "")
	if err != nil {
		return nil, err
	}
	replies, err := natsconn.Gather(ctx, b.nc, subject, nil, natsconn.GatherOptions{Stall: pingStall})
	if err != nil && len(replies) == 0 && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("cache: ping %s: %w", ServiceName, err)
	}
	peers := make(map[string]bool, len(replies))
	for _, r := range replies {
		var p micro.Ping
		if json.Unmarshal(r.Data, &p) == nil && p.ID != "" {
			peers[p.ID] = true
		}
	}
	// A known process that was slow to answer (a busy machine) is asked
	// once more on its own subject before it counts as gone.
	recheck, cancel := context.WithTimeout(ctx, pingRecheck)
	defer cancel()
	for id := range b.peers {
		if !peers[id] && b.answers(recheck, id) {
			peers[id] = true
		}
	}
	for id := range b.peers {
		if !peers[id] {
			b.depart(id)
		}
	}
	for id := range peers {
		delete(b.gone, id)
	}
	b.peers, b.refreshed = peers, time.Now()
	return maps.Clone(peers), nil
}

// answers reports whether process id answers a ping of its own before ctx
// ends.
func (b *Invalidator) answers(ctx context.Context, id string) bool {
	subject, err := micro.ControlSubject(micro.PingVerb, ServiceName, id)
	if err != nil {
		return false
	}
	replies, _ := natsconn.Gather(ctx, b.nc, subject, nil, natsconn.GatherOptions{Enough: func(n int) bool { return n > 0 }})
	return len(replies) > 0
}

// depart records that process id was missed just now: its near-cache may
// serve for LocalLease more. The caller holds b.mu.
func (b *Invalidator) depart(id string) {
	delete(b.peers, id)
	if b.gone == nil {
		b.gone = make(map[string]time.Time)
	}
	b.gone[id] = time.Now().Add(LocalLease)
}

// outwait waits until every departed process's lease has run out, or ctx
// ends (then the broadcast is unconfirmed).
func (b *Invalidator) outwait(ctx context.Context) error {
	b.mu.Lock()
	var until time.Time
	for id, t := range b.gone {
		switch {
		case !time.Now().Before(t):
			delete(b.gone, id)
		case t.After(until):
			until = t
		}
	}
	b.mu.Unlock()
	if until.IsZero() {
		return nil
	}
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: a process that stopped answering may serve from its near-cache until %s", ErrUnconfirmed, until.Format(time.RFC3339Nano))
	}
}

// Stats are one process's cache counters, as its micro service reports them.
type Stats struct {
	// ID is the process (the gateway's id).
	ID string `json:"id"`
	// Mode is its --cache mode.
	Mode Mode `json:"mode"`
	// Local is the near-cache; KV is the shared bucket as this process saw it.
	Local TierStats `json:"local"`
	KV    TierStats `json:"kv"`
	// Loads counts database reads; Fills the values it stored in KV;
	// FillsDropped the fills abandoned because the key changed meanwhile;
	// LeaseWaits the misses that waited for another process's fill;
	// Refreshes the background reloads of entries near their expiry.
	Loads        uint64 `json:"loads"`
	Fills        uint64 `json:"fills"`
	FillsDropped uint64 `json:"fills_dropped"`
	LeaseWaits   uint64 `json:"lease_waits"`
	Refreshes    uint64 `json:"refreshes"`
}

// TierStats counts one tier's lookups, and for L1 its size.
type TierStats struct {
	Hits      uint64  `json:"hits"`
	Misses    uint64  `json:"misses"`
	Errors    uint64  `json:"errors,omitempty"`
	HitRatio  float64 `json:"hit_ratio"`
	Entries   int     `json:"entries"`
	Bytes     int64   `json:"bytes"`
	Evictions uint64  `json:"evictions"`
}

// Add sums o into t and recomputes the hit ratio.
func (t *TierStats) Add(o TierStats) {
	t.Hits += o.Hits
	t.Misses += o.Misses
	t.Errors += o.Errors
	t.Entries += o.Entries
	t.Bytes += o.Bytes
	t.Evictions += o.Evictions
	t.HitRatio = ratio(t.Hits, t.Misses)
}

func ratio(hits, misses uint64) float64 {
	if hits+misses == 0 {
		return 0
	}
	return float64(hits) / float64(hits+misses)
}

// CollectStats asks every cache-client instance for its Stats.
func CollectStats(ctx context.Context, nc *nats.Conn) ([]Stats, error) {
	subject, err := micro.ControlSubject(micro.StatsVerb, ServiceName, "")
	if err != nil {
		return nil, err
	}
	replies, err := natsconn.Gather(ctx, nc, subject, nil, natsconn.GatherOptions{Stall: pingStall})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("cache: stats of %s: %w", ServiceName, err)
	}
	var out []Stats
	for _, r := range replies {
		var ms micro.Stats
		if json.Unmarshal(r.Data, &ms) != nil {
			continue
		}
		for _, ep := range ms.Endpoints {
			var s Stats
			if len(ep.Data) > 0 && json.Unmarshal(ep.Data, &s) == nil {
				out = append(out, s)
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Stats) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Stats returns the process's counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		ID: c.id, Mode: c.cfg.Mode,
		Local: TierStats{Hits: c.n.localHits.Load(), Misses: c.n.localMisses.Load()},
		KV:    TierStats{Hits: c.n.kvHits.Load(), Misses: c.n.kvMisses.Load(), Errors: c.n.kvErrors.Load()},
		Loads: c.n.loads.Load(), Fills: c.n.fills.Load(), FillsDropped: c.n.fillsDropped.Load(),
		LeaseWaits: c.n.leaseWaits.Load(), Refreshes: c.n.refreshes.Load(),
	}
	if c.l1 != nil {
		ls := c.l1.stats()
		s.Local.Entries, s.Local.Bytes, s.Local.Evictions = ls.Entries, ls.Bytes, ls.Evictions
	}
	s.Local.HitRatio = ratio(s.Local.Hits, s.Local.Misses)
	s.KV.HitRatio = ratio(s.KV.Hits, s.KV.Misses)
	return s
}
