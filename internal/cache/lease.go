package cache

import (
	"context"
	"time"
)

// LocalLease is how long a process's near-cache may serve after its last
// proof that its NATS server still answers: a PING/PONG round trip
// (nats.Conn.Flush), made every LocalLease/4.
//
// Without it, a process whose NATS node hangs (docker pause) or is cut off
// (a partition) stays "connected" until its client's pings give up, which
// takes minutes; meanwhile invalidations cannot reach it, and its
// near-cache would serve values that writes elsewhere have replaced. With
// it, such a process stops serving from L1 within LocalLease, and a writer
// that misses its confirmation waits that long before it calls the write
// done (Invalidator.Broadcast).
const LocalLease = time.Second

// renewLease proves every LocalLease/4 that the process's NATS server
// answers, extending the lease to LocalLease after the proof was asked
// for. A lease that ran out empties L1 before it is granted again:
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

// proveLive makes a PING/PONG round trip to the process's NATS server: it
// fails when the server is hung or the network between them is cut, the
// two faults that leave a connection looking up for minutes.
//
// Not a JetStream request (the bucket stream's info, asked of its leader,
// would also prove the server hears the cluster): four of those a second
// from every gateway made nats-server's EnableJetStream race its API
// dispatch when the store guard restarts JetStream after a full disk
// (natsconf.GuardStore; the race detector caught it in TestDiskFull). A
// node cut off from its peers but not from its clients keeps the lease; a
// writer's invalidation then goes unconfirmed and the write waits out its
// retries (gateway/items.go), the KV watch stalls, and the entry's
// LocalTTL bounds what it serves.
func (c *Cache) proveLive(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, LocalLease/2)
	defer cancel()
	return c.nc.FlushWithContext(ctx) == nil
}

// leased reports whether the near-cache's lease is current.
func (c *Cache) leased() bool {
	return time.Now().UnixNano() < c.leaseUntil.Load()
}
