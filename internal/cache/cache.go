package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"golang.org/x/sync/singleflight"
)

// ErrNotFound is what a Loader returns (wrapped) when the source has no
// record for the key. Get caches it briefly and reports it as
// Result.NotFound.
var ErrNotFound = errors.New("cache: not found in the source")

// ErrNoBucket is returned while the bucket does not exist yet (cachesvc has
// not provisioned it); reads go to the database meanwhile.
var ErrNoBucket = errors.New("cache: bucket not provisioned")

// Loader reads a key's value from the source of truth: compact JSON, or an
// error wrapping ErrNotFound. It may run after Get has returned (a refresh
// ahead of expiry, in the background), so it must not hold on to anything
// that lives only as long as the request, such as an echo.Context.
type Loader func(ctx context.Context) ([]byte, error)

// Source says which tier answered a Get.
type Source string

// The tiers, as reported in Result.Source and the X-Cache header.
const (
	SourceLocal Source = "local"
	SourceKV    Source = "kv"
	SourceDB    Source = "db"
)

// Result is the outcome of a Get.
type Result struct {
	// Value is the JSON value; nil when NotFound.
	Value []byte
	// NotFound says the source has no such record (possibly cached).
	NotFound bool
	// Source is the tier that answered.
	Source Source
}

// Cached reports whether a cache tier answered, not the database.
func (r Result) Cached() bool { return r.Source != SourceDB }

// notFoundValue is how a cached "not found" is stored.
var notFoundValue = []byte("null")

// leasePrefix starts a lease placeholder; it is not JSON, so no value can
// be mistaken for it.
const leasePrefix = "~lease "

// Cache is one process's view of the cache tiers. It is safe for
// concurrent use; Close stops its watch and its micro service.
type Cache struct {
	cfg  Config
	id   string
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	l1   *local // nil unless ModeKVLocal
	inv  *Invalidator
	svc  micro.Service
	stop context.CancelFunc
	done chan struct{}

	flights    singleflight.Group
	refreshing sync.Map // keys being refreshed ahead of expiry (see refreshAhead)
	background sync.WaitGroup
	ctx        context.Context // ends at Close
	watching   atomic.Bool
	reconnects atomic.Uint64
	noTTL      atomic.Bool
	leaseUntil atomic.Int64 // unix nanoseconds; see LocalLease
	n          counters

	mu sync.Mutex
	kv jetstream.KeyValue
	// rebindAt, when set, is when kv is bound again: it was bound while
	// the bucket still had direct gets on (see bucket).
	rebindAt time.Time
}

// New starts a cache client for the process id: its KV watch (kv+local) and
// its "cache-client" micro service, which answers invalidations and stats.
// With ModeOff it only counts loads.
func New(nc *nats.Conn, id string, cfg Config, log *slog.Logger) (*Cache, error) {
	if err := cfg.Validate("cache"); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("cache: jetstream: %w", err)
	}
	c := &Cache{
		cfg: cfg, id: id, nc: nc, js: js, log: log.With("component", "cache"),
		inv: NewInvalidator(nc, cfg.ConfirmTimeout, log), done: make(chan struct{}),
	}
	c.reconnects.Store(nc.Stats().Reconnects)
	if cfg.Mode == ModeKVLocal {
		c.l1 = newLocal(cfg.LocalEntries, cfg.LocalTTL)
	}
	if c.svc, err = c.serve(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.ctx, c.stop = ctx, cancel
	if c.l1 != nil {
		go c.watch(ctx)
		c.background.Add(1)
		go c.renewLease(ctx)
	} else {
		close(c.done)
	}
	return c, nil
}

// Close stops the watch, the refreshes in progress and the micro service.
// The caller owns nc.
func (c *Cache) Close() error {
	c.stop()
	<-c.done
	c.background.Wait()
	return c.svc.Stop()
}

// Mode returns the configured mode.
func (c *Cache) Mode() Mode { return c.cfg.Mode }

// Get returns key's value from the first tier that has it, loading it with
// load (and caching it) when none has. A cache that is down or slow is
// skipped, logged and counted: the database answers.
//
// A key is checked (ValidKey) before it reaches KV, not on a near-cache
// hit: L1 only holds keys that passed on their way in, and the check
// would be a regular expression on every request of the hot path.
func (c *Cache) Get(ctx context.Context, key string, load Loader) (Result, error) {
	if c.cfg.Mode == ModeOff {
		return c.load(ctx, load)
	}
	if c.l1 != nil && c.localReady() {
		if e, ok := c.l1.get(key); ok {
			c.n.localHits.Add(1)
			return Result{Value: e.value, NotFound: e.notFound, Source: SourceLocal}, nil
		}
		c.n.localMisses.Add(1)
	}
	v, err, _ := c.flights.Do(key, func() (any, error) {
		// Not the caller's ctx: one client hanging up must not fail the
		// others sharing this flight. Every step has its own timeout.
		return c.fetch(context.WithoutCancel(ctx), key, load)
	})
	if err != nil {
		return Result{}, err
	}
	return v.(Result), nil
}

// fetch reads key from KV or, failing that, from the source.
func (c *Cache) fetch(ctx context.Context, key string, load Loader) (Result, error) {
	if !ValidKey(key) {
		return Result{}, fmt.Errorf("cache: invalid key %q", key)
	}
	var epoch uint64
	if c.l1 != nil {
		epoch = c.l1.epoch(key)
	}
	kv, err := c.bucket(ctx)
	if err != nil {
		return c.skipKV(ctx, key, load, err)
	}
	e, err := c.kvGet(ctx, kv, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		c.n.kvMisses.Add(1)
		return c.leaseAndLoad(ctx, kv, key, load, epoch, true)
	case err != nil:
		return c.skipKV(ctx, key, load, err)
	}
	if res, ok := decode(e.Value()); ok {
		c.n.kvHits.Add(1)
		c.keep(key, res, e.Revision(), epoch)
		c.refreshAhead(key, res, e, load)
		return res, nil
	}
	c.n.kvMisses.Add(1)
	if bytes.HasPrefix(e.Value(), []byte(leasePrefix)) {
		return c.awaitFill(ctx, kv, key, load, epoch)
	}
	// Not ours (e.g. `nats kv put cache data.v1 x`): load, and replace it
	// if nothing else has meanwhile.
	c.log.Warn("cache holds an invalid value, reading the database", "key", key)
	return c.fill(ctx, key, load, e.Revision(), epoch)
}

// skipKV reads the source when KV cannot be used, without caching.
func (c *Cache) skipKV(ctx context.Context, key string, load Loader, err error) (Result, error) {
	c.n.kvErrors.Add(1)
	c.log.Warn("cache unavailable, reading the database", "key", key, "err", err)
	return c.load(ctx, load)
}

// leaseAndLoad takes the fill lease on an absent key, loads and fills. If
// another process holds the lease, it waits for that one's value instead.
func (c *Cache) leaseAndLoad(ctx context.Context, kv jetstream.KeyValue, key string, load Loader, epoch uint64, wait bool) (Result, error) {
	rev, err := c.create(ctx, kv, key, []byte(leasePrefix+c.id), c.cfg.LeaseTTL)
	switch {
	case errors.Is(err, jetstream.ErrKeyExists) && wait:
		return c.awaitFill(ctx, kv, key, load, epoch)
	case err != nil:
		return c.skipKV(ctx, key, load, err)
	}
	res, err := c.fill(ctx, key, load, rev, epoch)
	if err != nil {
		// Let the others load now rather than wait out the lease.
		dctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		_ = kv.Delete(dctx, key, jetstream.LastRevision(rev))
	}
	return res, err
}

// fill loads the value and stores it in place of revision rev of key (the
// lease, or a foreign value). The compare-and-set fails when anything
// wrote the key since, an invalidation above all; the loaded value is
// then returned but not cached, as it may already be stale.
func (c *Cache) fill(ctx context.Context, key string, load Loader, rev, epoch uint64) (Result, error) {
	res, err := c.load(ctx, load)
	if err != nil {
		return res, err
	}
	value, ttl := res.Value, c.jitteredTTL()
	if res.NotFound {
		value, ttl = notFoundValue, c.cfg.NegativeTTL
	}
	newRev, err := c.publishCAS(ctx, key, value, rev, ttl)
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		c.n.fills.Add(1)
		c.keep(key, res, newRev, epoch)
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
		c.n.fillsDropped.Add(1)
		c.log.Debug("cache fill dropped: the key changed while loading", "key", key)
	default:
		c.n.kvErrors.Add(1)
		c.log.Warn("cache write failed", "key", key, "err", err)
	}
	return res, nil
}

// refreshAhead reloads key in the background when its KV entry e is near
// the end of its life (older than Config.refreshAfter), and replaces it if
// nothing else has written it meanwhile. Without it, a hot key's expiry
// made every reader wait for the database at once: for /data, the
// 300,000-row aggregate, about 170 ms without an answer for every
// connection, which under load was the whole of its p99 (see
// bench/README.md). Readers go on getting e's value, still within its
// TTL, while the load runs; at most one refresh per key runs in a process.
// The fill's compare-and-set makes an invalidation that comes first win.
// A cached "not found" is not refreshed: it is short-lived by design.
func (c *Cache) refreshAhead(key string, res Result, e jetstream.KeyValueEntry, load Loader) {
	after := c.cfg.refreshAfter()
	if res.NotFound || after <= 0 || time.Since(e.Created()) < after {
		return
	}
	if _, busy := c.refreshing.LoadOrStore(key, struct{}{}); busy {
		return
	}
	c.background.Add(1)
	go func() {
		defer c.background.Done()
		defer c.refreshing.Delete(key)
		var epoch uint64
		if c.l1 != nil {
			epoch = c.l1.epoch(key)
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.LeaseTTL)
		defer cancel()
		c.n.refreshes.Add(1)
		if _, err := c.fill(ctx, key, load, e.Revision(), epoch); err != nil {
			c.log.Warn("cache refresh failed; the entry will expire", "key", key, "err", err)
		}
	}()
}

// awaitFill waits for the lease holder's value, up to the lease's TTL, then
// loads for itself.
func (c *Cache) awaitFill(ctx context.Context, kv jetstream.KeyValue, key string, load Loader, epoch uint64) (Result, error) {
	c.n.leaseWaits.Add(1)
	deadline := time.Now().Add(c.cfg.LeaseTTL)
	for pause := 2 * time.Millisecond; time.Now().Before(deadline); pause = min(2*pause, 50*time.Millisecond) {
		t := time.NewTimer(pause)
		<-t.C
		e, err := c.kvGet(ctx, kv, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// The holder gave up (its load failed) or the key was
			// invalidated: try once to fill it ourselves.
			return c.leaseAndLoad(ctx, kv, key, load, epoch, false)
		case err != nil:
			return c.skipKV(ctx, key, load, err)
		}
		if res, ok := decode(e.Value()); ok {
			c.n.kvHits.Add(1)
			c.keep(key, res, e.Revision(), epoch)
			return res, nil
		}
	}
	c.log.Warn("cache lease not filled in time, reading the database", "key", key)
	return c.load(ctx, load)
}

// load calls the source, counting it.
func (c *Cache) load(ctx context.Context, load Loader) (Result, error) {
	c.n.loads.Add(1)
	v, err := load(ctx)
	switch {
	case errors.Is(err, ErrNotFound):
		return Result{NotFound: true, Source: SourceDB}, nil
	case err != nil:
		return Result{}, err
	}
	return Result{Value: v, Source: SourceDB}, nil
}

// keep puts a value into L1 if it has one and may use it.
func (c *Cache) keep(key string, res Result, rev, epoch uint64) {
	if c.l1 == nil || !c.localReady() {
		return
	}
	c.l1.add(key, localEntry{value: res.Value, notFound: res.NotFound, revision: rev}, epoch)
}

// localReady reports whether L1 may serve: only while the KV watch runs,
// the connection is up and the lease is current (LocalLease). A reconnect
// empties it, since invalidations sent while disconnected never arrived.
func (c *Cache) localReady() bool {
	if !c.watching.Load() || !c.nc.IsConnected() || !c.leased() {
		return false
	}
	if r := c.nc.Stats().Reconnects; r != c.reconnects.Load() {
		c.reconnects.Store(r)
		c.l1.purge()
		c.log.Info("reconnected to NATS: near-cache emptied")
	}
	return true
}

// watch keeps one KV watch running for as long as ctx lives, removing from
// L1 every key that changes in the bucket.
func (c *Cache) watch(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		w, err := c.startWatch(ctx)
		if err != nil {
			c.log.Debug("cache watch not started, near-cache off until it is", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		c.l1.purge()
		c.watching.Store(true)
		c.log.Debug("cache watch started: near-cache on")
		for e := range w.Updates() {
			if e != nil {
				c.l1.invalidate(e.Key(), e.Revision())
			}
		}
		c.watching.Store(false)
		c.l1.purge()
		_ = w.Stop()
		if ctx.Err() == nil {
			c.log.Warn("cache watch stopped: near-cache off until it restarts")
		}
	}
}

func (c *Cache) startWatch(ctx context.Context) (jetstream.KeyWatcher, error) {
	kv, err := c.bucket(ctx)
	if err != nil {
		return nil, err
	}
	return kv.WatchAll(ctx, jetstream.UpdatesOnly())
}

// Invalidate deletes keys from KV, then has every process drop them from
// its L1 and waits until each confirms: when it returns nil, no process
// serves the old values. An error means some process may still serve them
// until its KV watch catches up (milliseconds) or its L1 entry expires.
func (c *Cache) Invalidate(ctx context.Context, keys ...string) error {
	if c.cfg.Mode == ModeOff {
		return nil
	}
	err := DeleteAndBroadcast(ctx, c.bucket, c.inv, c.cfg.Timeout, keys...)
	switch {
	case err == nil:
		c.n.invConfirmed.Add(1)
	case errors.Is(err, ErrUnconfirmed):
		c.n.invUnconfirmed.Add(1)
	default:
		c.n.invFailed.Add(1)
	}
	return err
}

// DeleteAndBroadcast deletes keys from the bucket bound by bucket, then
// broadcasts their invalidation through inv. It is Invalidate for a process
// that has no Cache of its own (cachesvc).
func DeleteAndBroadcast(ctx context.Context, bucket func(context.Context) (jetstream.KeyValue, error), inv *Invalidator, timeout time.Duration, keys ...string) error {
	kv, err := bucket(ctx)
	if err != nil {
		return err
	}
	for _, key := range keys {
		if !ValidKey(key) {
			return fmt.Errorf("cache: invalid key %q", key)
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		err := kv.Delete(dctx, key)
		cancel()
		if err != nil {
			return fmt.Errorf("cache delete %s: %w", key, err)
		}
	}
	return inv.Broadcast(ctx, Invalidation{Keys: keys})
}

// bucket binds the bucket on first use, so a gateway may start before
// cachesvc has provisioned it. cachesvc turns the bucket's direct gets off
// (natsconn.LeaderReads: a follower that has not applied a deletion yet
// would serve the value a write just replaced), and a handle decides at
// bind time whether it reads directly; so a handle bound while direct gets
// were still on is bound again a few seconds later, until they are off.
func (c *Cache) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != nil && (c.rebindAt.IsZero() || time.Now().Before(c.rebindAt)) {
		return c.kv, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	// Direct gets only go from on to off (cachesvc creates the bucket with
	// them on, then turns them off), so the handle bound next reads
	// directly unless they were already off here. If the stream cannot be
	// read (not created yet), assume on: the bucket may appear between
	// this call and the bind.
	direct := true
	if s, err := c.js.Stream(ctx, "KV_"+Bucket); err == nil {
		direct = s.CachedInfo().Config.AllowDirect
	}
	kv, err := c.js.KeyValue(ctx, Bucket)
	if err != nil {
		if c.kv != nil {
			return c.kv, nil // the handle before serves until the next try
		}
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, ErrNoBucket
		}
		return nil, fmt.Errorf("bind bucket %s: %w", Bucket, err)
	}
	c.kv, c.rebindAt = kv, time.Time{}
	if direct {
		c.rebindAt = time.Now().Add(5 * time.Second)
	}
	return kv, nil
}

// kvGet reads key through kv. A handle bound while direct gets were on
// asks the direct-get subject, which nobody answers once cachesvc has
// turned them off (a moment after it created the bucket): on that "no
// responders" the handle is bound again at once, not at its rebindAt, and
// asked once more. Without this, every read in the first seconds after
// cachesvc starts would skip the cache.
func (c *Cache) kvGet(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	e, err := c.get(ctx, kv, key)
	if !errors.Is(err, nats.ErrNoResponders) || !c.expireDirect(kv) {
		return e, err
	}
	kv, berr := c.bucket(ctx)
	if berr != nil {
		return e, err
	}
	return c.get(ctx, kv, key)
}

func (c *Cache) get(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	return kv.Get(ctx, key)
}

// expireDirect makes the next bucket call bind again if kv is the current
// handle and was bound with direct gets on; it reports whether it did.
func (c *Cache) expireDirect(kv jetstream.KeyValue) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv != kv || c.rebindAt.IsZero() {
		return false
	}
	c.rebindAt = time.Now().Add(-time.Nanosecond)
	return true
}

// create is kv.Create with a per-key TTL where the bucket allows one.
func (c *Cache) create(ctx context.Context, kv jetstream.KeyValue, key string, value []byte, ttl time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if !c.noTTL.Load() {
		rev, err := kv.Create(ctx, key, value, jetstream.KeyTTL(ttl))
		if !ttlDisabled(err) {
			return rev, err
		}
		c.noTTL.Store(true)
		c.log.Warn("cache bucket has no per-key TTL (created by an older cachesvc?): entries live for the bucket's TTL")
	}
	return kv.Create(ctx, key, value)
}

// publishCAS writes value as key's next revision if rev is still its last,
// with a per-key TTL where the bucket allows one.
func (c *Cache) publishCAS(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	subject := "$KV." + Bucket + "." + key
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(rev)}
	if !c.noTTL.Load() {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	ack, err := c.js.Publish(ctx, subject, value, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// ttlDisabled reports whether err says the stream does not allow
// per-message TTLs.
func ttlDisabled(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMsgTTLDisabled
}

// errCodeMsgTTLDisabled is nats-server's JSMessageTTLDisabledErr, which
// nats.go has no name for.
const errCodeMsgTTLDisabled jetstream.ErrorCode = 10166

// jitteredTTL is TTL minus a random part of up to Jitter of it.
func (c *Cache) jitteredTTL() time.Duration {
	cut := time.Duration(rand.Float64() * c.cfg.Jitter * float64(c.cfg.TTL))
	return max(c.cfg.TTL-cut, time.Second)
}

// decode reads a stored value: JSON, null for "not found". Anything else
// (a lease, a foreign value) is not a value.
func decode(b []byte) (Result, bool) {
	if bytes.Equal(b, notFoundValue) {
		return Result{NotFound: true, Source: SourceKV}, true
	}
	if len(b) == 0 || !json.Valid(b) {
		return Result{}, false
	}
	return Result{Value: b, Source: SourceKV}, true
}
