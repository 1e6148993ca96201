package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/scalelab/scalelab/balancer"
	"github.com/scalelab/scalelab/internal/cache"
	"github.com/scalelab/scalelab/internal/natsconn"
	"github.com/scalelab/scalelab/internal/task"
	"github.com/scalelab/scalelab/internal/wire"
	"github.com/scalelab/scalelab/worker"
)

// Waits of a stats request sent to every instance of a service: how long
// the first reply may take, and how long after the last one the others
// are waited for. There is no knowing how many instances there are, so
// the gathering ends when they stop answering.
const (
	firstReplyWait = 300 * time.Millisecond
	replyStall     = 50 * time.Millisecond
)

// collector takes samples and remembers the counters of the last one, to
// turn counters into rates. Only Run's goroutine uses it.
type collector struct {
	interval time.Duration
	prev     map[string]uint64
	prevAt   time.Time
	// js is the JetStream context of nc, made once per connection.
	nc *nats.Conn
	js jetstream.JetStream
}

func newCollector(interval time.Duration) *collector {
	return &collector{interval: interval, prev: map[string]uint64{}}
}

// rates turns counters into per-second rates against the previous sample.
// A counter seen for the first time, or smaller than before (its process
// restarted), has a rate of 0 rather than a made-up one.
type rates struct {
	prev map[string]uint64
	next map[string]uint64
	secs float64
}

func (r *rates) per(key string, v uint64) float64 {
	r.next[key] = v
	p, ok := r.prev[key]
	if !ok || v < p || r.secs <= 0 {
		return 0
	}
	return float64(v-p) / r.secs
}

// delta is v's growth since the previous sample (0 as per would give 0).
func (r *rates) delta(key string, v uint64) uint64 {
	r.next[key] = v
	p, ok := r.prev[key]
	if !ok || v < p {
		return 0
	}
	return v - p
}

// sample reads everything and returns the snapshot as JSON. nc is nil
// when there is no connection, and why says why.
func (c *collector) sample(ctx context.Context, st *balancer.Status, conn func() (*nats.Conn, string)) []byte {
	nc, why := conn()
	now := time.Now()
	r := &rates{prev: c.prev, next: map[string]uint64{}}
	if !c.prevAt.IsZero() {
		r.secs = now.Sub(c.prevAt).Seconds()
	}
	snap := Snapshot{Time: now.UTC(), IntervalMs: c.interval.Milliseconds()}
	if st != nil {
		snap.Balancer = balancerFigures(st, r)
	}
	if nc == nil {
		snap.NATS.Error = why
	} else {
		c.readNATS(ctx, nc, &snap, r)
	}
	c.prev, c.prevAt = r.next, now
	b, err := json.Marshal(snap)
	if err != nil { // cannot happen: plain structs
		b = []byte(`{}`)
	}
	return b
}

func balancerFigures(st *balancer.Status, r *rates) *BalancerFigures {
	f := &BalancerFigures{Policy: st.Policy, Ready: st.Ready, Gateways: []GatewayFigures{}}
	for _, b := range st.Backends {
		g := GatewayFigures{
			BackendStatus: b,
			Rate:          r.per("gw.req "+b.URL, uint64(b.Requests)),
			ErrorRate:     r.per("gw.err "+b.URL, uint64(b.Errors)),
		}
		f.Requests += b.Requests
		f.Errors += b.Errors
		f.InFlight += b.InFlight
		f.Rate += g.Rate
		f.Gateways = append(f.Gateways, g)
	}
	return f
}

// readNATS fills the sections read over NATS, each request in parallel,
// all within most of an interval so a slow server does not delay the
// next sample.
func (c *collector) readNATS(ctx context.Context, nc *nats.Conn, snap *Snapshot, r *rates) {
	ctx, cancel := context.WithTimeout(ctx, c.interval*8/10)
	defer cancel()
	if c.nc != nc {
		js, err := jetstream.New(nc)
		if err != nil {
			snap.NATS.Error = err.Error()
			return
		}
		c.nc, c.js = nc, js
	}
	snap.NATS = NATSFigures{Connected: true, URL: nc.ConnectedUrlRedacted(), Version: nc.ConnectedServerVersion()}

	var (
		wg       sync.WaitGroup
		cacheRaw []cache.Stats
		cacheErr error
		dbRaw    []micro.Stats
		dbErr    error
		wkRaw    []micro.Stats
		wkErr    error
		queue    QueueFigures
		kvInfo   *jetstream.StreamInfo
		kvErr    error
		rtt      time.Duration
		rttErr   error
	)
	wg.Go(func() { cacheRaw, cacheErr = cache.CollectStats(ctx, nc) })
	wg.Go(func() { dbRaw, dbErr = gatherStats(ctx, nc, wire.DBService) })
	wg.Go(func() { wkRaw, wkErr = gatherStats(ctx, nc, wire.ProcessService) })
	wg.Go(func() { queue = c.readQueue(ctx) })
	wg.Go(func() {
		s, err := c.js.Stream(ctx, "KV_"+cache.Bucket)
		if err != nil {
			kvErr = err
			return
		}
		kvInfo = s.CachedInfo()
	})
	wg.Go(func() { rtt, rttErr = nc.RTT() })
	wg.Wait()

	if rttErr == nil {
		snap.NATS.RTTMs = float64(rtt.Microseconds()) / 1000
	}
	snap.Cache = cacheFigures(cacheRaw, cacheErr, kvInfo, kvErr, r)
	snap.DB = dbFigures(dbRaw, dbErr, r)
	snap.Workers = workersFigures(wkRaw, wkErr, r)
	oldestAges(queue.Queues, snap.Workers.Workers, time.Now())
	snap.Queue = &queue
}

// oldestAges sets each queue's oldest task age from the workers' freshest
// sample of it (worker.QueueStats), aged by the time since: the dashboard
// may not read task messages itself. An age the sample says is 0 (no
// task) stays 0. Whether the queue is paused comes from the same sample.
func oldestAges(queues []QueueLine, workers []WorkerFigures, now time.Time) {
	for i := range queues {
		var best *worker.QueueStats
		for _, w := range workers {
			for j, qs := range w.Queues {
				if qs.Name == queues[i].Name && (best == nil || qs.At.After(best.At)) {
					best = &w.Queues[j]
				}
			}
		}
		if best == nil {
			continue
		}
		age := best.OldestAgeSeconds
		if age > 0 {
			age += max(now.Sub(best.At).Seconds(), 0)
		}
		queues[i].OldestAgeSeconds = &age
		queues[i].Paused = best.Paused
	}
}

// cacheFigures adds up the gateways' cache tiers. A lookup answered by
// the near-cache or by KV is a hit; one that read the database (a load)
// is a miss: the ratio says how much of the reading the cache spared the
// database.
func cacheFigures(stats []cache.Stats, err error, kv *jetstream.StreamInfo, kvErr error, r *rates) *CacheFigures {
	f := &CacheFigures{Gateways: stats}
	if f.Gateways == nil {
		f.Gateways = []cache.Stats{}
	}
	if err != nil {
		f.Error = err.Error()
	}
	var dHits, dMisses uint64
	for _, s := range stats {
		hits := s.Local.Hits + s.KV.Hits
		f.Hits += hits
		f.Misses += s.Loads
		dHits += r.delta("cache.hit "+s.ID, hits)
		dMisses += r.delta("cache.miss "+s.ID, s.Loads)
	}
	f.HitRatio = ratio(f.Hits, f.Misses)
	if dHits+dMisses > 0 {
		recent := ratio(dHits, dMisses)
		f.RecentHitRatio = &recent
	}
	if r.secs > 0 {
		f.LookupRate = float64(dHits+dMisses) / r.secs
	}
	switch {
	case kv != nil:
		f.Entries, f.Bytes = kv.State.Msgs, kv.State.Bytes
	case errors.Is(kvErr, jetstream.ErrStreamNotFound):
		// cachesvc has not made the bucket yet (or cache is off).
	case kvErr != nil && f.Error == "":
		f.Error = "cache bucket: " + kvErr.Error()
	}
	return f
}

func ratio(hits, misses uint64) float64 {
	if hits+misses == 0 {
		return 0
	}
	return float64(hits) / float64(hits+misses)
}

// dbFigures adds up dbsvc's endpoints over its instances.
func dbFigures(stats []micro.Stats, err error, r *rates) *DBFigures {
	f := &DBFigures{Instances: len(stats), Endpoints: []EndpointFigures{}}
	if err != nil {
		f.Error = err.Error()
	}
	bySubject := map[string]*EndpointFigures{}
	var busy time.Duration
	for _, s := range stats {
		for _, ep := range s.Endpoints {
			n := uint64(max(ep.NumRequests, 0))
			f.Queries += n
			busy += ep.ProcessingTime
			e := bySubject[ep.Subject]
			if e == nil {
				e = &EndpointFigures{Subject: ep.Subject}
				bySubject[ep.Subject] = e
			}
			e.Requests += n
			e.Rate += r.per("db "+s.ID+" "+ep.Subject, n)
		}
	}
	for _, e := range bySubject {
		f.Rate += e.Rate
		f.Endpoints = append(f.Endpoints, *e)
	}
	slices.SortFunc(f.Endpoints, func(a, b EndpointFigures) int { return strings.Compare(a.Subject, b.Subject) })
	if f.Queries > 0 {
		f.AvgMs = float64(busy.Microseconds()) / 1000 / float64(f.Queries)
	}
	return f
}

// workersFigures reads each worker's sync calls (micro's own count) and
// task counts (worker.TaskStats, the endpoint's data).
func workersFigures(stats []micro.Stats, err error, r *rates) *WorkersFigures {
	f := &WorkersFigures{Workers: []WorkerFigures{}}
	if err != nil {
		f.Error = err.Error()
	}
	for _, s := range stats {
		var w WorkerFigures
		for _, ep := range s.Endpoints {
			w.ProcessCalls += uint64(max(ep.NumRequests, 0))
			if len(ep.Data) > 0 {
				_ = json.Unmarshal(ep.Data, &w.TaskStats) // an older worker has none: zeros
			}
		}
		if w.ID == "" {
			w.ID = s.Metadata["worker"]
		}
		finished := w.Succeeded + w.Failed + w.Retried + w.Dead + w.Cancelled + w.Interrupted
		w.TaskRate = r.per("wk.tasks "+s.ID, finished)
		w.ProcessRate = r.per("wk.calls "+s.ID, w.ProcessCalls)
		f.TaskRate += w.TaskRate
		f.Workers = append(f.Workers, w)
	}
	slices.SortFunc(f.Workers, func(a, b WorkerFigures) int { return strings.Compare(a.ID, b.ID) })
	return f
}

// readQueue reads the queues' consumers (every workers-<queue> on TASKS)
// and the dead-letter stream.
func (c *collector) readQueue(ctx context.Context) QueueFigures {
	q := QueueFigures{Queues: []QueueLine{}}
	var errs []string
	if s, err := c.js.Stream(ctx, task.Stream); err != nil {
		errs = append(errs, fmt.Sprintf("stream %s: %v", task.Stream, err))
	} else {
		list := s.ListConsumers(ctx)
		for info := range list.Info() {
			name, ok := strings.CutPrefix(info.Name, task.QueueConsumerPrefix)
			if !ok {
				continue
			}
			q.Queues = append(q.Queues, QueueLine{Name: name, Pending: info.NumPending, InFlight: info.NumAckPending, Waiting: info.NumWaiting})
			q.Pending += info.NumPending
			q.InFlight += info.NumAckPending
			q.Waiting += info.NumWaiting
		}
		if err := list.Err(); err != nil {
			errs = append(errs, fmt.Sprintf("consumers of %s: %v", task.Stream, err))
		}
		slices.SortFunc(q.Queues, func(a, b QueueLine) int { return compareQueues(a.Name, b.Name) })
	}
	if s, err := c.js.Stream(ctx, task.DLQStream); err != nil {
		errs = append(errs, fmt.Sprintf("stream %s: %v", task.DLQStream, err))
	} else {
		q.Dead = s.CachedInfo().State.Msgs
	}
	q.Error = strings.Join(errs, "; ")
	return q
}

// compareQueues orders the built-in queues first, in priority order, then
// the others by name.
func compareQueues(a, b string) int {
	ia, ib := slices.Index(task.BuiltinQueues, a), slices.Index(task.BuiltinQueues, b)
	switch {
	case ia >= 0 && ib >= 0:
		return ia - ib
	case ia >= 0:
		return -1
	case ib >= 0:
		return 1
	}
	return strings.Compare(a, b)
}

// gatherStats asks every instance of the micro service name for its
// stats ($SRV.STATS.<name>) and returns the replies, sorted by instance.
// No instance is no error: the list is empty.
func gatherStats(ctx context.Context, nc *nats.Conn, name string) ([]micro.Stats, error) {
	subject, err := micro.ControlSubject(micro.StatsVerb, name, "")
	if err != nil {
		return nil, err
	}
	replies, err := natsconn.Gather(ctx, nc, subject, nil, natsconn.GatherOptions{First: firstReplyWait, Stall: replyStall})
	if err != nil && len(replies) == 0 {
		return nil, fmt.Errorf("stats of %s: %w", name, err)
	}
	var out []micro.Stats
	for _, msg := range replies {
		var s micro.Stats
		if json.Unmarshal(msg.Data, &s) == nil {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b micro.Stats) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
