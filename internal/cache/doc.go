// Package cache is the read-through cache every cached gateway route uses:
// an in-process near-cache (L1) in front of the shared NATS KV bucket
// "cache" (L2) in front of the database.
//
// # Reads
//
// Get looks in L1, then in KV, then calls the route's loader. Concurrent
// misses for one key in one process share one load (singleflight). Across
// processes, the first to miss takes a lease: it creates the key with a
// short-lived placeholder (KV Create, which fails when the key exists), so
// the others wait for its value instead of querying the database too. The
// value replaces the lease with a compare-and-set on the lease's revision:
// if anything wrote or deleted the key meanwhile (an invalidation), the
// fill is dropped rather than caching what may now be stale.
//
// Values are stored as compact JSON, readable with `nats kv get cache
// <key>`. The JSON literal null records "the source has no such record"
// (negative caching, with a shorter TTL). Each entry carries its own TTL
// (the server's per-message TTL) with jitter, so keys filled together do
// not all expire together; the bucket's TTL is the outer bound.
//
// # Invalidation
//
// One KV watch per process removes L1 entries whenever their key changes
// in the bucket, whoever changed it (a gateway, cachesvc, the nats CLI, an
// expiry). That takes milliseconds, which is not enough for
// read-your-writes: a client whose PUT returned may read through another
// gateway before that gateway's watch has delivered. So a writer also
// calls Invalidate, which deletes the keys in KV and then asks every
// process holding an L1 (the "cache-client" micro service, one instance
// per process, no queue group) to drop them, and waits for each to confirm.
//
// L1 only serves while its process is connected to NATS and its watch is
// running; a reconnect or a broken watch empties it.
//
// Layer: plumbing (docs/ARCHITECTURE.md), under everything else: it must not
// import a role, natsconf, platform/ or cli; only other internal/ packages.
package cache
