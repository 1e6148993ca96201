package cache

import (
	"context"
	"time"
)

// LocalLease is how long a process's near-cache may serve after its last
// proof that it still hears the cluster: a round trip to the leader of the
// cache bucket's stream, made every LocalLease/4.
//
// Without it, a process whose NATS node hangs (docker pause) or is cut off
// (a partition) stays "connected" until its client's pings give up, which
// takes minutes; meanwhile invalidations cannot reach it, and its
// near-cache would serve values that writes elsewhere have replaced. With
// it, such a process stops serving from L1 within LocalLease, and a writer
// that misses its confirmation waits that long before it calls the write
// done (Invalidator.Broadcast).
const LocalLease = time.Second

// renewLease proves every LocalLease/4 that the cache bucket's stream
// leader answers, extending the lease to LocalLease after the proof was
// asked for. A lease that ran out empties L1 before it is granted again:
// invalidations sent meanwhile may never have arrived.
func (c *Cache) renewLease(ctx context.Context) {
	defer c.background.Done()
	tick := time.NewTicker(LocalLease / 4)
	defer tick.Stop()
	for {
		asked := time.Now()
		if c.proveLive(ctx) {
			if c.leaseUntil.Load() < time.Now().UnixNano() {
				c.l1.purge()
				if c.leaseUntil.Load() != 0 {
					c.log.Info("near-cache lease regained: near-cache emptied")
				}
			}
			c.leaseUntil.Store(asked.Add(LocalLease).UnixNano())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// proveLive asks the stream leader of the cache bucket for its info: the
// one round trip that fails when this process's node is hung, cut off from
// the cluster, or the stream has no leader.
func (c *Cache) proveLive(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, LocalLease/2)
	defer cancel()
	_, err := c.js.Stream(ctx, "KV_"+Bucket)
	return err == nil
}

// leased reports whether the near-cache's lease is current.
func (c *Cache) leased() bool {
	return time.Now().UnixNano() < c.leaseUntil.Load()
}
